"""When a data connection is next due: pure functions of what the database says.

Nothing here is remembered in memory, so a restarted scheduler (or another
process) reaches the same answer. A connection never synced is due at once; a
resumed one is due at once after its resume; otherwise it is due one period
after its last sync. However long a scheduler was stopped, an overdue
connection is due once, not once per missed period (missed runs coalesce).
`next_sync_at` in the database is written from these for display only.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

from zaptui.clock import as_utc


class Schedulable(Protocol):
    """The fields of a data connection that decide when it is due."""

    status: str
    created_at: datetime | None
    resumed_at: datetime | None
    last_sync_at: datetime | None


C = TypeVar("C", bound=Schedulable)

EARLIEST = datetime.min.replace(tzinfo=UTC)


def period(frequency_hours: int) -> timedelta:
    """The time between two scheduled syncs of one connection."""
    return timedelta(hours=int(frequency_hours))


def due_at(connection: Schedulable, frequency_hours: int) -> datetime | None:
    """When the connection is next due; None when it is not synced on a schedule."""
    if connection.status != "active":
        return None
    last = as_utc(connection.last_sync_at)
    created = as_utc(connection.created_at)
    resumed = as_utc(connection.resumed_at)
    if last is None:
        return resumed or created or EARLIEST
    if resumed is not None and resumed > last:
        return resumed
    return last + period(frequency_hours)


def is_due(connection: Schedulable, frequency_hours: int, now: datetime) -> bool:
    """Whether the connection should be synced now."""
    when = due_at(connection, frequency_hours)
    return when is not None and when <= now


def due_connections(
    connections: Iterable[C],
    frequency_hours: int,
    now: datetime,
    rng: random.Random | None = None,
) -> list[C]:
    """The due connections, longest overdue first.

    Connections due at the same moment come in a random order, so workers
    started together do not all reach for the same one first.
    """
    rng = rng or random.Random()
    due = [c for c in connections if is_due(c, frequency_hours, now)]
    keyed = [(due_at(c, frequency_hours) or EARLIEST, rng.random(), c) for c in due]
    keyed.sort(key=lambda item: (item[0], item[1]))
    return [c for _, _, c in keyed]


def next_due(
    connections: Iterable[Schedulable], frequency_hours: int
) -> datetime | None:
    """The earliest time any of the connections is due (None if none ever is)."""
    times = [due_at(c, frequency_hours) for c in connections]
    return min((when for when in times if when is not None), default=None)
