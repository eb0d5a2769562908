"""Alerts: once per change between failing and healthy, to the console, the log
and a webhook that a real loopback HTTP server in the test receives, retried
from the outbox until it takes each alert once."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import peewee as pw
import pytest
from scheduler_world import Fleet
from store_support import stored_account, stored_connection

from zaptui import settings
from zaptui.clock import utcnow
from zaptui.scheduler import SchedulerEvent, SyncScheduler, alerts
from zaptui.scheduler import scheduler as scheduler_module
from zaptui.scheduler.alerts import Deliveries
from zaptui.store.models import (
    AlertDelivery,
    ConnectionAlert,
    DataConnection,
    SyncRun,
    database_proxy,
)

POLL = 0.1


class Receiver:
    """A loopback HTTP server that records the JSON bodies POSTed to it.

    It answers the first `failures` requests with a 503, then every one with
    `status`, each after `delay` seconds. `bodies` holds every request's body,
    `taken` those answered with a success.
    """

    def __init__(self, status: int = 204, failures: int = 0, delay: float = 0) -> None:
        self.bodies: list[dict] = []
        self.taken: list[dict] = []
        self.paths: list[str] = []
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the http.server API)
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                time.sleep(delay)
                with lock:
                    answer = 503 if len(receiver.bodies) < failures else status
                    receiver.bodies.append(body)
                    receiver.paths.append(self.path)
                    if 200 <= answer < 300:
                        receiver.taken.append(body)
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hooks/zaptui") -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fleet(db) -> Iterator[Fleet]:
    served = Fleet.serve()
    yield served
    served.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def revoke(fleet: Fleet, connection_id: int, revoked: bool = True) -> None:
    """Revoke (or restore) the Klaviyo key behind a connection: its syncs fail."""
    account, _ = fleet.sources[connection_id]
    account.revoked = revoked


async def until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.05)


def runs(connection_id: int) -> int:
    return (
        SyncRun.select()
        .where(
            (SyncRun.connection == connection_id) & SyncRun.finished_at.is_null(False)
        )
        .count()
    )


def sync_again(connection_id: int) -> None:
    """Make the connection due again now."""
    DataConnection.update(last_sync_at=None).where(
        DataConnection.id == connection_id
    ).execute()


async def test_failing_and_recovering_each_alert_once_everywhere(
    fleet, receiver, caplog
) -> None:
    settings.put("alert_webhook_url", receiver.url())
    (connection_id,) = fleet.pair(1, 1, members=3)
    revoke(fleet, connection_id)
    events: list[SchedulerEvent] = []
    scheduler = SyncScheduler(fleet.services, on_event=events.append, poll_seconds=POLL)
    caplog.set_level(logging.INFO, logger="zaptui.scheduler")

    scheduler.start()
    await until(lambda: runs(connection_id) == 1)
    sync_again(connection_id)  # a second failure in a row: no second alert
    await until(lambda: runs(connection_id) == 2)
    revoke(fleet, connection_id, False)
    sync_again(connection_id)
    await until(lambda: runs(connection_id) == 3)
    sync_again(connection_id)  # healthy again: no further alert
    await until(lambda: runs(connection_id) == 4)
    await asyncio.sleep(POLL * 5)
    scheduler.shutdown()
    await scheduler.drain()

    kinds = [event.kind for event in events if event.kind.startswith("alert_")]
    assert kinds == ["alert_failing", "alert_recovered"]
    failing = next(event for event in events if event.kind == "alert_failing")
    assert failing.connection_id == connection_id
    assert "Klaviyo refused the private key" in failing.message
    assert failing.run_id is not None

    assert [body["event"] for body in receiver.bodies] == [
        "alert_failing",
        "alert_recovered",
    ]
    first = receiver.bodies[0]
    assert first["state"] == "failing"
    assert first["data_connection"]["id"] == connection_id
    assert first["data_connection"]["campaign"] == "Welcome Letter"
    assert first["data_connection"]["account"].startswith("Shop ")
    assert first["error"] and first["error"] in failing.message
    assert receiver.bodies[1]["state"] == "recovered"

    alert_lines = [
        record
        for record in caplog.records
        if record.levelno == logging.ERROR and "is failing" in record.getMessage()
    ]
    assert len(alert_lines) == 1


async def test_a_failing_manual_sync_is_alerted_by_the_scheduler(
    fleet, receiver
) -> None:
    settings.put("alert_webhook_url", receiver.url())
    (connection_id,) = fleet.pair(1, 1, members=2)
    DataConnection.update(last_sync_at=utcnow()).execute()  # not due for a day
    revoke(fleet, connection_id)
    run = await asyncio.to_thread(fleet.services.sync_now, connection_id)
    assert run.status == "failed"
    events: list[SchedulerEvent] = []
    scheduler = SyncScheduler(fleet.services, on_event=events.append, poll_seconds=POLL)

    scheduler.start()
    await until(lambda: receiver.bodies)
    scheduler.shutdown()
    await scheduler.drain()

    assert [event.kind for event in events] == ["alert_failing"]
    assert [body["event"] for body in receiver.bodies] == ["alert_failing"]


def test_several_watchers_raise_each_change_once(db) -> None:
    fleet = Fleet.serve()
    try:
        ids = fleet.pair(1, 3, members=1)
    finally:
        fleet.stop()
    DataConnection.update(failing=True).execute()
    barrier = threading.Barrier(4)
    seen: list[alerts.Alert] = []
    lock = threading.Lock()

    def watch() -> None:
        barrier.wait()
        found = alerts.observe()
        with lock:
            seen.extend(found)

    threads = [threading.Thread(target=watch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(alert.connection_id for alert in seen) == sorted(ids)
    assert {alert.kind for alert in seen} == {"alert_failing"}
    assert alerts.observe() == []
    assert ConnectionAlert.select().where(ConnectionAlert.failing).count() == 3


def failing_connections(count: int = 1) -> list[int]:
    """Data connections whose last sync failed, not yet alerted."""
    account = stored_account()
    return [
        stored_connection(
            account,
            f"VIP {n}",
            source_id=f"S{n}",
            name=f"VIP {n} → Welcome Letter",
            campaign_name="Welcome Letter",
            failing=True,
            last_error="Klaviyo refused the private key",
        ).id
        for n in range(count)
    ]


def delivery() -> AlertDelivery:
    """The one delivery in the outbox."""
    (row,) = AlertDelivery.select()
    return row


def test_a_webhook_that_fails_twice_takes_the_alert_once_after_retries(db) -> None:
    hook = Receiver(failures=2)
    settings.put("alert_webhook_url", hook.url())
    (connection_id,) = failing_connections()
    try:
        (alert,) = alerts.observe()
        start = alert.at

        first = alerts.deliver_pending(now=start)
        too_soon = alerts.deliver_pending(now=start + timedelta(seconds=59))
        second = alerts.deliver_pending(now=start + timedelta(minutes=1))
        third = alerts.deliver_pending(now=start + timedelta(minutes=3))
        later = alerts.deliver_pending(now=start + timedelta(hours=2))
    finally:
        hook.stop()

    assert (first, too_soon, second, third, later) == (
        Deliveries(retrying=1),
        Deliveries(),
        Deliveries(retrying=1),
        Deliveries(delivered=1),
        Deliveries(),
    )
    assert len(hook.bodies) == 3
    assert [body["data_connection"]["id"] for body in hook.taken] == [connection_id]
    assert hook.taken[0] == alert.payload()
    row = delivery()
    assert (row.status, row.attempts, row.last_error) == ("delivered", 3, "")
    assert row.delivered_at == start + timedelta(minutes=3)


def test_retries_back_off_to_an_hour_and_give_up_after_a_day(db, caplog) -> None:
    hook = Receiver(status=500)
    settings.put("alert_webhook_url", hook.url())
    (connection_id,) = failing_connections()
    (alert,) = alerts.observe()
    now, delays = alert.at, []
    try:
        while True:
            alerts.deliver_pending(now=now)
            row = delivery()
            if row.status != "pending":
                break
            delays.append((row.next_attempt_at - now) / timedelta(minutes=1))
            now = row.next_attempt_at
        sent = len(hook.bodies)
        afterwards = alerts.deliver_pending(now=now + timedelta(days=2))
    finally:
        hook.stop()

    assert delays[:7] == [1, 2, 4, 8, 16, 32, 60]
    assert set(delays[6:]) == {60}
    # Tried at 0, 1, 3, 7, 15, 31, 63 and 123 minutes, then hourly to 23:03.
    assert (row.status, row.attempts, sent) == ("given_up", 29, 29)
    assert row.given_up_at == now <= alert.at + alerts.GIVE_UP_AFTER
    assert row.last_error == "answered 500"
    assert afterwards == Deliveries()
    assert len(hook.bodies) == sent
    (given_up,) = [r for r in caplog.records if "gave up" in r.getMessage()]
    assert given_up.levelno == logging.ERROR
    assert f"data connection {connection_id} (VIP 0 → Welcome Letter)" in (
        given_up.getMessage()
    )
    assert given_up.zaptui["event"] == "alert_given_up"


KILLED_AFTER_RAISING = """
import os, signal, sys
from zaptui.scheduler import alerts
from zaptui.store.db import open_database
open_database(sys.argv[1])
assert len(alerts.observe()) == 1
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_an_alert_raised_by_a_process_killed_before_sending_is_delivered(
    db, db_url
) -> None:
    hook = Receiver()
    settings.put("alert_webhook_url", hook.url())
    (connection_id,) = failing_connections()
    try:
        killed = subprocess.run(
            [sys.executable, "-c", KILLED_AFTER_RAISING, db_url],
            env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)},
            capture_output=True,
            timeout=60,
        )
        assert killed.returncode == -9, killed.stderr.decode()
        assert hook.bodies == []
        assert alerts.observe() == []  # raised once, by the killed process

        delivered = alerts.deliver_pending()
    finally:
        hook.stop()

    assert delivered == Deliveries(delivered=1)
    assert [body["data_connection"]["id"] for body in hook.taken] == [connection_id]
    assert [body["event"] for body in hook.taken] == ["alert_failing"]


def test_an_alert_is_not_raised_when_its_delivery_cannot_be_queued(
    db, monkeypatch
) -> None:
    settings.put("alert_webhook_url", "http://127.0.0.1:9/hooks/zaptui")
    failing_connections()

    def refuse(*args: object, **kwargs: object) -> None:
        raise pw.OperationalError("disk full")

    with monkeypatch.context() as patched:
        patched.setattr(AlertDelivery, "insert", refuse)
        with pytest.raises(pw.OperationalError):
            alerts.observe()

    assert ConnectionAlert.select().count() == 0
    assert AlertDelivery.select().count() == 0
    assert [alert.kind for alert in alerts.observe()] == ["alert_failing"]
    assert delivery().status == "pending"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request) -> pw.Database:
    """The SQLite database, or a PostgreSQL one where claims take row locks."""
    return request.getfixturevalue("db" if request.param == "sqlite" else "pg_db")


def test_two_deliverers_racing_send_each_alert_once(database, monkeypatch) -> None:
    hook = Receiver(delay=0.02)
    settings.put("alert_webhook_url", hook.url())
    ids = failing_connections(8)
    raised = alerts.observe()
    now = max(alert.at for alert in raised)
    # Each deliverer's first claim waits until both have read the due alerts,
    # so both go for the same ones.
    both_read = threading.Barrier(2)
    waited = threading.local()
    claim = alerts._claim

    def claim_once_both_read(row: AlertDelivery, at: object) -> bool:
        if not getattr(waited, "done", False):
            waited.done = True
            both_read.wait(timeout=10)
        return claim(row, at)

    monkeypatch.setattr(alerts, "_claim", claim_once_both_read)
    passes: list[Deliveries] = []

    def deliver() -> None:
        try:
            passes.append(alerts.deliver_pending(now=now))
        finally:
            database_proxy.close()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        hook.stop()

    assert len(raised) == 8
    assert sorted(body["data_connection"]["id"] for body in hook.bodies) == ids
    assert sum(done.delivered for done in passes) == 8
    assert all(done.delivered for done in passes)  # both took a share
    assert {(row.status, row.attempts) for row in AlertDelivery.select()} == {
        ("delivered", 1)
    }


def test_the_webhook_url_token_is_never_logged_or_stored(db, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    # peewee's statement echo (debug mode only) shows every value written.
    caplog.set_level(logging.INFO, logger="peewee")
    hook = Receiver(failures=1)
    url = hook.url("/hooks/secret-token-123?key=query-token")
    url = url.replace("http://", "http://hook-user:hook-pass@")
    settings.put("alert_webhook_url", url)
    failing_connections()
    (alert,) = alerts.observe()
    answered = alerts.deliver_pending(now=alert.at)
    answer = delivery().last_error
    hook.stop()
    unreachable = alerts.deliver_pending(now=alert.at + timedelta(minutes=1))

    assert answered == unreachable == Deliveries(retrying=1)
    assert answer == "answered 503"
    assert delivery().last_error == "could not be reached: ConnectError"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    host = url.split("@")[1].split("/")[0]
    assert [message.split(" ")[3] for message in warnings] == [host, host]
    assert "answered 503" in warnings[0]
    assert "could not be reached" in warnings[1]
    assert any(r.name == "httpx" for r in caplog.records)  # it logs each request
    lines = [record.getMessage() for record in caplog.records]
    lines += [row.last_error for row in AlertDelivery.select()]
    for secret in ("secret-token-123", "query-token", "hook-pass", "hook-user"):
        assert not [line for line in lines if secret in line]


def test_alerts_of_one_connection_reach_the_webhook_in_order(db) -> None:
    hook = Receiver(failures=1)
    settings.put("alert_webhook_url", hook.url())
    (connection_id,) = failing_connections()
    (failing,) = alerts.observe()
    alerts.deliver_pending(now=failing.at)
    DataConnection.update(failing=False, last_error="").execute()
    (recovered,) = alerts.observe()
    try:
        waiting = alerts.deliver_pending(now=recovered.at)
        both = alerts.deliver_pending(now=failing.at + timedelta(minutes=1))
    finally:
        hook.stop()

    assert waiting == Deliveries()  # behind the failing alert's retry
    assert both == Deliveries(delivered=2)
    assert [body["event"] for body in hook.taken] == [
        "alert_failing",
        "alert_recovered",
    ]


def test_a_removed_connections_alert_is_still_delivered_by_name(db) -> None:
    hook = Receiver()
    settings.put("alert_webhook_url", hook.url())
    (connection_id,) = failing_connections()
    alerts.observe()
    DataConnection.delete_by_id(connection_id)
    try:
        delivered = alerts.deliver_pending()
    finally:
        hook.stop()

    assert delivered == Deliveries(delivered=1)
    assert delivery().connection_id is None
    assert hook.taken[0]["data_connection"]["id"] == connection_id
    assert hook.taken[0]["data_connection"]["name"] == "VIP 0 → Welcome Letter"


def test_without_a_webhook_nothing_is_queued_and_pending_alerts_are_given_up(
    db, caplog
) -> None:
    (first, second) = failing_connections(2)
    assert len(alerts.observe([first])) == 1
    assert AlertDelivery.select().count() == 0
    settings.put("alert_webhook_url", "http://127.0.0.1:9/hooks/zaptui")
    assert len(alerts.observe([second])) == 1
    settings.put("alert_webhook_url", "")

    assert alerts.deliver_pending() == Deliveries(given_up=1)

    row = delivery()
    assert (row.status, row.attempts, row.last_error) == (
        "given_up",
        0,
        "no alert webhook is set",
    )
    assert any("gave up delivering 1 alert" in r.getMessage() for r in caplog.records)


def test_an_unreachable_webhook_is_logged_and_never_raised(db, caplog) -> None:
    closed = Receiver()
    settings.put("alert_webhook_url", closed.url())
    closed.stop()
    failing_connections()
    alerts.observe()

    assert alerts.deliver_pending() == Deliveries(retrying=1)

    (record,) = [r for r in caplog.records if r.name == "zaptui.scheduler.alerts"]
    assert record.levelno == logging.WARNING
    assert "could not be reached" in record.getMessage()
    assert "trying again at" in record.getMessage()


def test_a_delivery_pass_that_fails_is_logged_and_never_raised(
    db, caplog, monkeypatch
) -> None:
    settings.put("alert_webhook_url", "http://127.0.0.1:9/hooks/zaptui")

    def broken(*args: object) -> None:
        raise pw.OperationalError("database is locked")

    monkeypatch.setattr(alerts, "_claim_next", broken)

    assert alerts.deliver_pending() == Deliveries()
    assert any(
        r.levelno == logging.ERROR and "database is locked" in r.getMessage()
        for r in caplog.records
    )


async def test_the_scheduler_retries_an_alert_until_the_webhook_takes_it(
    fleet, monkeypatch
) -> None:
    monkeypatch.setattr(scheduler_module, "ALERT_RETRY_SECONDS", POLL)
    monkeypatch.setattr(alerts, "FIRST_RETRY", timedelta(seconds=POLL))
    hook = Receiver(failures=2)
    settings.put("alert_webhook_url", hook.url())
    (connection_id,) = fleet.pair(1, 1, members=1)
    revoke(fleet, connection_id)
    scheduler = SyncScheduler(fleet.services, poll_seconds=POLL)
    try:
        scheduler.start()
        await until(lambda: hook.taken)
        await asyncio.sleep(POLL * 5)
        scheduler.shutdown()
        await scheduler.drain()
    finally:
        hook.stop()

    assert len(hook.bodies) == 3
    assert [body["event"] for body in hook.taken] == ["alert_failing"]
    assert delivery().status == "delivered"


def failed_and_alerted(fleet: Fleet) -> tuple[int, alerts.Alert]:
    """A connection whose sync failed (not due again for a day), its alert
    raised and queued for the webhook but not yet sent."""
    (connection_id,) = fleet.pair(1, 1, members=1)
    DataConnection.update(
        failing=True,
        last_error="Klaviyo refused the private key",
        last_sync_at=utcnow(),
    ).execute()
    (alert,) = alerts.observe()
    return connection_id, alert


async def test_a_run_once_delivers_what_an_earlier_process_could_not(
    fleet, receiver
) -> None:
    settings.put("alert_webhook_url", receiver.url())
    _, alert = failed_and_alerted(fleet)  # then the process ended

    failed = await SyncScheduler(fleet.services, mode="headless").run_once()

    assert failed == 0
    assert receiver.taken == [alert.payload()]
    assert delivery().status == "delivered"


async def test_an_alert_the_webhook_never_took_is_told_the_console(
    fleet, caplog
) -> None:
    hook = Receiver(status=500)
    settings.put("alert_webhook_url", hook.url())
    connection_id, _ = failed_and_alerted(fleet)
    # Retried for nearly a day: the next failure is the last.
    AlertDelivery.update(
        created_at=utcnow() - alerts.GIVE_UP_AFTER + timedelta(seconds=30),
        attempts=28,
    ).execute()
    events: list[SchedulerEvent] = []
    try:
        await SyncScheduler(
            fleet.services, mode="headless", on_event=events.append
        ).run_once()
    finally:
        hook.stop()

    assert delivery().status == "given_up"
    assert [(e.kind, e.connection_id) for e in events] == [
        ("alert_undelivered", connection_id)
    ]
    name = DataConnection.get_by_id(connection_id).name
    assert events[0].message == (
        f"The alert webhook never took the alert_failing alert of data connection "
        f"{connection_id} ({name}): it was given up after a day of retries."
    )
    gave_up = [r for r in caplog.records if "gave up" in r.getMessage()]
    assert len(gave_up) == 1  # one log line, not one more for the event
