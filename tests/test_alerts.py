"""Alerts: once per change between failing and healthy, to the console, the log
and a webhook that a real loopback HTTP server in the test receives."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from scheduler_world import Fleet

from zaptui import settings
from zaptui.clock import utcnow
from zaptui.scheduler import SchedulerEvent, SyncScheduler, alerts
from zaptui.store.models import ConnectionAlert, DataConnection, SyncRun

POLL = 0.1


class Receiver:
    """A loopback HTTP server that records the JSON bodies POSTed to it."""

    def __init__(self, status: int = 204) -> None:
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the http.server API)
                length = int(self.headers.get("Content-Length", 0))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                receiver.paths.append(self.path)
                self.send_response(status)
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


def test_an_unreachable_webhook_is_logged_and_never_raised(db, caplog) -> None:
    closed = Receiver()
    url = closed.url("/hooks/secret-token-123")
    closed.stop()
    alert = alerts.Alert(
        kind="alert_failing",
        connection_id=7,
        connection_name="VIP → Welcome Letter",
        account_name="Acme",
        source_name="VIP",
        campaign_name="Welcome Letter",
        error="Klaviyo refused the key",
        at=utcnow(),
    )

    assert alerts.send_webhook(alert, url) is False

    (record,) = [r for r in caplog.records if r.name == "zaptui.scheduler.alerts"]
    assert record.levelno == logging.WARNING
    assert "could not be reached" in record.getMessage()
    assert "secret-token-123" not in record.getMessage()


def test_a_webhook_that_answers_an_error_is_logged(db, caplog) -> None:
    failing = Receiver(status=500)
    try:
        alert = alerts.Alert(
            "alert_recovered",
            3,
            "List → Letter",
            "Acme",
            "List",
            "Letter",
            "",
            utcnow(),
        )
        assert alerts.send_webhook(alert, failing.url()) is False
    finally:
        failing.stop()

    assert failing.bodies[0]["event"] == "alert_recovered"
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("answered 500" in message for message in messages)
