"""Keyset-paged reads for the console: sync runs, failed profiles, the API log.

Pages run newest first by (timestamp desc, id desc) and continue after a
cursor, never with OFFSET, so the hundredth page costs what the first does.
Lists select only the columns a table shows; bodies and headers are read one
entry at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import peewee as pw

from zaptui.store.models import ApiLogEntry, ProfileOutcome, SyncRun

PAGE_SIZE = 100
FAILED_PROFILES_SHOWN = 500

T = TypeVar("T")


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: the last row's timestamp and id."""

    at: datetime
    id: int


@dataclass(frozen=True)
class Page(Generic[T]):
    """Rows of one page and the cursor to read the next (None at the end)."""

    rows: list[T]
    next: Cursor | None


@dataclass(frozen=True)
class RunRow:
    """A sync run as the history table shows it."""

    id: int
    campaign_name: str
    source_name: str
    source_type: str
    started_at: datetime
    fetched: int
    submission_url: str | None
    status: str


@dataclass(frozen=True)
class RunDetail:
    """A sync run as the run panel shows it."""

    id: int
    reference: str
    connection_name: str
    campaign_name: str
    source_name: str
    source_type: str
    trigger: str
    status: str
    phase: str
    started_at: datetime
    finished_at: datetime | None
    fetched: int
    imported: int
    failed: int
    skipped_duplicate: int
    address_updates_failed: int
    error: str
    submission_id: str | None
    submission_url: str | None
    full_read: bool = False  # read the whole list or segment


@dataclass(frozen=True)
class FailedProfile:
    """A profile that a sync run could not send, with the reason."""

    profile_id: str
    display_name: str
    email: str
    reason: str


@dataclass(frozen=True)
class FailedProfiles:
    """The first failed profiles of a run and how many there are in all."""

    rows: list[FailedProfile]
    total: int

    @property
    def more(self) -> int:
        """How many failed profiles are not in `rows`."""
        return max(0, self.total - len(self.rows))


@dataclass(frozen=True)
class LogRow:
    """An API log entry as the logs table shows it (no headers or bodies)."""

    id: int
    at: datetime
    service: str
    method: str
    url: str
    status: int | None
    duration_ms: float
    error: str


def _after(at: pw.Field, key: pw.Field, cursor: Cursor | None) -> list[Any]:
    """The condition for rows strictly after a cursor in (at desc, id desc) order.

    Written as `at <= x AND (at < x OR id < y)` rather than a row-value
    comparison so that both SQLite and PostgreSQL use the index on `at` as a
    range.
    """
    if cursor is None:
        return []
    return [(at <= cursor.at) & ((at < cursor.at) | (key < cursor.id))]


def _page(rows: list[T], limit: int, cursor_of: Callable[[T], Cursor]) -> Page[T]:
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        return Page(rows, cursor_of(last))
    return Page(rows, None)


def run_cursor(row: RunRow) -> Cursor:
    """The cursor just after a run in the history's order."""
    return Cursor(row.started_at, row.id)


def log_cursor(row: LogRow) -> Cursor:
    """The cursor just after an entry in the API log's order."""
    return Cursor(row.at, row.id)


def after_first_page(
    first: Page[T],
    shown: list[T],
    shown_next: Cursor | None,
    cursor_of: Callable[[T], Cursor],
) -> Page[T]:
    """What to show once the first page was read again: it, then what was shown
    below it, paging on from where the shown rows ended.

    Rows shown within the first page's range but missing from it are gone from
    the database (pruned) and are dropped.
    """
    edge = first.next
    if edge is None:
        return Page(list(first.rows), None)  # the first page holds everything
    tail = [
        row
        for row in shown
        if (cursor_of(row).at, cursor_of(row).id) < (edge.at, edge.id)
    ]
    if not tail:
        return first
    return Page(list(first.rows) + tail, shown_next)


def run_page(after: Cursor | None = None, limit: int = PAGE_SIZE) -> Page[RunRow]:
    """One page of sync runs, newest first, after a cursor."""
    # Columns in RunRow's field order: rows are read as tuples, not models.
    query = (
        SyncRun.select(
            SyncRun.id,
            SyncRun.campaign_name,
            SyncRun.source_name,
            SyncRun.source_type,
            SyncRun.started_at,
            SyncRun.fetched,
            SyncRun.submission_url,
            SyncRun.status,
        )
        .order_by(SyncRun.started_at.desc(), SyncRun.id.desc())
        .limit(limit + 1)
    )
    conditions = _after(SyncRun.started_at, SyncRun.id, after)
    if conditions:
        query = query.where(*conditions)
    rows = [RunRow(*values) for values in query.tuples()]
    return _page(rows, limit, run_cursor)


def run_detail(run_id: int) -> RunDetail | None:
    """Everything the run panel shows about one sync run; None if it is gone."""
    run = SyncRun.get_or_none(SyncRun.id == run_id)
    if run is None:
        return None
    return RunDetail(
        id=run.id,
        reference=run.reference,
        connection_name=run.connection_name,
        campaign_name=run.campaign_name,
        source_name=run.source_name,
        source_type=run.source_type,
        trigger=run.trigger,
        status=run.status,
        phase=run.phase,
        started_at=run.started_at,
        finished_at=run.finished_at,
        fetched=run.fetched,
        imported=run.imported,
        failed=run.failed,
        skipped_duplicate=run.skipped_duplicate,
        address_updates_failed=run.address_updates_failed,
        error=run.error,
        submission_id=run.submission_id,
        submission_url=run.submission_url,
        full_read=run.full_read,
    )


def failed_profiles(run_id: int, limit: int = FAILED_PROFILES_SHOWN) -> FailedProfiles:
    """The first `limit` failed profiles of a run, in the order they were seen."""
    failed = (ProfileOutcome.run == run_id) & (ProfileOutcome.outcome == "failed")
    query = (
        ProfileOutcome.select(
            ProfileOutcome.profile_id,
            ProfileOutcome.display_name,
            ProfileOutcome.email,
            ProfileOutcome.reason,
        )
        .where(failed)
        .order_by(ProfileOutcome.id)
        .limit(limit)
    )
    rows = [
        FailedProfile(
            profile_id=outcome.profile_id,
            display_name=outcome.display_name,
            email=outcome.email,
            reason=outcome.reason,
        )
        for outcome in query
    ]
    total = len(rows)
    if total == limit:
        total = ProfileOutcome.select().where(failed).count()
    return FailedProfiles(rows, total)


def log_page(
    after: Cursor | None = None,
    limit: int = PAGE_SIZE,
    service: str | None = None,
) -> Page[LogRow]:
    """One page of the API log, newest first, optionally of one service."""
    # Columns in LogRow's field order: rows are read as tuples, not models.
    conditions = _after(ApiLogEntry.at, ApiLogEntry.id, after)
    if service:
        conditions.append(ApiLogEntry.service == service)
    query = (
        ApiLogEntry.select(
            ApiLogEntry.id,
            ApiLogEntry.at,
            ApiLogEntry.service,
            ApiLogEntry.method,
            ApiLogEntry.url,
            ApiLogEntry.status,
            ApiLogEntry.duration_ms,
            ApiLogEntry.error,
        )
        .order_by(ApiLogEntry.at.desc(), ApiLogEntry.id.desc())
        .limit(limit + 1)
    )
    if conditions:
        query = query.where(*conditions)
    rows = [LogRow(*values) for values in query.tuples()]
    return _page(rows, limit, log_cursor)


def log_entry(entry_id: int) -> ApiLogEntry | None:
    """One API log entry with its headers and bodies; None if it is gone."""
    return ApiLogEntry.get_or_none(ApiLogEntry.id == entry_id)
