"""Keeping the database small: old API log entries and per-profile outcomes go.

After the retention period (setting retention_days) API log entries, with
their bodies, the per-profile outcomes of finished runs and the alert
deliveries that were made or given up are deleted, a
batch at a time in short transactions with a pause between them, so a sync
waiting for the SQLite write lock gets it between two batches. The run rows
(the sync history), submissions and the SubmittedProfile ledger (which
de-duplication needs) are kept, and so are the outcomes of a run that is not
finished or whose submission is unconfirmed: recovery resends its staged
records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import peewee as pw

from zaptui import settings
from zaptui.clock import utcnow
from zaptui.scheduler.alerts import PENDING
from zaptui.store.models import (
    AlertDelivery,
    ApiLogEntry,
    BaseModel,
    ProfileOutcome,
    SchedulerMark,
    SyncRun,
    database_proxy,
)
from zaptui.sync.engine import needs_recovery

log = logging.getLogger(__name__)

BATCH_ROWS = 500
PAUSE_SECONDS = 0.05
PRUNE_EVERY = timedelta(hours=6)
MARK = "prune"
NEVER = datetime(1970, 1, 1, tzinfo=UTC)
# Statuses of runs that are over; "running" (fetching or submitting) is not.
FINISHED = ("succeeded", "partial", "failed", "interrupted")


@dataclass(frozen=True)
class Pruned:
    """How many rows one pruning pass deleted."""

    api_log_entries: int = 0
    profile_outcomes: int = 0
    alert_deliveries: int = 0

    @property
    def total(self) -> int:
        """Every row deleted."""
        return self.api_log_entries + self.profile_outcomes + self.alert_deliveries


def cutoff(retention_days: int, now: datetime | None = None) -> datetime:
    """The moment before which rows are old enough to prune."""
    return (now or utcnow()) - timedelta(days=int(retention_days))


def prune(
    retention_days: int | None = None,
    *,
    now: datetime | None = None,
    batch: int = BATCH_ROWS,
    pause: float = PAUSE_SECONDS,
) -> Pruned:
    """Delete API log entries and finished runs' outcomes older than retention."""
    days = retention_days if retention_days is not None else _retention_days()
    before = cutoff(days, now)
    api_log = _in_batches(
        lambda: (
            ApiLogEntry.select(ApiLogEntry.id)
            .where(ApiLogEntry.at < before)
            .order_by(ApiLogEntry.id)
            .limit(batch)
        ),
        ApiLogEntry,
        pause,
    )
    old_runs = SyncRun.select(SyncRun.id).where(
        (SyncRun.status << FINISHED)
        & ~needs_recovery()
        & SyncRun.finished_at.is_null(False)
        & (SyncRun.finished_at < before)
    )
    outcomes = _in_batches(
        lambda: (
            ProfileOutcome.select(ProfileOutcome.id)
            .where(ProfileOutcome.run << old_runs)
            .order_by(ProfileOutcome.id)
            .limit(batch)
        ),
        ProfileOutcome,
        pause,
    )
    # A pending delivery stays whatever its age: it gives itself up.
    deliveries = _in_batches(
        lambda: (
            AlertDelivery.select(AlertDelivery.id)
            .where(
                (AlertDelivery.status != PENDING) & (AlertDelivery.created_at < before)
            )
            .order_by(AlertDelivery.id)
            .limit(batch)
        ),
        AlertDelivery,
        pause,
    )
    return Pruned(
        api_log_entries=api_log,
        profile_outcomes=outcomes,
        alert_deliveries=deliveries,
    )


def _in_batches(
    select_batch: Callable[[], pw.ModelSelect], model: type[BaseModel], pause: float
) -> int:
    """Delete the rows a query names, one short transaction per batch."""
    deleted = 0
    while True:
        with database_proxy.atomic():
            ids = [row.id for row in select_batch()]
            if ids:
                deleted += model.delete().where(model.id << ids).execute()
        if not ids:
            return deleted
        time.sleep(pause)


def _retention_days() -> int:
    return int(settings.get("retention_days"))


def prune_if_due(owner: str, every: timedelta = PRUNE_EVERY) -> Pruned | None:
    """Prune if no process has in the last `every`; None when it was not due.

    The mark is moved with a compare-and-set, so of several schedulers sharing
    the database only one prunes each time.
    """
    now = utcnow()
    SchedulerMark.insert(name=MARK, at=NEVER, owner="").on_conflict_ignore().execute()
    moved = (
        SchedulerMark.update(at=now, owner=owner)
        .where((SchedulerMark.name == MARK) & (SchedulerMark.at <= now - every))
        .execute()
    )
    if not moved:
        return None
    pruned = prune(now=now)
    if pruned.total:
        log.info(
            "pruned %d API log entries, %d profile outcomes and %d alert "
            "deliveries older than %d days",
            pruned.api_log_entries,
            pruned.profile_outcomes,
            pruned.alert_deliveries,
            _retention_days(),
        )
    return pruned
