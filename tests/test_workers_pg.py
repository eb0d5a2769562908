"""Three headless workers on PostgreSQL: 60 data connections over 6 Klaviyo
accounts are each synced once, never two at a time per connection or per
account, spread over the workers; a worker killed mid-sync is taken over."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest
from conftest import PG_SKIP_REASON, PG_URL
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
    private_pg_url,
    process_of,
    wait_for,
)

from zaptui.store.db import open_database
from zaptui.store.models import DataConnection, SyncRun, database_proxy

pytestmark = pytest.mark.postgres


@pytest.fixture
def workers_url() -> Iterator[str]:
    """A PostgreSQL database of our own (others drop tables in the shared one)."""
    if not PG_URL:
        pytest.skip(PG_SKIP_REASON)
    url = private_pg_url(PG_URL, "zaptui_workers")
    database = open_database(url)
    yield url
    database.close()
    database_proxy.initialize(None)


@pytest.fixture
def fleet(workers_url) -> Iterator[Fleet]:
    served = Fleet.serve(seed=21)
    yield served
    served.stop()


def test_three_workers_sync_sixty_connections_once_each(fleet, workers_url) -> None:
    ids = fleet.pair(6, 10, members=5)
    DataConnection.update(status="paused").execute()
    fleet.sim.faults.add("klaviyo", "list_profiles", "slow", None, delay=0.05)
    workers = Workers(workers_url, fleet.env(**WORKER_ENV), 3)
    try:
        wait_for(lambda: live_headless_schedulers() == 3, 30, "three workers")
        activate(ids)
        wait_for(lambda: len(finished_runs(ids)) >= len(ids), 50, "every sync")
        time.sleep(1.0)  # a few more polls: nothing runs twice
    finally:
        statuses = workers.stop()

    assert set(statuses.values()) == {0}, workers.output()
    runs = list(SyncRun.select())
    assert sorted(run.connection_id for run in runs) == sorted(ids)
    assert {run.status for run in runs} == {"succeeded"}
    assert overlapping(runs, lambda run: run.connection_id) == []
    assert overlapping(runs, account_of) == []
    per_worker = Counter(process_of(run.owner) for run in runs)
    assert len(per_worker) == 3, per_worker
    assert min(per_worker.values()) >= 5, per_worker
    assert sorted(fleet.mailed()) == sorted(fleet.members(ids))
    assert fleet.sim.zappost.duplicates() == []
    for secret in fleet.secrets():
        assert secret not in workers.output()


@pytest.mark.parametrize("phase", ["fetching", "submitting"])
def test_a_worker_killed_mid_sync_is_taken_over_on_postgres(
    fleet, workers_url, phase
) -> None:
    assert_killed_work_is_taken_over(fleet, workers_url, phase)
