"""The SyncScheduler on an event loop: APScheduler polling with short intervals,
the clock moved by the test, syncs against the simulators over loopback."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from scheduler_world import Fleet

from zaptui import settings
from zaptui.clock import set_clock, utcnow
from zaptui.scheduler import SchedulerEvent, SyncScheduler, scheduler_state
from zaptui.store.models import DataConnection, SyncRun
from zaptui.sync.engine import SyncBusy

POLL = 0.1


class Clock:
    """A clock the test moves by hand; it stands still otherwise."""

    def __init__(self) -> None:
        self.now = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Events:
    """Collects scheduler events, which arrive from sync threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[SchedulerEvent] = []

    def __call__(self, event: SchedulerEvent) -> None:
        with self._lock:
            self.items.append(event)

    def kinds(self) -> list[str]:
        with self._lock:
            return [event.kind for event in self.items]


@pytest.fixture
def clock() -> Iterator[Clock]:
    fixed = Clock()
    set_clock(fixed)
    yield fixed
    set_clock(None)


@pytest.fixture
def fleet(db) -> Iterator[Fleet]:
    served = Fleet.serve()
    yield served
    served.stop()


@pytest.fixture
def events() -> Events:
    return Events()


def make(fleet: Fleet, events: Events, **options) -> SyncScheduler:
    return SyncScheduler(
        fleet.services,
        on_event=events,
        poll_seconds=options.pop("poll_seconds", POLL),
        **options,
    )


def runs(connection_id: int | None = None) -> list[SyncRun]:
    query = SyncRun.select().order_by(SyncRun.id)
    if connection_id is not None:
        query = query.where(SyncRun.connection == connection_id)
    return list(query)


def finished(connection_id: int) -> int:
    return sum(1 for run in runs(connection_id) if run.finished_at is not None)


async def until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the scheduler")
        await asyncio.sleep(0.05)


async def polls(count: int = 5) -> None:
    """Let the scheduler poll a few times."""
    await asyncio.sleep(POLL * count)


async def stop(scheduler: SyncScheduler) -> None:
    scheduler.shutdown()
    await scheduler.drain()


async def test_a_new_connection_is_synced_at_once(fleet, events) -> None:
    (connection_id,) = fleet.pair(1, 1, members=5)
    scheduler = make(fleet, events)

    scheduler.start()
    await until(lambda: finished(connection_id) == 1)
    await stop(scheduler)

    (run,) = runs(connection_id)
    assert (run.trigger, run.status, run.imported) == ("scheduled", "succeeded", 5)
    assert run.owner == fleet.runtime.owner
    assert events.kinds() == ["sync_started", "sync_finished"]
    assert events.items[1].run_id == run.id
    assert "imported 5" in events.items[1].message
    assert sorted(fleet.mailed()) == sorted(fleet.members([connection_id]))


@pytest.mark.parametrize("hours", [1, 6, 12, 24])
async def test_each_frequency_syncs_again_one_period_later(
    clock, fleet, events, hours
) -> None:
    settings.put("sync_frequency_hours", hours)
    (connection_id,) = fleet.pair(1, 1, members=2)
    scheduler = make(fleet, events)
    scheduler.start()
    await until(lambda: finished(connection_id) == 1)

    clock.advance(hours=hours, seconds=-1)
    await polls()
    assert finished(connection_id) == 1
    planned = DataConnection.get_by_id(connection_id).next_sync_at
    assert planned == runs(connection_id)[0].finished_at + timedelta(hours=hours)

    clock.advance(seconds=2)
    await until(lambda: finished(connection_id) == 2)
    await stop(scheduler)


async def test_missed_runs_coalesce_into_one_sync_after_a_restart(
    clock, fleet, events
) -> None:
    settings.put("sync_frequency_hours", 1)
    (connection_id,) = fleet.pair(1, 1, members=2)
    first = make(fleet, events)
    first.start()
    await until(lambda: finished(connection_id) == 1)
    await stop(first)

    clock.advance(hours=10)  # ten periods while no scheduler ran
    second = make(fleet, events)
    second.start()
    await until(lambda: finished(connection_id) == 2)
    await polls(10)
    await stop(second)

    assert finished(connection_id) == 2


async def test_restart_does_not_sync_before_the_connection_is_due(
    clock, fleet, events
) -> None:
    settings.put("sync_frequency_hours", 6)
    (connection_id,) = fleet.pair(1, 1, members=2)
    first = make(fleet, events)
    first.start()
    await until(lambda: finished(connection_id) == 1)
    await stop(first)

    clock.advance(hours=5, minutes=59)
    second = make(fleet, events)
    second.start()
    await polls(10)
    assert finished(connection_id) == 1

    clock.advance(minutes=1)
    await until(lambda: finished(connection_id) == 2)
    await stop(second)


async def test_pause_stops_scheduled_syncs(clock, fleet, events) -> None:
    settings.put("sync_frequency_hours", 1)
    (connection_id,) = fleet.pair(1, 1, members=2)
    services = fleet.services
    scheduler = make(fleet, events)
    scheduler.start()
    await until(lambda: finished(connection_id) == 1)

    await asyncio.to_thread(services.pause, connection_id)
    scheduler.refresh()
    clock.advance(hours=5)
    await polls(10)
    assert finished(connection_id) == 1
    assert DataConnection.get_by_id(connection_id).next_sync_at is None
    await stop(scheduler)


async def test_resume_syncs_at_once(clock, fleet, events) -> None:
    settings.put("sync_frequency_hours", 24)
    (connection_id,) = fleet.pair(1, 1, members=2)
    services = fleet.services
    scheduler = make(fleet, events, poll_seconds=60)
    scheduler.start()
    await until(lambda: finished(connection_id) == 1)
    await asyncio.to_thread(services.pause, connection_id)
    clock.advance(minutes=10)

    await asyncio.to_thread(services.resume, connection_id)
    scheduler.refresh()

    await until(lambda: finished(connection_id) == 2, timeout=5)
    await stop(scheduler)


async def test_frequency_change_takes_effect_at_once(clock, fleet, events) -> None:
    settings.put("sync_frequency_hours", 24)
    (connection_id,) = fleet.pair(1, 1, members=2)
    services = fleet.services
    # A long poll: only refresh() can make the change show within the test.
    scheduler = make(fleet, events, poll_seconds=60)
    scheduler.start()
    await until(lambda: finished(connection_id) == 1)
    clock.advance(hours=2)
    scheduler.refresh()
    await polls(5)
    assert finished(connection_id) == 1

    await asyncio.to_thread(services.set_setting, "sync_frequency_hours", 1)
    scheduler.refresh()

    await until(lambda: finished(connection_id) == 2, timeout=5)
    await stop(scheduler)


async def test_removed_connection_is_no_longer_synced(clock, fleet, events) -> None:
    settings.put("sync_frequency_hours", 1)
    kept, removed = fleet.pair(1, 2, members=2)
    services = fleet.services
    scheduler = make(fleet, events)
    scheduler.start()
    await until(
        lambda: finished(kept) == 1 and finished(removed) == 1 and not scheduler.running
    )

    await asyncio.to_thread(services.remove, removed)
    scheduler.refresh()
    clock.advance(hours=2)
    await until(lambda: finished(kept) == 2)
    await polls(5)
    await stop(scheduler)

    assert len(runs()) == 3
    assert "sync_failed" not in events.kinds()


async def test_shutdown_stops_a_sync_in_flight_at_a_safe_point(fleet, events) -> None:
    (connection_id,) = fleet.pair(1, 1, members=250)  # three pages
    fleet.sim.faults.add("klaviyo", "list_profiles", "slow", None, delay=0.4)
    scheduler = make(fleet, events)
    scheduler.start()
    await until(lambda: any(run.fetched for run in runs(connection_id)))

    scheduler.shutdown()
    await scheduler.drain()

    (run,) = runs(connection_id)
    assert run.status == "interrupted"
    assert fleet.mailed() == []
    assert scheduler.running == []

    fleet.sim.faults.clear()
    again = make(fleet, events)
    again.start()
    await until(lambda: finished(connection_id) == 2)
    await stop(again)
    assert sorted(fleet.mailed()) == sorted(fleet.members([connection_id]))


async def test_a_running_sync_never_blocks_the_event_loop(fleet, events) -> None:
    (connection_id,) = fleet.pair(1, 1, members=250)
    fleet.sim.faults.add("klaviyo", "list_profiles", "slow", None, delay=0.3)
    scheduler = make(fleet, events)
    scheduler.start()
    gaps = []
    last = time.monotonic()
    while finished(connection_id) == 0:
        await asyncio.sleep(0.01)
        now = time.monotonic()
        gaps.append(now - last)
        last = now
    await stop(scheduler)

    assert len(gaps) > 50  # the sync took a while, and the loop kept turning
    assert max(gaps) < 0.25


async def test_pausing_stops_a_sync_in_flight(fleet, events) -> None:
    (connection_id,) = fleet.pair(1, 1, members=250)
    fleet.sim.faults.add("klaviyo", "list_profiles", "slow", None, delay=0.4)
    scheduler = make(fleet, events)
    scheduler.start()
    await until(lambda: any(run.fetched for run in runs(connection_id)))

    await asyncio.to_thread(fleet.services.pause, connection_id)
    scheduler.refresh()
    await until(lambda: finished(connection_id) == 1)
    await stop(scheduler)

    assert runs(connection_id)[0].status == "interrupted"
    assert fleet.mailed() == []


async def test_connection_held_elsewhere_is_skipped_and_reported_once(
    clock, fleet, events
) -> None:
    (connection_id,) = fleet.pair(1, 1, members=2)
    DataConnection.update(
        lease_owner="another-host:4242:feedbeef",
        lease_expires_at=utcnow() + timedelta(seconds=90),
    ).where(DataConnection.id == connection_id).execute()
    scheduler = make(fleet, events)
    scheduler.start()
    await polls(10)

    assert runs(connection_id) == []
    assert events.kinds() == ["skipped_busy"]
    assert "another process" in events.items[0].message

    clock.advance(seconds=91)  # the other process's hold expires
    await until(lambda: finished(connection_id) == 1)
    await stop(scheduler)


async def test_one_account_is_synced_one_connection_at_a_time(fleet, events) -> None:
    first, second = fleet.pair(1, 2, members=150)
    other = fleet.pair(1, 1, members=150)[0]
    fleet.sim.faults.add("klaviyo", "list_profiles", "slow", None, delay=0.2)
    scheduler = make(fleet, events, parallel=3)
    scheduler.start()
    await until(lambda: all(finished(c) == 1 for c in (first, second, other)))
    await stop(scheduler)

    by_id = {run.connection_id: run for run in runs()}
    a, b, c = by_id[first], by_id[second], by_id[other]
    one_after_the_other = a.finished_at <= b.started_at or b.finished_at <= a.started_at
    assert one_after_the_other
    # Another account's connection ran beside them.
    assert c.started_at < max(a.finished_at, b.finished_at)


async def test_scheduler_state_tells_here_from_elsewhere(fleet, events) -> None:
    other = Fleet.serve(seed=12)
    try:
        here = make(fleet, events)
        elsewhere = SyncScheduler(other.services, mode="headless", poll_seconds=POLL)
        assert scheduler_state(fleet.runtime.owner) == "stopped"

        elsewhere.start()
        await until(lambda: scheduler_state(fleet.runtime.owner) != "stopped")
        assert scheduler_state(fleet.runtime.owner) == "running elsewhere"

        here.start()
        await until(lambda: scheduler_state(fleet.runtime.owner) == "running here")
        assert scheduler_state(other.runtime.owner) == "running here"

        await stop(here)
        await stop(elsewhere)
        assert scheduler_state(fleet.runtime.owner) == "stopped"
    finally:
        other.stop()


async def test_a_manual_sync_here_waits_for_the_scheduled_sync_of_its_account(
    fleet, events
) -> None:
    ids = fleet.pair(1, 2, members=150)
    fleet.sim.faults.add("klaviyo", "list_profiles", "slow", None, delay=0.3)
    scheduler = make(fleet, events)
    scheduler.start()
    await until(lambda: scheduler.running)
    (scheduled,) = scheduler.running
    (other,) = [c for c in ids if c != scheduled]

    with pytest.raises(SyncBusy):
        await asyncio.to_thread(fleet.services.sync_now, other)

    await until(lambda: finished(scheduled) == 1 and finished(other) == 1)
    await stop(scheduler)
    assert [run.trigger for run in runs()] == ["scheduled", "scheduled"]


async def test_the_scheduler_leaves_an_account_alone_while_a_manual_sync_runs(
    fleet, events
) -> None:
    manual, scheduled = fleet.pair(1, 2, members=450)
    DataConnection.update(status="paused").where(
        DataConnection.id == scheduled
    ).execute()
    fleet.sim.faults.add("klaviyo", "list_profiles", "slow", None, delay=0.3)
    DataConnection.update(last_sync_at=utcnow()).where(
        DataConnection.id == manual
    ).execute()  # not due: only the manual sync runs it
    scheduler = make(fleet, events)
    scheduler.start()
    syncing = asyncio.ensure_future(asyncio.to_thread(fleet.services.sync_now, manual))
    await until(lambda: any(run.fetched for run in runs(manual)))
    await asyncio.to_thread(fleet.services.resume, scheduled)
    scheduler.refresh()

    await syncing
    await until(lambda: finished(scheduled) == 1)
    await stop(scheduler)
    (manual_run,) = runs(manual)
    (scheduled_run,) = runs(scheduled)
    assert manual_run.finished_at <= scheduled_run.started_at
    assert "skipped_busy" not in events.kinds()


async def test_start_recovers_runs_an_ended_process_left_unfinished(
    fleet, events
) -> None:
    (connection_id,) = fleet.pair(1, 1, members=2)
    DataConnection.update(status="paused").execute()  # never due: only recovery
    left = SyncRun.create(
        connection=connection_id,
        reference="zaptui-left-behind",
        trigger="scheduled",
        owner="gone-host:1:dead",
        status="running",
        phase="fetching",
    )
    scheduler = make(fleet, events)

    scheduler.start()
    await until(lambda: SyncRun.get_by_id(left.id).status != "running")
    await stop(scheduler)

    assert SyncRun.get_by_id(left.id).status == "interrupted"
    assert fleet.mailed() == []
