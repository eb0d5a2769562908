"""One sync run: fetch, cleanse, map, de-duplicate, submit, record, write back.

Exactly once, whatever happens. Profiles are staged in `ProfileOutcome` page by
page; the run is marked "submitting" before the submission is sent, and every
record sent carries the run's reference; the outcome, the de-duplication ledger
and the connection's watermark are written in one transaction once ZAP~POST
has answered. A process that dies before "submitting" sent nothing: its run is
marked interrupted and the profiles come again with the next fetch, because the
watermark did not move. A process that dies after it resends the same staged
records with the same reference, which ZAP~POST recognises, and then records
the outcome. See `recover_interrupted_runs`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import peewee as pw

from zaptui import settings
from zaptui.clock import utcnow
from zaptui.domain.address import cleanse
from zaptui.domain.mapping import build_record, campaign_fields, unmapped_required
from zaptui.domain.profile import Profile
from zaptui.klaviyo.errors import KlaviyoError, MissingScope, Unauthorized
from zaptui.runtime import ConfigurationError, Runtime
from zaptui.store.models import (
    Account,
    DataConnection,
    FieldMapping,
    ProfileOutcome,
    Submission,
    SubmittedProfile,
    SyncRun,
    database_proxy,
)
from zaptui.sync import leases
from zaptui.sync.writeback import write_back_addresses
from zaptui.zappost.client import SubmissionResult
from zaptui.zappost.errors import ZapPostError

log = logging.getLogger(__name__)

PAGE_SIZE = 100
SUBMIT_CHUNK = 1000
HEARTBEAT_SECONDS = 10.0
UNFINISHED = ("running",)


class SyncRefused(Exception):
    """The connection cannot be synced now (paused, removed, or misconfigured)."""


class SyncBusy(Exception):
    """Another process holds this data connection or its Klaviyo account."""


class SyncStopped(Exception):
    """A stop was requested; the run ended at a safe point before submitting."""


@dataclass(frozen=True)
class Progress:
    """How far a run has got, for a console row or a log line."""

    run_id: int
    connection_id: int
    phase: str
    fetched: int
    imported: int
    failed: int
    skipped: int


ProgressCallback = Callable[[Progress], None]


async def _read_ahead(pages: AsyncIterator[list[dict]]) -> AsyncIterator[list[dict]]:
    """Yield pages while the next one is already on its way.

    The next request is sent before the current page is processed, so Klaviyo's
    time to answer overlaps our time to cleanse and store.
    """
    pending: asyncio.Future[list[dict]] = asyncio.ensure_future(anext(pages))
    while True:
        try:
            page = await pending
        except StopAsyncIteration:
            return
        pending = asyncio.ensure_future(anext(pages))
        await asyncio.sleep(0)  # let the request for the next page go out
        try:
            yield page
        except BaseException:
            pending.cancel()
            raise


class SyncEngine:
    """Runs sync runs for data connections."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        progress: ProgressCallback | None = None,
        stop: threading.Event | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.runtime = runtime
        self.progress = progress
        self.stop = stop or threading.Event()
        self.page_size = page_size
        self._last_heartbeat = 0.0

    def sync(self, connection_id: int, trigger: str = "manual") -> SyncRun:
        """Run one sync to the end on a private event loop (blocking)."""
        return asyncio.run(self.run(connection_id, trigger))

    async def run(self, connection_id: int, trigger: str = "manual") -> SyncRun:
        """Sync one data connection now; returns the finished run."""
        connection = DataConnection.get_or_none(DataConnection.id == connection_id)
        if connection is None:
            raise SyncRefused(f"data connection {connection_id} does not exist")
        if connection.status == "paused":
            raise SyncRefused(
                f"data connection {connection_id} is paused: resume it first"
            )
        owner = self.runtime.owner
        if not leases.acquire_for_sync(connection.id, connection.account_id, owner):
            raise SyncBusy(
                f"data connection {connection_id} or its Klaviyo account is being "
                "synced by another process"
            )
        try:
            await self._recover(connection)
            run = self._start(connection, trigger)
            log.info(
                "sync started: run %s, connection %s (%s)",
                run.id,
                connection.id,
                trigger,
            )
            try:
                await self._execute(run, connection)
            except SyncStopped:
                self._abandon(run, "stopped at a safe point before submitting")
            except (KlaviyoError, ZapPostError, ConfigurationError) as error:
                self._fail(run, connection, str(error), error)
            except Exception as error:  # recorded on the run, then surfaced
                log.exception("sync run %s failed unexpectedly", run.id)
                self._fail(run, connection, f"unexpected error: {error}", error)
            run = SyncRun.get_by_id(run.id)
            self._log_finish(run)
            return run
        finally:
            leases.release(DataConnection, connection.id, owner)
            leases.release(Account, connection.account_id, owner)

    # -- the steps ---------------------------------------------------------

    def _start(self, connection: DataConnection, trigger: str) -> SyncRun:
        return SyncRun.create(
            connection=connection,
            connection_name=connection.name,
            source_name=connection.source_name,
            source_type=connection.source_type,
            campaign_name=connection.campaign_name,
            reference=f"zaptui-{uuid.uuid4()}",
            trigger=trigger,
            owner=self.runtime.owner,
            heartbeat_at=utcnow(),
            watermark_to=connection.watermark,
        )

    async def _execute(self, run: SyncRun, connection: DataConnection) -> None:
        account: Account = connection.account
        api_key = self.runtime.secrets.decrypt(account.api_key_encrypted)
        async with self.runtime.zappost() as zap, self.runtime.klaviyo(api_key) as kl:
            campaign = await zap.get_campaign(connection.campaign_id)
            fields = campaign_fields(campaign)
            mapping = mapping_for(connection.id)
            missing = unmapped_required(mapping, fields)
            if missing:
                raise SyncRefused(
                    "required campaign fields are not mapped: "
                    + ", ".join(missing)
                    + " (open Map data)"
                )
            stage = _Stager(run, connection, mapping, fields)
            pages = kl.iter_member_pages(
                connection.source_type,
                connection.source_id,
                joined_after=fetch_from(connection),
                page_size=self.page_size,
            )
            async for page in _read_ahead(pages):
                stage.page(page)
                self._heartbeat(run, connection)
                self._report(run)
                if self.stop.is_set():
                    raise SyncStopped
            stage.flush_counts()
            await self._submit(run, connection, zap)
            if settings.get("fix_address_data"):
                await write_back_addresses(run, kl)

    async def _submit(self, run: SyncRun, connection: DataConnection, zap: Any) -> None:
        if not leases.renew(DataConnection, connection.id, self.runtime.owner):
            raise SyncStopped
        staged = _staged(run).count()
        if staged == 0:
            finalize(run.id, None)
            return
        # From here on records may reach ZAP~POST: recovery resends, never refetches.
        SyncRun.update(phase="submitting", heartbeat_at=utcnow()).where(
            SyncRun.id == run.id
        ).execute()
        self._report(SyncRun.get_by_id(run.id))
        result = await submit_staged(zap, run.id, connection.campaign_id, run.reference)
        finalize(run.id, result)

    # -- bookkeeping ------------------------------------------------------

    def _heartbeat(self, run: SyncRun, connection: DataConnection) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last_heartbeat < HEARTBEAT_SECONDS:
            return
        self._last_heartbeat = now
        owner = self.runtime.owner
        SyncRun.update(heartbeat_at=utcnow()).where(SyncRun.id == run.id).execute()
        kept = leases.renew(DataConnection, connection.id, owner)
        leases.renew(Account, connection.account_id, owner)
        if not kept:
            log.warning("run %s lost its hold on connection %s", run.id, connection.id)
            raise SyncStopped

    def _report(self, run: SyncRun) -> None:
        if self.progress is None:
            return
        fresh = SyncRun.get_by_id(run.id)
        self.progress(
            Progress(
                run_id=fresh.id,
                connection_id=fresh.connection_id,
                phase=fresh.phase,
                fetched=fresh.fetched,
                imported=fresh.imported,
                failed=fresh.failed,
                skipped=fresh.skipped_duplicate,
            )
        )

    def _abandon(self, run: SyncRun, why: str) -> None:
        abandon_run(run.id, why)

    def _fail(
        self,
        run: SyncRun,
        connection: DataConnection,
        message: str,
        error: BaseException,
    ) -> None:
        fresh = SyncRun.get_by_id(run.id)
        if fresh.phase == "submitting":
            # The submission may have been made: leave it to recovery.
            SyncRun.update(error=message).where(SyncRun.id == run.id).execute()
            return
        with database_proxy.atomic():
            ProfileOutcome.update(outcome="not_sent").where(
                (ProfileOutcome.run == run.id) & (ProfileOutcome.outcome == "staged")
            ).execute()
            recount(run.id)
            SyncRun.update(
                status="failed", phase="done", finished_at=utcnow(), error=message
            ).where(SyncRun.id == run.id).execute()
            DataConnection.update(
                last_error=message, last_sync_at=utcnow(), failing=True
            ).where(DataConnection.id == connection.id).execute()
            if isinstance(error, Unauthorized | MissingScope):
                Account.update(
                    status="unauthorised"
                    if isinstance(error, Unauthorized)
                    else "missing scope",
                    status_reason=message,
                    checked_at=utcnow(),
                ).where(Account.id == connection.account_id).execute()

    def _log_finish(self, run: SyncRun) -> None:
        log.log(
            logging.ERROR if run.status == "failed" else logging.INFO,
            "sync %s: run %s, connection %s: fetched %d, imported %d, failed %d, "
            "skipped %d%s",
            run.status,
            run.id,
            run.connection_id,
            run.fetched,
            run.imported,
            run.failed,
            run.skipped_duplicate,
            f": {run.error}" if run.error else "",
        )

    async def _recover(self, connection: DataConnection) -> None:
        for run in SyncRun.select().where(
            (SyncRun.connection == connection.id) & (SyncRun.status << UNFINISHED)
        ):
            await recover_run(self.runtime, run)


def fetch_from(connection: DataConnection) -> datetime | None:
    """Where the next fetch starts: the watermark less the look-back window."""
    floor = connection.created_at if connection.new_joiners_only else None
    if connection.watermark is None:
        return floor
    lookback = timedelta(hours=int(settings.get("lookback_hours")))
    start = connection.watermark - lookback
    return max(start, floor) if floor is not None else start


def mapping_for(connection_id: int) -> dict[str, str]:
    """The connection's mapping as campaign field -> profile field."""
    return {
        row.campaign_field: row.profile_field
        for row in FieldMapping.select().where(FieldMapping.connection == connection_id)
    }


class _Stager:
    """Turns pages of members into staged, failed or skipped outcomes."""

    def __init__(
        self,
        run: SyncRun,
        connection: DataConnection,
        mapping: dict[str, str],
        fields: list,
    ) -> None:
        self.run = run
        self.connection = connection
        self.mapping = mapping
        self.fields = fields
        self.hold_back_days = int(settings.get("hold_back_days"))
        self.floor = connection.created_at if connection.new_joiners_only else None
        self.watermark = connection.watermark
        self.counts = {"fetched": 0, "failed": 0, "skipped": 0, "pages": 0}

    def page(self, resources: list[dict]) -> None:
        profiles = [Profile.from_resource(resource) for resource in resources]
        profiles = [p for p in profiles if p.id]
        if self.floor is not None:
            profiles = [
                p
                for p in profiles
                if p.joined_group_at is None or p.joined_group_at > self.floor
            ]
        seen = self._already_mailed([p.id for p in profiles])
        held = self._held_back([p.id for p in profiles])
        rows = []
        for profile in profiles:
            if profile.joined_group_at and (
                self.watermark is None or profile.joined_group_at > self.watermark
            ):
                self.watermark = profile.joined_group_at
            rows.append(self._outcome(profile, seen, held))
        with database_proxy.atomic():
            if rows:
                ProfileOutcome.insert_many(rows).on_conflict_ignore().execute()
            self.counts["fetched"] += len(resources)
            self.counts["pages"] += 1
            SyncRun.update(
                fetched=SyncRun.fetched + len(resources),
                failed=SyncRun.failed
                + sum(1 for row in rows if row["outcome"] == "failed"),
                skipped_duplicate=SyncRun.skipped_duplicate
                + sum(
                    1 for row in rows if row["outcome"] in ("duplicate", "held_back")
                ),
                pages=SyncRun.pages + 1,
                watermark_to=self.watermark,
            ).where(SyncRun.id == self.run.id).execute()

    def flush_counts(self) -> None:
        recount(self.run.id)

    def _outcome(
        self,
        profile: Profile,
        seen: set[tuple[str, Any]],
        held: set[str],
    ) -> dict[str, Any]:
        row: dict[str, Any] = {
            "run": self.run.id,
            "profile_id": profile.id,
            "joined_group_at": profile.joined_group_at,
            "display_name": profile.display_name[:255],
            "email": profile.email[:255],
            "reason": "",
            "record": None,
            "correction": None,
            "created_at": utcnow(),
        }
        if (profile.id, profile.joined_group_at) in seen:
            return row | {
                "outcome": "duplicate",
                "reason": "already mailed for this membership",
            }
        if profile.id in held:
            return row | {
                "outcome": "held_back",
                "reason": f"mailed within the last {self.hold_back_days} days",
            }
        result = cleanse(profile)
        if not result.ok or result.address is None:
            return row | {"outcome": "failed", "reason": "; ".join(result.reasons)}
        record, errors = build_record(
            profile, result.address, self.mapping, self.fields, self.run.reference
        )
        if record is None:
            return row | {"outcome": "failed", "reason": "; ".join(errors)}
        correction = None
        if result.corrected:
            correction = {
                "original": result.original,
                "changes": list(result.changes),
                "write_back": "pending",
            }
        return row | {"outcome": "staged", "record": record, "correction": correction}

    def _already_mailed(self, profile_ids: list[str]) -> set[tuple[str, Any]]:
        if not profile_ids:
            return set()
        query = SubmittedProfile.select(
            SubmittedProfile.profile_id, SubmittedProfile.joined_group_at
        ).where(
            (SubmittedProfile.connection == self.connection.id)
            & (SubmittedProfile.profile_id << profile_ids)
        )
        return {(row.profile_id, row.joined_group_at) for row in query}

    def _held_back(self, profile_ids: list[str]) -> set[str]:
        if not self.hold_back_days or not profile_ids:
            return set()
        since = utcnow() - timedelta(days=self.hold_back_days)
        query = SubmittedProfile.select(SubmittedProfile.profile_id).where(
            (SubmittedProfile.profile_id << profile_ids)
            & (SubmittedProfile.submitted_at > since)
        )
        return {row.profile_id for row in query}


# -- shared by a live run and recovery ----------------------------------------


def _staged(run: SyncRun | int) -> pw.ModelSelect:
    run_id = run if isinstance(run, int) else run.id
    return ProfileOutcome.select().where(
        (ProfileOutcome.run == run_id) & (ProfileOutcome.outcome == "staged")
    )


def staged_records(run_id: int, chunk: int = SUBMIT_CHUNK) -> Iterator[dict]:
    """The run's staged records in a stable order, read a chunk at a time."""
    last_id = 0
    while True:
        rows = list(
            ProfileOutcome.select(ProfileOutcome.id, ProfileOutcome.record)
            .where(
                (ProfileOutcome.run == run_id)
                & (ProfileOutcome.outcome == "staged")
                & (ProfileOutcome.id > last_id)
            )
            .order_by(ProfileOutcome.id)
            .limit(chunk)
            .tuples()
        )
        if not rows:
            return
        for row_id, record in rows:
            last_id = row_id
            yield (
                ProfileOutcome.record.python_value(record)
                if isinstance(record, str)
                else record
            )


async def submit_staged(
    zap: Any, run_id: int, campaign_id: str, reference: str
) -> SubmissionResult:
    """Send the run's staged records as one submission with the run's reference."""
    return await zap.create_submission(
        campaign_id, lambda: staged_records(run_id), reference=reference
    )


def recount(run_id: int) -> None:
    """Set a run's counts from its outcome rows."""
    counts = dict(
        ProfileOutcome.select(ProfileOutcome.outcome, pw.fn.COUNT(ProfileOutcome.id))
        .where(ProfileOutcome.run == run_id)
        .group_by(ProfileOutcome.outcome)
        .tuples()
    )
    SyncRun.update(
        imported=counts.get("imported", 0),
        failed=counts.get("failed", 0),
        skipped_duplicate=counts.get("duplicate", 0) + counts.get("held_back", 0),
    ).where(SyncRun.id == run_id).execute()


def finalize(run_id: int, result: SubmissionResult | None, note: str = "") -> SyncRun:
    """Record a run's outcome, its ledger rows and the new watermark, atomically."""
    with database_proxy.atomic():
        run = SyncRun.get_by_id(run_id)
        if result is not None:
            for invalid in result.invalid:
                record = invalid.get("record") or {}
                errors = invalid.get("errors") or ["rejected"]
                ProfileOutcome.update(
                    outcome="failed",
                    reason="rejected by ZAP~POST: " + "; ".join(map(str, errors)),
                ).where(
                    (ProfileOutcome.run == run_id)
                    & (ProfileOutcome.outcome == "staged")
                    & (ProfileOutcome.profile_id == str(record.get("customerid", "")))
                ).execute()
            ProfileOutcome.update(outcome="imported").where(
                (ProfileOutcome.run == run_id) & (ProfileOutcome.outcome == "staged")
            ).execute()
            if run.connection_id is not None:
                source = ProfileOutcome.select(
                    pw.Value(run.connection_id),
                    ProfileOutcome.profile_id,
                    ProfileOutcome.joined_group_at,
                    ProfileOutcome.email,
                    pw.Value(run_id),
                    pw.Value(SubmittedProfile.submitted_at.db_value(utcnow())),
                ).where(
                    (ProfileOutcome.run == run_id)
                    & (ProfileOutcome.outcome == "imported")
                )
                SubmittedProfile.insert_from(
                    source,
                    [
                        SubmittedProfile.connection,
                        SubmittedProfile.profile_id,
                        SubmittedProfile.joined_group_at,
                        SubmittedProfile.email,
                        SubmittedProfile.run,
                        SubmittedProfile.submitted_at,
                    ],
                ).on_conflict_ignore().execute()
            Submission.insert(
                run=run_id,
                reference=run.reference,
                campaign_id=run.connection.campaign_id if run.connection else "",
                zap_submission_id=result.submission_id,
                record_count=result.accepted + len(result.invalid),
                accepted=result.accepted,
                rejected=len(result.invalid),
            ).on_conflict_ignore().execute()
        recount(run_id)
        run = SyncRun.get_by_id(run_id)
        status = run_status(run.imported, run.failed)
        if note:
            status = "interrupted"
        now = utcnow()
        SyncRun.update(
            status=status,
            phase="done",
            finished_at=now,
            submission_id=result.submission_id if result else None,
            submission_url=result.url if result else None,
            error=note or run.error,
        ).where(SyncRun.id == run_id).execute()
        if run.connection_id is not None:
            changes: dict[Any, Any] = {
                DataConnection.last_sync_at: now,
                DataConnection.failing: False,
                DataConnection.last_error: "",
            }
            if run.watermark_to is not None:
                changes[DataConnection.watermark] = run.watermark_to
            if result is not None:
                changes[DataConnection.last_submission_at] = now
            DataConnection.update(changes).where(
                DataConnection.id == run.connection_id
            ).execute()
        return SyncRun.get_by_id(run_id)


def run_status(imported: int, failed: int) -> str:
    """A finished run's status from its counts."""
    if failed and imported:
        return "partial"
    if failed:
        return "failed"
    return "succeeded"


def abandon_run(run_id: int, why: str) -> None:
    """End a run that sent nothing: its profiles will be fetched again next time."""
    with database_proxy.atomic():
        ProfileOutcome.update(outcome="not_sent").where(
            (ProfileOutcome.run == run_id) & (ProfileOutcome.outcome == "staged")
        ).execute()
        recount(run_id)
        SyncRun.update(
            status="interrupted",
            phase="done",
            finished_at=utcnow(),
            error=f"{why}; its profiles will be picked up by the next sync",
        ).where(SyncRun.id == run_id).execute()


async def recover_run(runtime: Runtime, run: SyncRun) -> SyncRun:
    """Finish a run that its process left unfinished (the caller holds the lease)."""
    if run.phase != "submitting":
        abandon_run(run.id, "interrupted before submitting (the process ended)")
        log.warning(
            "run %s was interrupted before submitting; nothing was sent", run.id
        )
        return SyncRun.get_by_id(run.id)
    connection = run.connection
    async with runtime.zappost() as zap:
        result = await zap.find_submission(connection.campaign_id, run.reference)
        if result is None:
            result = await submit_staged(
                zap, run.id, connection.campaign_id, run.reference
            )
    recovered = finalize(
        run.id,
        result,
        note=f"interrupted while submitting; recovered: submission "
        f"{result.submission_id} holds its {result.accepted} records",
    )
    log.warning(
        "run %s was interrupted while submitting; recovered submission %s",
        run.id,
        result.submission_id,
    )
    return recovered


async def recover_interrupted_runs(runtime: Runtime) -> list[SyncRun]:
    """At start-up: recover every unfinished run whose process is gone."""
    recovered = []
    for run in SyncRun.select().where(SyncRun.status << UNFINISHED):
        connection = run.connection
        if connection is None:
            abandon_run(run.id, "its data connection was removed")
            continue
        owner = runtime.owner
        if not leases.acquire_for_sync(connection.id, connection.account_id, owner):
            continue  # a live process still owns it
        try:
            fresh = SyncRun.get_by_id(run.id)
            if fresh.status in UNFINISHED:
                recovered.append(await recover_run(runtime, fresh))
        finally:
            leases.release(DataConnection, connection.id, owner)
            leases.release(Account, connection.account_id, owner)
    return recovered
