"""Two headless schedulers and a console scheduler on one SQLite file: every due
sync runs once, never two at a time for one connection or one account, the work
spreads, and a worker killed mid-sync has its work taken over."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from scheduler_world import (
    WORKER_ENV,
    Fleet,
    Workers,
    account_of,
    activate,
    assert_killed_work_is_taken_over,
    finished_runs,
    live_headless_schedulers,
    overlapping,
    process_of,
    wait_for,
)

from zaptui.scheduler import SyncScheduler, scheduler_state
from zaptui.store.models import DataConnection, SyncRun


@pytest.fixture
def fleet(db) -> Iterator[Fleet]:
    served = Fleet.serve()
    yield served
    served.stop()


async def test_two_headless_schedulers_and_a_console_share_one_sqlite_file(
    fleet, db_url
) -> None:
    ids = fleet.pair(4, 3, members=20)
    DataConnection.update(status="paused").execute()
    fleet.sim.faults.add("klaviyo", "list_profiles", "slow", None, delay=0.15)
    workers = Workers(db_url, fleet.env(**WORKER_ENV), 2)
    console = SyncScheduler(fleet.services, mode="console", poll_seconds=0.3)
    try:
        await asyncio.to_thread(
            wait_for, lambda: live_headless_schedulers() == 2, 30, "both workers"
        )
        console.start()
        assert await asyncio.to_thread(scheduler_state, console.owner) in (
            "running here",
            "running elsewhere",
        )
        await asyncio.to_thread(activate, ids)
        await asyncio.to_thread(
            wait_for, lambda: len(finished_runs(ids)) >= len(ids), 45, "every sync"
        )
        await asyncio.sleep(1.0)  # a few more polls: nothing runs twice
    finally:
        console.shutdown()
        await console.drain()
        statuses = workers.stop()

    assert set(statuses.values()) == {0}, workers.output()
    runs = list(SyncRun.select())
    assert sorted(run.connection_id for run in runs) == sorted(ids)
    assert {run.status for run in runs} == {"succeeded"}
    assert overlapping(runs, lambda run: run.connection_id) == []
    assert overlapping(runs, account_of) == []
    processes = {process_of(run.owner) for run in runs}
    assert process_of(console.owner) in processes
    assert len(processes) == 3, processes
    assert sorted(fleet.mailed()) == sorted(fleet.members(ids))
    assert fleet.sim.zappost.duplicates() == []
    for secret in fleet.secrets():
        assert secret not in workers.output()


@pytest.mark.parametrize("phase", ["fetching", "submitting"])
def test_a_worker_killed_mid_sync_has_its_work_taken_over(fleet, db_url, phase) -> None:
    assert_killed_work_is_taken_over(fleet, db_url, phase)
