"""When a data connection is due: the pure rules the scheduler runs on."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from zaptui.scheduler.due import due_at, due_connections, is_due, next_due

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Conn:
    """The fields of a data connection the rules read."""

    id: int = 1
    status: str = "active"
    created_at: datetime | None = T0
    resumed_at: datetime | None = None
    last_sync_at: datetime | None = None


def synced(at: datetime, **changes) -> Conn:
    return replace(Conn(created_at=T0 - 48 * HOUR, last_sync_at=at), **changes)


def test_a_new_connection_is_due_at_once() -> None:
    assert is_due(Conn(), 24, T0)
    assert due_at(Conn(), 24) == T0


@pytest.mark.parametrize("hours", [1, 6, 12, 24])
def test_each_frequency_is_due_one_period_after_the_last_sync(hours: int) -> None:
    connection = synced(T0)

    assert due_at(connection, hours) == T0 + hours * HOUR
    assert not is_due(connection, hours, T0 + hours * HOUR - timedelta(seconds=1))
    assert is_due(connection, hours, T0 + hours * HOUR)


def test_missed_runs_coalesce_into_one_sync() -> None:
    connection = synced(T0)
    days_later = T0 + 72 * HOUR

    assert is_due(connection, 1, days_later)
    after_that_sync = synced(days_later)
    assert not is_due(after_that_sync, 1, days_later + timedelta(minutes=1))
    assert due_at(after_that_sync, 1) == days_later + HOUR


def test_restart_neither_skips_nor_repeats_a_sync() -> None:
    # Nothing is remembered between processes: the same rows give the same answer.
    connection = synced(T0)
    before_restart = due_at(connection, 6)
    after_restart = due_at(Conn(**vars(connection)), 6)

    assert before_restart == after_restart == T0 + 6 * HOUR
    assert not is_due(connection, 6, T0 + 5 * HOUR)
    assert is_due(connection, 6, T0 + 7 * HOUR)


def test_pause_stops_a_connection_being_due() -> None:
    paused = synced(T0, status="paused")

    assert due_at(paused, 1) is None
    assert not is_due(paused, 1, T0 + 100 * HOUR)


def test_resume_makes_a_connection_due_at_once() -> None:
    resumed = synced(T0, resumed_at=T0 + 10 * timedelta(minutes=1))

    assert is_due(resumed, 24, T0 + 11 * timedelta(minutes=1))
    synced_after_resume = replace(resumed, last_sync_at=T0 + 12 * timedelta(minutes=1))
    assert not is_due(synced_after_resume, 24, T0 + 13 * timedelta(minutes=1))


def test_frequency_change_takes_effect_from_the_last_sync() -> None:
    connection = synced(T0)
    now = T0 + 2 * HOUR

    assert not is_due(connection, 24, now)
    assert is_due(connection, 1, now)
    assert due_at(connection, 12) == T0 + 12 * HOUR


def test_due_connections_come_longest_overdue_first() -> None:
    rows = [
        replace(synced(T0 - 3 * HOUR), id=1),
        replace(synced(T0 - 9 * HOUR), id=2),
        replace(synced(T0), id=3),
        replace(synced(T0 - 20 * HOUR), id=4, status="paused"),
    ]

    due = due_connections(rows, 1, T0 + timedelta(minutes=1))

    assert [c.id for c in due] == [2, 1]


def test_connections_due_together_come_in_varying_order() -> None:
    rows = [replace(Conn(), id=n) for n in range(20)]

    orders = {
        tuple(c.id for c in due_connections(rows, 24, T0, random.Random(seed)))
        for seed in range(5)
    }

    assert len(orders) > 1
    assert all(sorted(order) == list(range(20)) for order in orders)


def test_next_due_is_the_earliest_active_connection() -> None:
    rows = [synced(T0), synced(T0 - 2 * HOUR), synced(T0 - 5 * HOUR, status="paused")]

    assert next_due(rows, 6) == T0 + 4 * HOUR
    assert next_due([synced(T0, status="paused")], 6) is None
