"""One sync run: fetch, cleanse, map, de-duplicate, submit, record, write back.

Exactly once, whatever happens. Profiles are staged in `ProfileOutcome` page by
page; the run is marked "submitting" before the submission is sent, and every
record sent carries the run's reference; the outcome, the de-duplication ledger
and the connection's watermark are written in one transaction once ZAP~POST
has answered. A process that dies before "submitting" sent nothing: its run is
marked interrupted and the profiles come again with the next fetch, because the
watermark did not move. A process that dies after it, or a ZAP~POST answer
that never came, leaves the submission unconfirmed: before anything else syncs
that connection, recovery asks ZAP~POST for the run's reference and resends the
same staged records under it if ZAP~POST has nothing, which ZAP~POST recognises
as the same submission. See `recover_run`.

The ledger holds a profile once per membership (profile id and the
joined_group_at of that membership). Every ledger row of a connection has a
joined_group_at at or before the connection's watermark, so only members at or
before the watermark (the look-back overlap) need checking against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import peewee as pw

from zaptui import settings
from zaptui.clock import utcnow
from zaptui.domain.address import (
    AddressVerifier,
    NotText,
    clean_text,
    cleanse,
    location_needs_update,
)
from zaptui.domain.mapping import (
    CampaignField,
    RecordBuilder,
    campaign_fields,
    unmapped_required,
)
from zaptui.domain.profile import Profile
from zaptui.klaviyo.errors import KlaviyoError, MissingScope, Unauthorized
from zaptui.runtime import ConfigurationError, Runtime
from zaptui.store.db import is_postgres
from zaptui.store.models import (
    Account,
    DataConnection,
    FieldMapping,
    ProfileOutcome,
    ReportedFailure,
    Submission,
    SubmittedProfile,
    SyncRun,
    database_proxy,
)
from zaptui.store.secrets import SecretKeyError
from zaptui.sync import leases
from zaptui.sync.writeback import write_back_addresses
from zaptui.zappost.client import EncodedRecord, SubmissionResult
from zaptui.zappost.errors import InvalidRequest, NotFound, ZapPostError
from zaptui.zappost.errors import Unauthorized as ZapUnauthorized

log = logging.getLogger(__name__)

PAGE_SIZE = 100
SUBMIT_CHUNK = 250
# Outcomes are written a transaction per STAGE_ROWS rows while fetching, and at
# least every STAGE_SECONDS, so other processes see how far a run has got.
STAGE_ROWS = 5000
STAGE_SECONDS = 1.0
HEARTBEAT_SECONDS = 10.0
FULL_READ_EVERY = timedelta(hours=24)
YIELDS_BEFORE_WORK = 4
UNFINISHED = ("running",)
MAX_PROFILE_ID = 64  # Klaviyo's ids are 26 characters
MAX_STORED_REJECTIONS = 1000

# Connections this process is syncing now: leases are per process, so two
# threads of one process are kept apart here.
_running_lock = threading.Lock()
_running: set[int] = set()

# ZAP~POST answered and refused: nothing was created, so the run can fail
# outright. Any other failure while submitting leaves the submission unconfirmed.
_REFUSED = (InvalidRequest, NotFound, ZapUnauthorized)


class SyncRefused(Exception):
    """The connection cannot be synced now (paused, removed, or misconfigured)."""


class RecoveryFailed(SyncRefused):
    """An earlier run's submission could not be confirmed, so no new run starts."""


class SyncBusy(Exception):
    """Another process holds this data connection or its Klaviyo account."""


class SyncStopped(Exception):
    """The run ended at a safe point before submitting; the message says why."""


class RunFailed(Exception):
    """The run cannot go on for a reason the operator can fix (recorded on it)."""


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
    pages: int = 0


ProgressCallback = Callable[[Progress], None]


def is_syncing_here(connection_id: int) -> bool:
    """Whether a thread of this process is syncing the connection now."""
    with _running_lock:
        return connection_id in _running


def needs_recovery() -> pw.Expression:
    """Runs left unfinished by their process, or with an unconfirmed submission."""
    return (SyncRun.status << UNFINISHED) | (
        (SyncRun.phase == "submitting") & (SyncRun.status == "failed")
    )


class _ReadAhead:
    """Pages of members, the next one already requested while one is processed.

    The request for the next page is on its way while the current page is
    processed, so Klaviyo's time to answer overlaps our time to cleanse and
    store.
    `aclose` cancels the request in flight and closes the pages underneath.
    """

    def __init__(self, pages: Any) -> None:
        self._pages = pages
        self._pending: asyncio.Future[list[dict]] | None = None

    def __aiter__(self) -> _ReadAhead:
        return self

    async def __anext__(self) -> list[dict]:
        if self._pending is None:
            self._pending = asyncio.ensure_future(anext(self._pages))
        try:
            page = await self._pending
        except StopAsyncIteration:
            self._pending = None
            raise
        # The caller stages the page on a worker thread; meanwhile this loop
        # sends the request for the next one and reads its answer.
        self._pending = asyncio.ensure_future(anext(self._pages))
        return page

    async def aclose(self) -> None:
        """Cancel the request in flight and close the page iterator."""
        pending, self._pending = self._pending, None
        if pending is not None:
            if pending.done():
                if not pending.cancelled():
                    pending.exception()  # retrieved: a late error is not news
            else:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
        with contextlib.suppress(Exception):
            await self._pages.aclose()


class _Keeper:
    """Keeps a run's holds and heartbeat fresh; notices pause, removal, loss.

    It beats every HEARTBEAT_SECONDS in the background, through long throttle
    waits and long submissions alike, so no other process takes the holds of a
    run that is alive. What it notices is acted on at the next safe point.
    """

    def __init__(self, runtime: Runtime, run: SyncRun, connection: DataConnection):
        self.runtime = runtime
        self.run_id = run.id
        self.connection_id = connection.id
        self.account_id = connection.account_id
        self.lost: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _Keeper:
        self._task = asyncio.ensure_future(self._loop())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                self.beat()
            except pw.PeeweeException as error:  # retried at the next beat
                log.warning(
                    "run %s could not record its heartbeat: %s", self.run_id, error
                )

    def beat(self) -> None:
        """Renew the holds, record the heartbeat, look for a pause or removal."""
        owner = self.runtime.owner
        SyncRun.update(heartbeat_at=utcnow()).where(SyncRun.id == self.run_id).execute()
        kept = leases.renew(DataConnection, self.connection_id, owner)
        kept = leases.renew(Account, self.account_id, owner) and kept
        status = (
            DataConnection.select(DataConnection.status)
            .where(DataConnection.id == self.connection_id)
            .scalar()
        )
        if status is None:
            self.lost = "its data connection was removed"
        elif status == "paused":
            self.lost = "the data connection was paused"
        elif not kept:
            self.lost = "another process took over the data connection"

    def check(self) -> None:
        """Raise SyncStopped if the run should not go on."""
        if self.lost:
            raise SyncStopped(self.lost)


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
        with _running_lock:
            if connection.id in _running:
                raise SyncBusy(
                    f"data connection {connection_id} is being synced already: "
                    "wait for that sync to finish"
                )
            _running.add(connection.id)
        try:
            return await self._run_held(connection, trigger)
        finally:
            with _running_lock:
                _running.discard(connection.id)

    async def _run_held(self, connection: DataConnection, trigger: str) -> SyncRun:
        owner = self.runtime.owner
        if not leases.acquire_for_sync(connection.id, connection.account_id, owner):
            raise SyncBusy(
                f"data connection {connection.id} or its Klaviyo account is being "
                "synced by another process: wait for that sync to finish"
            )
        try:
            await self._recover(connection)
            connection = DataConnection.get_by_id(connection.id)
            run = self._start(connection, trigger)
            log.info(
                "sync started: run %s, connection %s (%s%s)",
                run.id,
                connection.id,
                trigger,
                f", reading the whole {connection.source_type}"
                if run.full_read
                else "",
            )
            try:
                async with _Keeper(self.runtime, run, connection) as keeper:
                    await self._execute(run, connection, keeper)
            except SyncStopped as stopped:
                abandon_run(run.id, f"stopped before submitting: {stopped}")
            except (
                KlaviyoError,
                ZapPostError,
                ConfigurationError,
                SecretKeyError,
                RunFailed,
                httpx.HTTPError,
            ) as error:
                fail_run(run.id, str(error) or type(error).__name__, error)
            except Exception as error:  # recorded on the run, then surfaced
                log.exception("sync run %s failed unexpectedly", run.id)
                fail_run(run.id, f"unexpected error: {error}", error)
            run = SyncRun.get_by_id(run.id)
            _log_finish(run)
            self._report(_progress_of(run))
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
            started_at=utcnow(),
            heartbeat_at=utcnow(),
            watermark_to=connection.watermark,
            full_read=full_read_due(connection),
        )

    async def _execute(
        self, run: SyncRun, connection: DataConnection, keeper: _Keeper
    ) -> None:
        account: Account = connection.account
        api_key = self.runtime.secrets.decrypt(account.api_key_encrypted)
        fix_addresses = bool(settings.get("fix_address_data"))
        async with self.runtime.zappost() as zap, self.runtime.klaviyo(api_key) as kl:
            campaign = await zap.get_campaign(connection.campaign_id)
            fields = campaign_fields(campaign)
            mapping = mapping_for(connection.id)
            missing = unmapped_required(mapping, fields)
            if missing:
                raise RunFailed(
                    "required campaign fields are not mapped: "
                    + ", ".join(missing)
                    + " (map them in the data connection's mapping)"
                )
            stager = _Stager(
                run,
                connection,
                mapping,
                fields,
                verifier=self.runtime.address_verifier,
                fix_addresses=fix_addresses,
            )
            pages = _ReadAhead(
                kl.iter_member_pages(
                    connection.source_type,
                    connection.source_id,
                    joined_after=fetch_from(connection, full=run.full_read),
                    page_size=self.page_size,
                )
            )
            try:
                async for page in pages:
                    await stager.page(page)
                    self._report(stager.progress("fetching"))
                    if self.stop.is_set():
                        raise SyncStopped("the operator asked it to stop")
                    keeper.check()
            finally:
                await pages.aclose()
                # What was fetched is on record however the paging ended.
                stager.store()
            stager.finish()

            keeper.beat()
            keeper.check()
            if self.stop.is_set():
                raise SyncStopped("the operator asked it to stop")
            await self._submit(run, connection, zap, stager)
            if fix_addresses:
                # Also picks up corrections a process that ended left pending.
                await self._write_back(run.id, connection, kl)

    async def _submit(
        self, run: SyncRun, connection: DataConnection, zap: Any, stager: _Stager
    ) -> bool:
        """Send the staged records; True when ZAP~POST confirmed a submission."""
        if stager.staged == 0:
            finalize(run.id, None)
            return False
        # From here on records may reach ZAP~POST: recovery resends, never refetches.
        if begin_submitting(run.id, stager.hold_back_days):
            stager.recount()
            if stager.staged == 0:
                finalize(run.id, None)
                return False
        self._report(stager.progress("submitting"))
        try:
            result = await submit_staged(
                zap, run.id, connection.campaign_id, run.reference
            )
        except _REFUSED as error:
            found = await _find_quietly(zap, connection.campaign_id, run.reference)
            if found is None:
                refuse_run(run.id, str(error))
                return False
            result = found
        except (ZapPostError, httpx.HTTPError) as error:
            mark_unconfirmed(run.id, str(error) or type(error).__name__)
            return False
        finalize(run.id, result)
        return True

    async def _write_back(
        self, run_id: int, connection: DataConnection, klaviyo: Any
    ) -> None:
        """Correct addresses in Klaviyo; a failure here never fails the sync."""
        try:
            await write_back_addresses(run_id, connection.id, klaviyo)
        except Exception:  # the submission is made; the run stays as it is
            log.exception("address write-back for run %s stopped", run_id)

    # -- bookkeeping ------------------------------------------------------

    def _report(self, progress: Progress) -> None:
        if self.progress is None:
            return
        try:
            self.progress(progress)
        except Exception:  # a broken progress display must not break the sync
            log.exception("progress callback failed")

    async def _recover(self, connection: DataConnection) -> None:
        # Read the runs first: writing while a SQLite cursor is open fails as
        # "database is locked" when another process writes too.
        for run in list(
            SyncRun.select().where(
                (SyncRun.connection == connection.id) & needs_recovery()
            )
        ):
            await recover_run(self.runtime, run)


def _progress_of(run: SyncRun) -> Progress:
    return Progress(
        run_id=run.id,
        connection_id=run.connection_id or 0,
        phase=run.phase,
        fetched=run.fetched,
        imported=run.imported,
        failed=run.failed,
        skipped=run.skipped_duplicate,
        pages=run.pages,
    )


def _log_finish(run: SyncRun) -> None:
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


def full_read_due(connection: DataConnection, now: datetime | None = None) -> bool:
    """Whether the next sync reads the whole list or segment.

    The first sync does, and then one a day: a member Klaviyo adds with a
    joined_group_at older than the look-back window would otherwise never be
    fetched. Everyone already mailed for their membership is skipped as usual.
    """
    if connection.watermark is None or connection.full_read_at is None:
        return True
    return connection.full_read_at <= (now or utcnow()) - FULL_READ_EVERY


def fetch_from(connection: DataConnection, *, full: bool = False) -> datetime | None:
    """Where a fetch starts: the watermark less the look-back window, or, for a
    full read, the beginning (for "new joiners only", the connection's creation).
    """
    floor = connection.created_at if connection.new_joiners_only else None
    if full or connection.watermark is None:
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


def _usable_id(profile_id: str) -> bool:
    """Whether a profile id can be stored and sent as it is (no controls)."""
    # isprintable() refuses every whitespace character but the plain space.
    return (
        0 < len(profile_id) <= MAX_PROFILE_ID
        and profile_id.isprintable()
        and " " not in profile_id
    )


def _plain_text(value: str, limit: int = 255) -> str:
    """Outside text for a stored display column: one line, no controls."""
    try:
        return clean_text(value)[0][:limit]
    except NotText:
        return ""


class _Stager:
    """Turns pages of members into staged, failed or skipped outcomes."""

    def __init__(
        self,
        run: SyncRun,
        connection: DataConnection,
        mapping: dict[str, str],
        fields: list[CampaignField],
        *,
        verifier: AddressVerifier | None = None,
        fix_addresses: bool = False,
    ) -> None:
        self.run = run
        self.connection = connection
        self.mapping = mapping
        self.fields = fields
        self.records = RecordBuilder(mapping, fields, run.reference)
        self._encode = self.records.encode
        self.verifier = verifier
        self.fix_addresses = fix_addresses
        self.hold_back_days = int(settings.get("hold_back_days"))
        self.floor = connection.created_at if connection.new_joiners_only else None
        # Ledger rows of this connection all lie at or before this watermark.
        self.covered_to = connection.watermark
        self.watermark = connection.watermark
        self.fetched = self.staged = self.failed = self.skipped = self.pages = 0
        self._unstored: list[tuple[Any, ...]] = []
        self._stored_pages = 0
        self._stored_at = time.monotonic()

    def progress(self, phase: str) -> Progress:
        """The run's progress from the counts kept here."""
        return Progress(
            run_id=self.run.id,
            connection_id=self.connection.id,
            phase=phase,
            fetched=self.fetched,
            imported=0,
            failed=self.failed,
            skipped=self.skipped,
            pages=self.pages,
        )

    async def page(self, resources: list[Any]) -> None:
        """Stage one page of member resources; stored a few pages at a time.

        The look-ups against earlier runs happen here; the cleansing, mapping
        and encoding happen on a worker thread, so that the event loop
        meanwhile downloads the next page. The first page is stored at once,
        so that a run shows as fetching. Pages not yet stored were never sent:
        a run that ends before `store` forgets them, and the next fetch brings
        them again because the watermark has not moved.
        """
        profiles = self._profiles(resources)
        overlap = [p for p in profiles if self._covered(p.joined_group_at)]
        seen = self._already_mailed(overlap)
        reported = self._already_failed(overlap)
        held = self._held_back(profiles)
        # The request for the next page is sent before this page is worked
        # on: each turn of the loop lets it get a step further on its way.
        for _ in range(YIELDS_BEFORE_WORK):
            await asyncio.sleep(0)
        outcomes, values = self._rows(profiles, seen, reported, held, utcnow())
        self._count(outcomes)
        self._unstored.extend(values)
        self.fetched += len(resources)
        self.pages += 1
        if (
            len(self._unstored) >= STAGE_ROWS
            or self._stored_pages == 0
            or time.monotonic() - self._stored_at >= STAGE_SECONDS
        ):
            self.store()

    def store(self) -> None:
        """Write the outcomes staged since the last call and the run's counts.

        One transaction for many pages: each commit costs about as much as
        writing a page of rows.
        """
        if not self._unstored and self._stored_pages == self.pages:
            return
        values, self._unstored = self._unstored, []
        self._stored_pages = self.pages
        self._stored_at = time.monotonic()
        with database_proxy.atomic():
            if values and _insert_outcomes(values) != len(values):
                # Some were seen earlier in this run (a re-join mid-paging).
                self.recount()
                values = _kept(self.run.id, values)
            _record_failures(self.connection.id, values)
            SyncRun.update(
                fetched=self.fetched,
                failed=self.failed,
                skipped_duplicate=self.skipped,
                pages=self.pages,
                watermark_to=self.watermark,
                heartbeat_at=utcnow(),
            ).where(SyncRun.id == self.run.id).execute()

    def _rows(
        self,
        profiles: list[Profile],
        seen: set[tuple[str, Any]],
        reported: dict[tuple[str, Any], tuple[int, str]],
        held: set[str],
        now: datetime,
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Outcomes and database values for a page's profiles (no database use).

        Each row is a tuple in `_OUTCOME_FIELDS` order, built directly: this
        runs for every profile of a sync.
        """
        outcomes: list[str] = []
        values: list[tuple[Any, ...]] = []
        ids: set[str] = set()
        run_id = self.run.id
        stored_now = ProfileOutcome.created_at.db_value(now)
        joined_value = ProfileOutcome.joined_group_at.db_value
        for profile in profiles:
            if profile.id in ids:
                continue  # a re-join while paging: this run mails the first
            ids.add(profile.id)
            joined = profile.joined_group_at
            if joined is not None and (
                self.watermark is None or joined > self.watermark
            ):
                self.watermark = joined
            email = _plain_text(profile.email).casefold()
            outcome, reason, record, correction = self._outcome(
                profile, email, seen, reported, held
            )
            outcomes.append(outcome)
            values.append(
                (
                    run_id,
                    profile.id,
                    joined_value(joined),
                    _plain_text(profile.display_name),
                    email,
                    outcome,
                    reason,
                    record,
                    correction,
                    stored_now,
                )
            )
        return outcomes, values

    def finish(self) -> None:
        """Store what is left and make the run's counts exact from its rows."""
        self.store()
        recount(self.run.id)

    def _count(self, outcomes: list[str]) -> None:
        for outcome in outcomes:
            if outcome == "staged":
                self.staged += 1
            elif outcome == "failed":
                self.failed += 1
            else:
                self.skipped += 1

    def recount(self) -> None:
        """Set the counts kept here from the run's outcome rows."""
        counts = dict(
            ProfileOutcome.select(
                ProfileOutcome.outcome, pw.fn.COUNT(ProfileOutcome.id)
            )
            .where(ProfileOutcome.run == self.run.id)
            .group_by(ProfileOutcome.outcome)
            .tuples()
        )
        self.staged = counts.get("staged", 0)
        self.failed = counts.get("failed", 0)
        self.skipped = counts.get("duplicate", 0) + counts.get("held_back", 0)

    def _profiles(self, resources: list[Any]) -> list[Profile]:
        profiles = []
        for resource in resources:
            profile = Profile.from_resource(resource)
            if not _usable_id(profile.id):
                log.warning(
                    "run %s: Klaviyo sent a member without a usable profile id",
                    self.run.id,
                )
                continue
            if self.floor is not None and (
                profile.joined_group_at is not None
                and profile.joined_group_at <= self.floor
            ):
                continue
            profiles.append(profile)
        return profiles

    def _covered(self, joined: datetime | None) -> bool:
        """Whether an earlier run may already have handled this membership."""
        if joined is None:
            return True
        return self.covered_to is not None and joined <= self.covered_to

    def _outcome(
        self,
        profile: Profile,
        email: str,
        seen: set[tuple[str, Any]],
        reported: dict[tuple[str, Any], tuple[int, str]],
        held: set[str],
    ) -> tuple[str, str, str | None, str | None]:
        """(outcome, reason, record, correction) of one profile, as stored."""
        membership = (profile.id, profile.joined_group_at)
        if membership in seen:
            return "duplicate", "already mailed for this membership", None, None
        if profile.id in held or (email and email in held):
            reason = f"mailed within the last {self.hold_back_days} days"
            return "held_back", reason, None, None
        result = cleanse(profile, self.verifier)
        if not result.ok or result.address is None:
            reason = "; ".join(result.reasons) or "the address could not be used"
            return self._failed(reason, reported.get(membership))
        record, errors = self.records.build(profile, result.address)
        if record is None:
            reason = "; ".join(errors) or "the record could not be built"
            return self._failed(reason, reported.get(membership))
        correction = None
        # Only a correction that changes the Klaviyo location is kept: writing
        # "LONDON" back for "London" would correct nothing. With write-back off
        # only what changed is kept: the corrected address is in the record.
        if result.changes and location_needs_update(result.address, result.original):
            if self.fix_addresses:
                correction = {
                    "original": result.original,
                    "address": dict(vars(result.address)),
                    "changes": list(result.changes),
                    "write_back": "pending",
                }
            else:
                correction = {"changes": list(result.changes), "write_back": "off"}
        return (
            "staged",
            "",
            self._encode(record),
            None if correction is None else _JSON.encode(correction),
        )

    @staticmethod
    def _failed(
        reason: str, earlier: tuple[int, str] | None
    ) -> tuple[str, str, None, None]:
        if earlier is not None and earlier[1] == reason:
            # The look-back fetched it again; its failure is already on record.
            reason = f"already reported as failed in sync {earlier[0]}: {reason}"
            return "duplicate", reason, None, None
        return "failed", reason, None, None

    def _already_mailed(self, profiles: list[Profile]) -> set[tuple[str, Any]]:
        if not profiles:
            return set()
        query = SubmittedProfile.select(
            SubmittedProfile.profile_id, SubmittedProfile.joined_group_at
        ).where(
            (SubmittedProfile.connection == self.connection.id)
            & (SubmittedProfile.profile_id << [p.id for p in profiles])
        )
        return {(row.profile_id, row.joined_group_at) for row in query}

    def _already_failed(
        self, profiles: list[Profile]
    ) -> dict[tuple[str, Any], tuple[int, str]]:
        """Memberships an earlier run of this connection reported as failed."""
        if not profiles:
            return {}
        query = (
            ReportedFailure.select(
                ReportedFailure.profile_id,
                ReportedFailure.joined_group_at,
                ReportedFailure.run,
                ReportedFailure.reason,
            )
            .where(
                (ReportedFailure.connection == self.connection.id)
                & (ReportedFailure.profile_id << [p.id for p in profiles])
                & (ReportedFailure.run.is_null() | (ReportedFailure.run != self.run.id))
            )
            .tuples()
        )
        return {
            (profile_id, joined): (run_id or 0, reason)
            for profile_id, joined, run_id, reason in query
        }

    def _held_back(self, profiles: list[Profile]) -> set[str]:
        """Profile ids and emails mailed by any connection within the hold-back."""
        # A first look, per page; `begin_submitting` has the last word.
        if not self.hold_back_days or not profiles:
            return set()
        since = utcnow() - timedelta(days=self.hold_back_days)
        ids = [p.id for p in profiles]
        emails = [e for e in (_plain_text(p.email).casefold() for p in profiles) if e]
        found: set[str] = set()
        by_id = SubmittedProfile.select(SubmittedProfile.profile_id).where(
            (SubmittedProfile.profile_id << ids)
            & (SubmittedProfile.submitted_at > since)
        )
        found.update(row.profile_id for row in by_id)
        if emails:
            by_email = SubmittedProfile.select(SubmittedProfile.email).where(
                (SubmittedProfile.email << emails)
                & (SubmittedProfile.submitted_at > since)
            )
            found.update(row.email for row in by_email)
        return found


_OUTCOME_FIELDS = (
    "run",
    "profile_id",
    "joined_group_at",
    "display_name",
    "email",
    "outcome",
    "reason",
    "record",
    "correction",
    "created_at",
)


_OUTCOME_COLUMNS = [ProfileOutcome._meta.fields[name] for name in _OUTCOME_FIELDS]


# The same text JsonField writes, from one reusable encoder: json.dumps with
# options builds a new encoder for every call.
_JSON = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


def _insert_outcomes(values: list[tuple[Any, ...]]) -> int:
    """Insert outcome rows, skipping profiles the run already has; how many went in.

    Written as one prepared statement rather than through the query builder,
    which costs more per row than cleansing the profile does.
    """
    database = database_proxy.obj
    columns = ", ".join(f'"{field.column_name}"' for field in _OUTCOME_COLUMNS)
    one_row = "(" + ", ".join([database.param] * len(_OUTCOME_COLUMNS)) + ")"
    head = f'INSERT INTO "{ProfileOutcome._meta.table_name}" ({columns})'
    if is_postgres(database):
        sql = (
            f"{head} VALUES {', '.join([one_row] * len(values))} ON CONFLICT DO NOTHING"
        )
        cursor = database.execute_sql(sql, [item for row in values for item in row])
    else:
        cursor = database.cursor()
        cursor.executemany(f"{head} VALUES {one_row} ON CONFLICT DO NOTHING", values)
    return cursor.rowcount


def _kept(run_id: int, values: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The failed outcome rows among `values` that the run's rows hold."""
    failed = [row for row in values if row[5] == "failed"]
    if not failed:
        return []
    held = {
        (profile_id, ProfileOutcome.joined_group_at.db_value(joined))
        for profile_id, joined in ProfileOutcome.select(
            ProfileOutcome.profile_id, ProfileOutcome.joined_group_at
        )
        .where(
            (ProfileOutcome.run == run_id)
            & (ProfileOutcome.profile_id << [row[1] for row in failed])
            & (ProfileOutcome.outcome == "failed")
        )
        .tuples()
    }
    return [row for row in failed if (row[1], row[2]) in held]


def _record_failures(connection_id: int, values: list[tuple[Any, ...]]) -> None:
    """Remember the memberships these outcome rows report as failed.

    A prepared statement, like `_insert_outcomes`: a page of failures through
    the query builder cost more than storing the page's outcomes.
    """
    failures = {
        (row[1], row[2]): (connection_id, row[1], row[2], row[0], row[6])
        for row in values
        if row[5] == "failed"
    }
    if not failures:
        return
    database = database_proxy.obj
    fields = ReportedFailure._meta.fields
    key = [fields[name].column_name for name in ("connection", "profile_id")]
    key.append(fields["joined_group_at"].column_name)
    kept = [fields[name].column_name for name in ("run", "reason")]
    marks = ", ".join([database.param] * (len(key) + len(kept)))
    # The same statement serves SQLite and PostgreSQL.
    sql = (
        f'INSERT INTO "{ReportedFailure._meta.table_name}" '
        f"({', '.join(key + kept)}) VALUES ({marks}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET "
        + ", ".join(f"{column} = excluded.{column}" for column in kept)
    )
    database.cursor().executemany(sql, list(failures.values()))


# PostgreSQL's advisory lock serialising `begin_submitting` across processes
# (SQLite's write lock, taken at BEGIN, does the same there).
_SUBMITTING_LOCK = 0x7A61707475690001


def begin_submitting(run_id: int, hold_back_days: int) -> int:
    """Move a run to submitting; how many of its staged profiles it held back.

    With the hold-back rule on, the per-page look at the ledger is not enough:
    another account's run may have mailed the same person since, or be sending
    them now. So this looks again, holding back anyone in the ledger within the
    window or staged by a run that is submitting, in one transaction that runs
    one at a time across processes: of two runs that staged one person, the
    second to get here holds them back.
    """
    with database_proxy.atomic():
        held = 0
        if hold_back_days:
            if is_postgres():
                database_proxy.execute_sql(
                    "SELECT pg_advisory_xact_lock(%s)", (_SUBMITTING_LOCK,)
                )
            held = _hold_back_mailed(run_id, hold_back_days)
            held += _hold_back_in_flight(run_id, hold_back_days)
        SyncRun.update(phase="submitting", heartbeat_at=utcnow()).where(
            SyncRun.id == run_id
        ).execute()
    return held


def _outcome_sql() -> tuple[str, str]:
    """The outcome table's quoted name and its database's parameter mark."""
    return f'"{ProfileOutcome._meta.table_name}"', database_proxy.obj.param


def _held_back_columns(mark: str) -> str:
    """SET clause of a staged row held back: its record was never sent, so it
    is not kept; the reason is the statement's first parameter."""
    return f"outcome = 'held_back', record = NULL, reason = {mark}"


def _hold_back_mailed(run_id: int, days: int) -> int:
    """Hold back the run's staged profiles the ledger has within `days`."""
    outcomes, mark = _outcome_sql()
    ledger = f'"{SubmittedProfile._meta.table_name}"'
    since = SubmittedProfile.submitted_at.db_value(utcnow() - timedelta(days=days))
    # Correlated, so that each staged row probes the hold-back indexes rather
    # than the ledger's whole window being gathered first.
    cursor = database_proxy.execute_sql(
        f"UPDATE {outcomes} SET {_held_back_columns(mark)} "
        f"WHERE run_id = {mark} AND outcome = 'staged' AND ("
        f"EXISTS (SELECT 1 FROM {ledger} l WHERE l.profile_id = "
        f"{outcomes}.profile_id AND l.submitted_at > {mark}) OR "
        f"({outcomes}.email <> '' AND EXISTS (SELECT 1 FROM {ledger} l "
        f"WHERE l.email = {outcomes}.email AND l.submitted_at > {mark})))",
        (f"mailed within the last {days} days", run_id, since, since),
    )
    return cursor.rowcount


def _hold_back_in_flight(run_id: int, days: int) -> int:
    """Hold back the run's staged profiles another submitting run has staged."""
    others = [
        other
        for (other,) in SyncRun.select(SyncRun.id)
        .where((SyncRun.phase == "submitting") & (SyncRun.id != run_id))
        .tuples()
    ]
    if not others:
        return 0
    outcomes, mark = _outcome_sql()
    runs = ", ".join([mark] * len(others))
    staged = f"FROM {outcomes} o WHERE o.run_id IN ({runs}) AND o.outcome = 'staged'"
    cursor = database_proxy.execute_sql(
        f"UPDATE {outcomes} SET {_held_back_columns(mark)} "
        f"WHERE run_id = {mark} AND outcome = 'staged' AND ("
        f"profile_id IN (SELECT o.profile_id {staged}) OR "
        f"(email <> '' AND email IN (SELECT o.email {staged} AND o.email <> '')))",
        (
            f"being mailed by another sync now (hold-back of {days} days)",
            run_id,
            *others,
            *others,
        ),
    )
    return cursor.rowcount


# -- shared by a live run and recovery ----------------------------------------


def staged_records(
    run_id: int, chunk: int = SUBMIT_CHUNK
) -> Iterator[EncodedRecord | dict]:
    """The run's staged records in a stable order, read a chunk at a time.

    Each comes as the JSON text stored, which the submission sends unchanged.
    """
    last_id = 0
    while True:
        query = (
            ProfileOutcome.select(ProfileOutcome.id, ProfileOutcome.record)
            .where(
                (ProfileOutcome.run == run_id)
                & (ProfileOutcome.outcome == "staged")
                & (ProfileOutcome.id > last_id)
            )
            .order_by(ProfileOutcome.id)
            .limit(chunk)
        )
        # Read from the cursor itself: the model would decode every record.
        rows = database_proxy.execute(query).fetchall()
        if not rows:
            return
        for row_id, record in rows:
            last_id = row_id
            yield EncodedRecord(record) if isinstance(record, str) else record


async def submit_staged(
    zap: Any, run_id: int, campaign_id: str, reference: str
) -> SubmissionResult:
    """Send the run's staged records as one submission with the run's reference."""
    return await zap.create_submission(
        campaign_id, lambda: staged_records(run_id), reference=reference
    )


async def _find_quietly(
    zap: Any, campaign_id: str, reference: str
) -> SubmissionResult | None:
    """The submission made under a reference, or None (also when ZAP~POST fails)."""
    try:
        return await zap.find_submission(campaign_id, reference)
    except (ZapPostError, httpx.HTTPError) as error:
        log.warning("could not look for submission %s: %s", reference, error)
        return None


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


def _rejections(result: SubmissionResult) -> list[dict[str, Any]]:
    """ZAP~POST's rejected records as the run keeps them: who, and why."""
    kept = []
    for invalid in result.invalid[:MAX_STORED_REJECTIONS]:
        record = invalid.get("record")
        record = record if isinstance(record, dict) else {}
        kept.append(
            {
                "customerid": str(record.get("customerid", ""))[:MAX_PROFILE_ID],
                "errors": [str(e)[:500] for e in invalid.get("errors") or []][:20],
            }
        )
    return kept


def finalize(
    run_id: int,
    result: SubmissionResult | None,
    *,
    status: str | None = None,
    note: str = "",
) -> SyncRun:
    """Record a run's outcome, its ledger rows and the new watermark, atomically.

    `status` overrides the status the counts give (recovery marks a run it
    finished for a dead process "interrupted"); `note` replaces the run's error.
    """
    with database_proxy.atomic():
        run = SyncRun.get_by_id(run_id)
        if result is not None:
            for invalid in result.invalid:
                record = invalid.get("record")
                record = record if isinstance(record, dict) else {}
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
                _record_in_ledger(run)
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
        now = utcnow()
        SyncRun.update(
            status=status or run_status(run.imported, run.failed),
            phase="done",
            finished_at=now,
            submission_id=result.submission_id if result else None,
            submission_url=result.url if result else None,
            rejected_records=_rejections(result) if result and result.invalid else None,
            error=note or ("" if run.phase == "submitting" else run.error),
        ).where(SyncRun.id == run_id).execute()
        if run.connection_id is not None:
            changes: dict[Any, Any] = {
                DataConnection.last_sync_at: now,
                DataConnection.failing: False,
                DataConnection.last_error: "",
            }
            if run.watermark_to is not None:
                changes[DataConnection.watermark] = run.watermark_to
            if run.full_read:
                changes[DataConnection.full_read_at] = run.started_at
            if result is not None:
                changes[DataConnection.last_submission_at] = now
            DataConnection.update(changes).where(
                DataConnection.id == run.connection_id
            ).execute()
        return SyncRun.get_by_id(run_id)


def _record_in_ledger(run: SyncRun) -> None:
    source = ProfileOutcome.select(
        pw.Value(run.connection_id),
        ProfileOutcome.profile_id,
        ProfileOutcome.joined_group_at,
        ProfileOutcome.email,
        pw.Value(run.id),
        pw.Value(SubmittedProfile.submitted_at.db_value(utcnow())),
    ).where((ProfileOutcome.run == run.id) & (ProfileOutcome.outcome == "imported"))
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


def run_status(imported: int, failed: int) -> str:
    """A finished run's status from its counts."""
    if failed and imported:
        return "partial"
    if failed:
        return "failed"
    return "succeeded"


def _end_unsent(run_id: int, status: str, error: str) -> None:
    """End a run whose staged records were never sent; the next fetch has them."""
    with database_proxy.atomic():
        ProfileOutcome.update(outcome="not_sent").where(
            (ProfileOutcome.run == run_id) & (ProfileOutcome.outcome == "staged")
        ).execute()
        recount(run_id)
        SyncRun.update(
            status=status, phase="done", finished_at=utcnow(), error=error
        ).where(SyncRun.id == run_id).execute()


def _mark_connection_failing(connection_id: int | None, message: str) -> None:
    if connection_id is None:
        return
    DataConnection.update(
        last_error=message, last_sync_at=utcnow(), failing=True
    ).where(DataConnection.id == connection_id).execute()


def abandon_run(run_id: int, why: str) -> None:
    """End a run that sent nothing: its profiles will be fetched again next time."""
    run = SyncRun.get_or_none(SyncRun.id == run_id)
    if run is None or run.status not in UNFINISHED or run.phase == "submitting":
        return  # already ended elsewhere, or it may have sent: recovery decides
    _end_unsent(
        run_id,
        "interrupted",
        f"{why}; its profiles will be picked up by the next sync",
    )


def refuse_run(run_id: int, message: str) -> None:
    """End a run whose submission ZAP~POST refused outright (nothing was created)."""
    run = SyncRun.get_by_id(run_id)
    _end_unsent(
        run_id,
        "failed",
        f"{message}; nothing was submitted, and its profiles will be picked up "
        "by the next sync",
    )
    _mark_connection_failing(run.connection_id, message)


def mark_unconfirmed(run_id: int, message: str) -> None:
    """A submission ZAP~POST may or may not hold: fail the run, keep it recoverable."""
    run = SyncRun.get_by_id(run_id)
    error = (
        f"{message}; ZAP~POST has not confirmed the submission, so before the "
        "next sync it is checked and, if missing, resent under the same reference "
        "(nobody is mailed twice)"
    )
    with database_proxy.atomic():
        recount(run_id)
        SyncRun.update(status="failed", finished_at=utcnow(), error=error).where(
            SyncRun.id == run_id
        ).execute()
    _mark_connection_failing(run.connection_id, message)
    log.warning("run %s: submission unconfirmed: %s", run_id, message)


def fail_run(run_id: int, message: str, error: BaseException | None = None) -> None:
    """Record a failure; a run that may have submitted stays recoverable."""
    run = SyncRun.get_by_id(run_id)
    if run.phase == "done":
        return  # already recorded (finalized, refused or abandoned)
    if run.phase == "submitting":
        mark_unconfirmed(run_id, message)
        return
    _end_unsent(run_id, "failed", message)
    _mark_connection_failing(run.connection_id, message)
    if isinstance(error, Unauthorized | MissingScope) and run.connection_id:
        account_id = (
            DataConnection.select(DataConnection.account)
            .where(DataConnection.id == run.connection_id)
            .scalar()
        )
        Account.update(
            status="unauthorised"
            if isinstance(error, Unauthorized)
            else "missing scope",
            status_reason=message,
            checked_at=utcnow(),
        ).where(Account.id == account_id).execute()


async def recover_run(runtime: Runtime, run: SyncRun) -> SyncRun:
    """Finish a run left unfinished or unconfirmed (the caller holds the lease).

    Raises RecoveryFailed when ZAP~POST cannot say whether it holds the run's
    submission: then nothing may sync the connection until it can.
    """
    # TODO(zappost-reference): confirm with ZAP~POST that its submission list
    # shows the reference our records carry and that a resend under it is
    # recognised, as the simulator does; exactly-once recovery relies on both.
    if run.phase != "submitting":
        abandon_run(run.id, "interrupted before submitting (the process ended)")
        log.warning(
            "run %s was interrupted before submitting; nothing was sent", run.id
        )
        return SyncRun.get_by_id(run.id)
    connection = run.connection
    if connection is None:
        SyncRun.update(
            status="interrupted",
            phase="done",
            finished_at=utcnow(),
            error="its data connection was removed while it was submitting; "
            f"ZAP~POST may hold its records under reference {run.reference}",
        ).where(SyncRun.id == run.id).execute()
        return SyncRun.get_by_id(run.id)
    killed = run.status in UNFINISHED
    try:
        async with runtime.zappost() as zap:
            result = await zap.find_submission(connection.campaign_id, run.reference)
            if result is None:
                result = await submit_staged(
                    zap, run.id, connection.campaign_id, run.reference
                )
    except _REFUSED as error:
        refuse_run(run.id, f"resending the submission failed: {error}")
        return SyncRun.get_by_id(run.id)
    except (ZapPostError, httpx.HTTPError, ConfigurationError) as error:
        raise RecoveryFailed(
            f"sync {run.id} of data connection {connection.id} has a submission "
            f"ZAP~POST has not confirmed ({error}); no new sync of it starts "
            "until ZAP~POST answers, so nobody is mailed twice: try again later"
        ) from None
    if killed:
        note = (
            "interrupted while submitting; recovered: submission "
            f"{result.submission_id} holds its {result.accepted} records"
        )
    else:
        note = (
            f"ZAP~POST confirmed submission {result.submission_id} with "
            f"{result.accepted} records when checked again"
        )
    recovered = finalize(
        run.id, result, status="interrupted" if killed else None, note=note
    )
    log.warning("run %s recovered: %s", run.id, note)
    return recovered


async def recover_interrupted_runs(runtime: Runtime) -> list[SyncRun]:
    """At start-up: recover every unfinished run whose process is gone."""
    recovered = []
    for run in list(SyncRun.select().where(needs_recovery())):
        connection = run.connection
        if connection is None:
            if run.phase == "submitting":
                recovered.append(await recover_run(runtime, run))
            else:
                abandon_run(run.id, "its data connection was removed")
            continue
        owner = runtime.owner
        if not leases.acquire_for_sync(connection.id, connection.account_id, owner):
            continue  # a live process still owns it
        try:
            fresh = SyncRun.get_by_id(run.id)
            if (
                SyncRun.select()
                .where((SyncRun.id == run.id) & needs_recovery())
                .exists()
            ):
                recovered.append(await recover_run(runtime, fresh))
        except RecoveryFailed as error:
            log.warning("%s", error)
        finally:
            leases.release(DataConnection, connection.id, owner)
            leases.release(Account, connection.account_id, owner)
    return recovered
