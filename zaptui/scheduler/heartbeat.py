"""Whether a scheduler runs, here or in another process, from heartbeat rows.

Each running scheduler renews its row every HEARTBEAT_SECONDS and deletes it
when it stops. A row not renewed for STALE_SECONDS, or whose process on this
host has died, no longer counts.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from zaptui.clock import utcnow
from zaptui.store.models import SchedulerHeartbeat, database_proxy
from zaptui.sync.leases import owner_is_dead

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0
STALE_SECONDS = 3 * HEARTBEAT_SECONDS
FORGET_AFTER = timedelta(days=1)


def beat(owner: str, mode: str) -> None:
    """Record that the scheduler of process `owner` is alive."""
    now = utcnow()
    with database_proxy.atomic():
        SchedulerHeartbeat.insert(
            owner=owner, mode=mode, started_at=now, beat_at=now
        ).on_conflict(
            conflict_target=[SchedulerHeartbeat.owner],
            update={SchedulerHeartbeat.beat_at: now, SchedulerHeartbeat.mode: mode},
        ).execute()
        SchedulerHeartbeat.delete().where(
            SchedulerHeartbeat.beat_at < now - FORGET_AFTER
        ).execute()


def forget(owner: str) -> None:
    """Remove the row of a scheduler that stopped."""
    SchedulerHeartbeat.delete().where(SchedulerHeartbeat.owner == owner).execute()


def live_schedulers() -> list[SchedulerHeartbeat]:
    """The scheduler processes that are running now, by their heartbeats."""
    since = utcnow() - timedelta(seconds=STALE_SECONDS)
    rows = SchedulerHeartbeat.select().where(SchedulerHeartbeat.beat_at >= since)
    return [row for row in rows if not owner_is_dead(row.owner)]


def scheduler_state(owner: str | None = None) -> str:
    """ "running here", "running elsewhere" or "stopped", from the database.

    `owner` is this process's Runtime.owner, so "here" can be told from
    "elsewhere"; a scheduler here wins over one elsewhere.
    """
    owners = {row.owner for row in live_schedulers()}
    if owner is not None and owner in owners:
        return "running here"
    if owners:
        return "running elsewhere"
    return "stopped"
