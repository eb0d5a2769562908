"""Holds on data connections and accounts under real contention: processes
racing for one account on SQLite and PostgreSQL, threads of one process,
expired and dead holders, and claims that skip busy accounts."""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import peewee as pw
import pytest
from conftest import PG_URL
from scheduler_world import private_pg_url
from store_support import stored_account, stored_connection

from zaptui.clock import set_clock, utcnow
from zaptui.scheduler.due import due_connections, is_due
from zaptui.store.db import open_database
from zaptui.store.models import Account, DataConnection, database_proxy
from zaptui.sync import leases

ROUNDS = 25
RACERS = 4


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path) -> Iterator[str]:
    """A database shared by racing processes: a SQLite file, or PostgreSQL."""
    if request.param == "sqlite":
        value = f"sqlite:///{tmp_path / 'race.db'}"
    else:
        if not PG_URL:
            pytest.skip("PostgreSQL tests need ZAPTUI_TEST_PG_URL")
        value = private_pg_url(PG_URL, "zaptui_leases")
    database = open_database(value)
    yield value
    database.close()
    database_proxy.initialize(None)


def make_account(name: str, connections: int) -> tuple[Account, list[DataConnection]]:
    account = stored_account(name, klaviyo_id=name)
    rows = [
        stored_connection(
            account,
            f"List {n}",
            source_type="list",
            source_id=f"{name}-{n}",
            name=f"{name} list {n}",
        )
        for n in range(connections)
    ]
    return account, rows


def release_both(connection_id: int, account_id: int, owner: str) -> None:
    leases.release(DataConnection, connection_id, owner)
    leases.release(Account, account_id, owner)


def _race(url: str, kind: str, args: tuple, barrier, results, index: int) -> None:
    """In a child process: at each round, reach for a hold at the same moment."""
    database = open_database(url)
    owner = f"racer-host:{index}:{os.getpid()}"
    try:
        for _ in range(ROUNDS):
            barrier.wait()
            if kind == "acquire_for_sync":
                connection_ids, account_id = args
                connection_id = connection_ids[index % len(connection_ids)]
                won = leases.acquire_for_sync(connection_id, account_id, owner)
                results.put((index, connection_id if won else None))
            else:
                rows = leases.read_candidates(DataConnection.id << list(args))
                claim = leases.claim_due(
                    due_connections(rows, 24, utcnow()),
                    owner,
                    lambda fresh: is_due(fresh, 24, utcnow()),
                )
                taken = claim.connection
                results.put((index, (taken.id, taken.account_id) if taken else None))
            barrier.wait()  # everyone has tried: now give back
            if kind == "acquire_for_sync" and won:
                leases.release(DataConnection, connection_id, owner)
                leases.release(Account, account_id, owner)
            if kind == "claim_due" and taken is not None:
                leases.release(DataConnection, taken.id, owner)
                leases.release(Account, taken.account_id, owner)
            barrier.wait()
    finally:
        database.close()


def race(url: str, kind: str, args: tuple) -> list[list]:
    """Run RACERS processes for ROUNDS rounds; the results of each round."""
    database_proxy.obj.close()  # the children open their own connections
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(RACERS)
    results = context.Queue()
    processes = [
        context.Process(target=_race, args=(url, kind, args, barrier, results, n))
        for n in range(RACERS)
    ]
    for process in processes:
        process.start()
    collected = [results.get(timeout=60) for _ in range(RACERS * ROUNDS)]
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    rounds: list[list] = [[] for _ in range(ROUNDS)]
    per_racer = {n: 0 for n in range(RACERS)}
    for index, value in collected:
        rounds[per_racer[index]].append(value)
        per_racer[index] += 1
    return rounds


def test_processes_racing_for_one_account_never_both_win(url) -> None:
    account, connections = make_account("A", RACERS)

    rounds = race(url, "acquire_for_sync", ([c.id for c in connections], account.id))

    winners = [[value for value in outcome if value is not None] for outcome in rounds]
    assert all(len(round_winners) <= 1 for round_winners in winners), winners
    assert sum(len(round_winners) for round_winners in winners) >= ROUNDS // 2


def test_processes_claiming_together_take_one_connection_per_account(url) -> None:
    ids = []
    for name in ("A", "B", "C"):
        ids += [c.id for c in make_account(name, 3)[1]]

    rounds = race(url, "claim_due", tuple(ids))

    for outcome in rounds:
        taken = [value for value in outcome if value is not None]
        accounts = [account_id for _, account_id in taken]
        assert len(accounts) == len(set(accounts)), outcome
        assert len({connection_id for connection_id, _ in taken}) == len(taken)
    # Work spreads: in most rounds more than one process found something to do.
    spread = sum(1 for outcome in rounds if sum(v is not None for v in outcome) > 1)
    assert spread >= ROUNDS // 2


def test_two_syncs_in_one_process_never_hold_one_account(db) -> None:
    account, connections = make_account("A", 8)
    owner = "this-host:1:same"
    barrier = threading.Barrier(len(connections))
    won: list[int] = []
    lock = threading.Lock()

    def reach(connection: DataConnection) -> None:
        barrier.wait()
        if leases.acquire_for_sync(connection.id, account.id, owner):
            with lock:
                won.append(connection.id)
        barrier.wait()  # a winner stays alive, as a sync does, until all tried

    threads = [threading.Thread(target=reach, args=(c,)) for c in connections]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(won) == 1
    # The winner ended without giving its holds back: an ended thread holds
    # nothing, so the next sync of this process may take them.
    assert leases.held_in_this_process(Account, account.id) is False
    assert leases.acquire_for_sync(connections[0].id, account.id, owner)
    release_both(connections[0].id, account.id, owner)


def test_the_holding_thread_may_take_its_holds_again(db) -> None:
    account, (connection,) = make_account("A", 1)

    assert leases.acquire_for_sync(connection.id, account.id, "me:1:x")
    assert leases.acquire_for_sync(connection.id, account.id, "me:1:x")
    leases.release(DataConnection, connection.id, "me:1:x")
    leases.release(Account, account.id, "me:1:x")

    assert not leases.held_in_this_process(Account, account.id)
    assert Account.get_by_id(account.id).lease_owner is None


def test_an_expired_hold_is_taken_over(db) -> None:
    account, (connection,) = make_account("A", 1)
    start = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
    set_clock(lambda: start)
    try:
        assert leases.acquire_for_sync(connection.id, account.id, "far-host:7:a", 30)
        assert not leases.acquire_for_sync(connection.id, account.id, "mine:1:b")

        set_clock(lambda: start + timedelta(seconds=31))
        assert leases.acquire_for_sync(connection.id, account.id, "mine:1:b")
    finally:
        set_clock(None)
    assert DataConnection.get_by_id(connection.id).lease_owner == "mine:1:b"
    release_both(connection.id, account.id, "mine:1:b")


def test_a_dead_process_hold_is_taken_at_once(db) -> None:
    account, (connection,) = make_account("A", 1)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_owner = f"{socket.gethostname()}:{gone.stdout.strip()}:dead"
    Account.update(
        lease_owner=dead_owner, lease_expires_at=utcnow() + timedelta(minutes=5)
    ).execute()

    assert leases.acquire_for_sync(connection.id, account.id, "mine:1:b")
    release_both(connection.id, account.id, "mine:1:b")


def test_claim_skips_busy_accounts_and_takes_free_work(db) -> None:
    busy, busy_rows = make_account("Busy", 2)
    free, free_rows = make_account("Free", 1)
    Account.update(
        lease_owner="far-host:9:z", lease_expires_at=utcnow() + timedelta(minutes=1)
    ).where(Account.id == busy.id).execute()
    rows = leases.read_candidates()
    ordered = busy_rows + free_rows
    candidates = sorted(rows, key=lambda row: [c.id for c in ordered].index(row.id))

    claim = leases.claim_due(candidates, "mine:1:b", lambda fresh: True)

    assert claim.connection is not None and claim.connection.id == free_rows[0].id
    assert claim.busy == [c.id for c in busy_rows]
    assert Account.get_by_id(free.id).lease_owner == "mine:1:b"
    release_both(free_rows[0].id, free.id, "mine:1:b")


def test_claim_looks_again_at_a_connection_synced_meanwhile(db) -> None:
    account, (connection,) = make_account("A", 1)
    candidates = leases.read_candidates()
    assert is_due(candidates[0], 24, utcnow())
    # Another process syncs it between the read and the claim.
    DataConnection.update(last_sync_at=utcnow()).execute()

    claim = leases.claim_due(
        candidates, "mine:1:b", lambda fresh: is_due(fresh, 24, utcnow())
    )

    assert claim.connection is None
    assert DataConnection.get_by_id(connection.id).lease_owner is None
    assert not leases.held_in_this_process(DataConnection, connection.id)


def test_candidates_carry_both_holds_as_read(db) -> None:
    account, (connection,) = make_account("A", 1)
    expires = utcnow() + timedelta(minutes=1)
    Account.update(lease_owner="far-host:9:z", lease_expires_at=expires).execute()
    DataConnection.update(status="paused").where(
        DataConnection.id != connection.id
    ).execute()

    (candidate,) = leases.read_candidates()

    assert (candidate.id, candidate.account_id) == (connection.id, account.id)
    assert candidate.account_lease_owner == "far-host:9:z"
    assert candidate.account_lease_expires_at == expires
    assert candidate.lease_owner is None and candidate.last_sync_at is None


def test_lease_seconds_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(leases.LEASE_SECONDS_ENV, "7")
    assert leases.lease_seconds() == 7
    monkeypatch.setenv(leases.LEASE_SECONDS_ENV, "soon")
    assert leases.lease_seconds() == leases.LEASE_SECONDS


def test_a_row_kept_locked_by_another_transaction_is_busy_on_postgres(
    pg_db,
) -> None:
    account, (connection,) = make_account("A", 1)
    other = _second_connection(pg_db)
    try:
        with other.atomic():
            other.execute_sql(
                'SELECT id FROM "account" WHERE id = %s FOR UPDATE', (account.id,)
            )
            assert not leases.acquire_for_sync(connection.id, account.id, "mine:1:b")
        assert leases.acquire_for_sync(connection.id, account.id, "mine:1:b")
    finally:
        other.close()
    release_both(connection.id, account.id, "mine:1:b")


def test_a_row_locked_for_an_instant_is_waited_for_on_postgres(pg_db) -> None:
    account, (connection,) = make_account("A", 1)
    other = _second_connection(pg_db)
    locked = threading.Event()

    def lock_for_a_moment() -> None:
        with other.atomic():
            other.execute_sql(
                'SELECT id FROM "account" WHERE id = %s FOR UPDATE', (account.id,)
            )
            locked.set()
            threading.Event().wait(leases.LOCKED_ROW_WAIT_SECONDS / 5)

    locker = threading.Thread(target=lock_for_a_moment)
    try:
        locker.start()
        assert locked.wait(5)
        # As a renewal or a scheduler's claim holds it: the hold is taken
        # once that transaction ends, not refused as busy.
        assert leases.acquire_for_sync(connection.id, account.id, "mine:1:b")
    finally:
        locker.join(5)
        other.close()
    release_both(connection.id, account.id, "mine:1:b")


def _second_connection(pg_db: pw.PostgresqlDatabase) -> pw.PostgresqlDatabase:
    """Another connection to the test database, as another process has."""
    other = pw.PostgresqlDatabase(pg_db.database, **dict(pg_db.connect_params))
    other.connect()
    return other
