"""Pruning: old API log entries and per-profile outcomes go, in short batches;
the sync history, the de-duplication ledger and unfinished runs stay."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta

from store_support import stored_account, stored_connection

from zaptui import settings
from zaptui.clock import set_clock, utcnow
from zaptui.runtime import Runtime
from zaptui.scheduler import SyncScheduler
from zaptui.scheduler.pruning import prune, prune_if_due
from zaptui.services import Services
from zaptui.store.models import (
    AlertDelivery,
    ApiLogEntry,
    DataConnection,
    ProfileOutcome,
    Setting,
    SubmittedProfile,
    SyncRun,
    database_proxy,
)

DAY = timedelta(days=1)


def connection() -> DataConnection:
    return stored_connection(
        stored_account(),
        "Newsletter",
        source_type="list",
        source_id="L1",
        name="Newsletter → Welcome Letter",
    )


def run_with_outcomes(
    conn: DataConnection, age: timedelta, profiles: int, status: str = "succeeded"
) -> SyncRun:
    """A run of `age` ago with an outcome (and a ledger row) per profile."""
    when = utcnow() - age
    finished = status not in ("running",)
    run = SyncRun.create(
        connection=conn,
        reference=f"zaptui-{status}-{age.days}-{SyncRun.select().count()}",
        trigger="scheduled",
        status=status,
        phase="done" if finished else "submitting",
        started_at=when,
        finished_at=when if finished else None,
        imported=profiles,
    )
    ProfileOutcome.insert_many(
        [
            {
                "run": run.id,
                "profile_id": f"P{run.id}-{n}",
                "outcome": "imported" if finished else "staged",
                "record": {"customerid": f"P{run.id}-{n}"},
                "created_at": when,
            }
            for n in range(profiles)
        ]
    ).execute()
    if finished:
        SubmittedProfile.insert_many(
            [
                {
                    "connection": conn.id,
                    "profile_id": f"P{run.id}-{n}",
                    "run": run.id,
                    "submitted_at": when,
                }
                for n in range(profiles)
            ]
        ).execute()
    return run


def api_calls(age: timedelta, count: int) -> None:
    ApiLogEntry.insert_many(
        [
            {
                "service": "klaviyo",
                "at": utcnow() - age,
                "method": "GET",
                "url": "https://a.klaviyo.com/api/lists",
                "status": 200,
                "response_body": '{"data": []}' * 50,
            }
            for _ in range(count)
        ]
    ).execute()


def outcomes_of(run: SyncRun) -> int:
    return ProfileOutcome.select().where(ProfileOutcome.run == run.id).count()


def test_old_log_entries_and_outcomes_go_and_history_and_ledger_stay(db) -> None:
    conn = connection()
    old = run_with_outcomes(conn, 40 * DAY, 30)
    recent = run_with_outcomes(conn, 5 * DAY, 20)
    unfinished = run_with_outcomes(conn, 40 * DAY, 10, status="running")
    unconfirmed = run_with_outcomes(conn, 40 * DAY, 6, status="failed")
    SyncRun.update(phase="submitting").where(SyncRun.id == unconfirmed.id).execute()
    api_calls(40 * DAY, 25)
    api_calls(1 * DAY, 5)

    pruned = prune(30)

    assert (pruned.api_log_entries, pruned.profile_outcomes) == (25, 30)
    assert outcomes_of(old) == 0
    assert outcomes_of(recent) == 20
    assert outcomes_of(unfinished) == 10  # recovery resends its staged records
    assert outcomes_of(unconfirmed) == 6  # its submission is still to confirm
    assert SyncRun.select().count() == 4
    assert SyncRun.get_by_id(old.id).imported == 30
    assert SubmittedProfile.select().count() == 56
    assert ApiLogEntry.select().count() == 5


def test_alert_deliveries_made_or_given_up_go_and_pending_ones_stay(db) -> None:
    conn = connection()
    old, recent = utcnow() - 40 * DAY, utcnow() - 5 * DAY
    for status, created in [
        ("delivered", old),
        ("given_up", old),
        ("pending", old),
        ("delivered", recent),
    ]:
        AlertDelivery.create(
            connection=conn,
            payload={"event": "alert_failing"},
            status=status,
            created_at=created,
        )

    pruned = prune(30, pause=0)

    assert pruned.alert_deliveries == 2
    left = [(d.status, d.created_at < utcnow() - 30 * DAY) for d in AlertDelivery]
    assert sorted(left) == [("delivered", False), ("pending", True)]


def test_the_retention_setting_decides_what_is_old(db) -> None:
    conn = connection()
    run = run_with_outcomes(conn, 15 * DAY, 4)
    settings.put("retention_days", 20)
    assert prune().total == 0

    settings.put("retention_days", 10)
    assert prune().profile_outcomes == 4
    assert outcomes_of(run) == 0


def test_pruning_leaves_room_for_a_sync_between_batches(db) -> None:
    conn = connection()
    old = run_with_outcomes(conn, 40 * DAY, 3000)
    live = run_with_outcomes(conn, 0 * DAY, 1, status="running")
    done = threading.Event()
    seen_between_writes: list[int] = []

    def sync_writes() -> None:
        # Like a sync's heartbeat: small write transactions, one after another,
        # each noting how many old outcomes were left when it got the lock.
        while not done.is_set():
            with database_proxy.atomic():
                SyncRun.update(heartbeat_at=utcnow()).where(
                    SyncRun.id == live.id
                ).execute()
                seen_between_writes.append(outcomes_of(old))
            time.sleep(0.01)

    writer = threading.Thread(target=sync_writes)
    writer.start()
    pruned = prune(30, batch=500, pause=0.1)
    done.set()
    writer.join()

    assert pruned.profile_outcomes == 3000
    # The sync wrote while pruning was half done: no transaction took it all.
    partly_pruned = {left for left in seen_between_writes if 0 < left < 3000}
    assert len(partly_pruned) >= 2
    assert outcomes_of(live) == 1


def test_only_one_process_prunes_each_time(db) -> None:
    now = utcnow()
    set_clock(lambda: now)
    try:
        assert prune_if_due("host:1:a") is not None
        assert prune_if_due("host:2:b") is None

        set_clock(lambda: now + timedelta(hours=6, seconds=1))
        assert prune_if_due("host:2:b") is not None
    finally:
        set_clock(None)
    assert Setting.select().count() == 0  # the mark is not a setting


async def test_the_scheduler_prunes_on_its_schedule(db) -> None:
    conn = connection()
    old = run_with_outcomes(conn, 40 * DAY, 12)
    DataConnection.update(status="paused").execute()  # nothing to sync
    scheduler = SyncScheduler(
        Services(Runtime(zap_api_key="k", zap_api_password="p")), poll_seconds=0.1
    )

    scheduler.start()
    deadline = time.monotonic() + 10
    while await asyncio.to_thread(outcomes_of, old) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    scheduler.shutdown()
    await scheduler.drain()

    assert outcomes_of(old) == 0
    assert SyncRun.select().count() == 1
