"""The SyncScheduler: an APScheduler AsyncIOScheduler that starts due syncs.

It runs on the caller's event loop (the console's, or the headless mode's).
APScheduler keeps the time: a poll every `poll_seconds` wakes the dispatcher,
which claims due connections whose account is free (skipping busy ones and
moving on) and syncs each in a thread of its own pool, so a running sync never
blocks the loop. Every database call is made from a thread too. When a
connection is due comes from the database alone (see `due`), so any number of
schedulers in any number of processes can share one database.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from zaptui import settings
from zaptui.apilog import redact_text
from zaptui.clock import utcnow
from zaptui.scheduler import alerts, heartbeat, pruning
from zaptui.scheduler.due import EARLIEST, due_at, due_connections, is_due, period
from zaptui.scheduler.events import SchedulerEvent
from zaptui.services import ServiceError, Services
from zaptui.store.models import Account, DataConnection, SyncRun
from zaptui.sync import leases
from zaptui.sync.engine import Progress, SyncBusy, SyncRefused

log = logging.getLogger(__name__)

POLL_SECONDS = 30.0
POLL_SECONDS_ENV = "ZAPTUI_SCHEDULER_POLL_SECONDS"
PARALLEL_ENV = "ZAPTUI_SCHEDULER_PARALLEL"
PRUNE_CHECK_MINUTES = 30
ALERT_RETRY_SECONDS = 30.0  # how often alerts the webhook missed are retried
MODES = ("console", "headless")

EventCallback = Callable[[SchedulerEvent], None]
ProgressCallback = Callable[[Progress], None]


def _env_number(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    try:
        value = float(text)
    except ValueError:
        return default
    return value if value > 0 else default


@dataclass
class _InFlight:
    """A sync this scheduler is running."""

    connection_id: int
    account_id: int
    name: str
    stop: threading.Event = field(default_factory=threading.Event)


class SyncScheduler:
    """Polls the active data connections and syncs each when it is due.

    `on_event` is always called from a worker thread, never from the event
    loop, so a console may hand it on with `app.call_from_thread`.
    """

    def __init__(
        self,
        services: Services,
        *,
        mode: str = "console",
        on_event: EventCallback | None = None,
        on_progress: ProgressCallback | None = None,
        poll_seconds: float | None = None,
        parallel: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        self.services = services
        self.mode = mode
        self.on_event = on_event
        self.on_progress = on_progress
        self.owner = services.runtime.owner
        self.poll_seconds = poll_seconds or _env_number(POLL_SECONDS_ENV, POLL_SECONDS)
        self.parallel = max(1, int(parallel or _env_number(PARALLEL_ENV, 1)))
        self.failed_syncs = 0
        self.finished_runs: list[int] = []
        self._pool = ThreadPoolExecutor(
            max_workers=self.parallel, thread_name_prefix="zaptui-sync"
        )
        self._inflight: dict[int, _InFlight] = {}
        self._lock = threading.Lock()
        self._reported_busy: set[int] = set()
        self._futures: set[asyncio.Future[Any]] = set()
        self._scheduler: AsyncIOScheduler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._forgetting: asyncio.Future[Any] | None = None
        self._closing = False
        # Set by each poll and refresh: the next dispatch also does the
        # housekeeping that looks at every connection. A dispatch woken by a
        # finished sync only claims the next one.
        self._look_around = True
        self._frequency: int | None = None  # re-read at each poll and refresh

    # -- the contract ------------------------------------------------------------

    def start(self) -> None:
        """Start polling; call from a running asyncio loop (AsyncIOScheduler)."""
        if self._scheduler is not None:
            return
        self._bind_loop()
        self._start_jobs(poll=True)
        assert self._loop is not None
        self._dispatcher = self._loop.create_task(self._dispatch_loop())
        log.info(
            "scheduler started (%s, polling every %gs)", self.mode, self.poll_seconds
        )

    def refresh(self) -> None:
        """Re-read the frequency and the connections (after a settings change,
        pause, resume, remove or create); takes effect at once.

        Safe to call from any thread.
        """
        if self._loop is None or self._wake is None or self._closing:
            return
        self._look_around = True
        self._loop.call_soon_threadsafe(self._wake.set)

    def shutdown(self) -> None:
        """Stop; a sync in flight stops at a safe point.

        Returns at once; `drain()` waits for the syncs in flight to end.
        """
        if self._closing:
            return
        self._closing = True
        with self._lock:
            for inflight in self._inflight.values():
                inflight.stop.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        if self._wake is not None:
            self._wake.set()
        self._pool.shutdown(wait=False)
        if self._loop is not None and self._loop.is_running():
            self._forgetting = self._loop.run_in_executor(
                None, heartbeat.forget, self.owner
            )
        if self._dispatcher is not None:
            log.info("scheduler stopping (%s)", self.mode)

    # -- beyond the contract -----------------------------------------------------

    async def drain(self) -> None:
        """Wait until the syncs in flight have ended (after `shutdown`)."""
        waiting = [f for f in self._futures if not f.done()]
        if self._dispatcher is not None:
            waiting.append(self._dispatcher)
        if self._forgetting is not None:
            waiting.append(self._forgetting)
        if waiting:
            await asyncio.gather(*waiting, return_exceptions=True)
        if self._closing:
            await self._chore(heartbeat.forget, self.owner)

    async def run_once(self) -> int:
        """Sync every connection due now, then stop; how many syncs failed.

        Connections another process holds are skipped, not waited for.
        """
        self._bind_loop()
        self._start_jobs(poll=False)
        assert self._wake is not None
        try:
            await self._chore(self._recover)
            await self._deliver_alerts()  # what earlier runs could not deliver
            while not self._closing:
                await self._dispatch()
                if not self._futures:
                    break
                await self._wake.wait()
                self._wake.clear()
        finally:
            self.shutdown()
            await self.drain()
        return self.failed_syncs

    @property
    def running(self) -> list[int]:
        """The data connections this scheduler is syncing now."""
        with self._lock:
            return sorted(self._inflight)

    # -- wiring ----------------------------------------------------------------

    def _bind_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()

    def _start_jobs(self, *, poll: bool) -> None:
        scheduler = AsyncIOScheduler(event_loop=self._loop, timezone=UTC)
        now = datetime.now(UTC)
        every = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
        if poll:
            scheduler.add_job(
                self._poll,
                IntervalTrigger(seconds=self.poll_seconds),
                id="poll",
                next_run_time=now,
                **every,
            )
            scheduler.add_job(
                self._prune,
                IntervalTrigger(minutes=PRUNE_CHECK_MINUTES),
                id="prune",
                next_run_time=now + timedelta(seconds=min(60, self.poll_seconds)),
                **every,
            )
            scheduler.add_job(
                self._deliver_alerts,
                IntervalTrigger(seconds=ALERT_RETRY_SECONDS),
                id="alerts",
                **every,
            )
        scheduler.add_job(
            self._beat,
            IntervalTrigger(seconds=heartbeat.HEARTBEAT_SECONDS),
            id="heartbeat",
            next_run_time=now,
            **every,
        )
        scheduler.add_job(
            self._renew_holds,
            IntervalTrigger(seconds=max(0.5, leases.lease_seconds() / 3)),
            id="holds",
            **every,
        )
        scheduler.start()
        self._scheduler = scheduler

    async def _poll(self) -> None:
        self._look_around = True
        if self._wake is not None:
            self._wake.set()

    async def _beat(self) -> None:
        if not self._closing:
            await self._chore(heartbeat.beat, self.owner, self.mode)

    async def _prune(self) -> None:
        await self._chore(pruning.prune_if_due, self.owner)

    async def _deliver_alerts(self) -> None:
        await self._chore(self._deliver, None)

    def _deliver(self, connection_ids: list[int] | None) -> None:
        """Send the alerts due; each the webhook never took is told the console."""
        done = alerts.deliver_pending(connection_ids)
        for connection_id, about in done.undelivered:
            self._emit(
                SchedulerEvent(
                    "alert_undelivered",
                    connection_id,
                    f"The alert webhook never took {about}: it was given up "
                    "after a day of retries.",
                ),
                logging.ERROR,
                logged=True,  # the alerts module's own line says so
            )

    async def _renew_holds(self) -> None:
        await self._chore(self._keep_holds)

    async def _chore(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run a database chore in a thread; a failure is logged, never raised."""
        try:
            await asyncio.to_thread(fn, *args)
        except Exception as error:
            log.error("scheduler %s failed: %s", _name(fn), error)
            log.debug("scheduler chore failed", exc_info=True)

    # -- dispatching -------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        assert self._wake is not None
        await self._chore(self._recover)
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            if self._closing:
                break
            try:
                await self._dispatch()
            except Exception as error:
                log.error("scheduler poll failed: %s", error)
                log.debug("scheduler poll failed", exc_info=True)

    async def _dispatch(self) -> None:
        """Claim and start due syncs until the slots are full or none is free."""
        if self._look_around or self._frequency is None:
            self._look_around = False
            self._frequency = await asyncio.to_thread(self._housekeep)
        frequency = self._frequency
        while not self._closing and len(self._futures) < self.parallel:
            if not await self._start_one(frequency):
                return

    async def _start_one(self, frequency: int) -> bool:
        """Claim one due connection and start syncing it; False if none is free."""
        assert self._loop is not None
        claimed: concurrent.futures.Future[int | None] = concurrent.futures.Future()
        try:
            future = self._loop.run_in_executor(
                self._pool, self._claim_and_sync, frequency, claimed
            )
        except RuntimeError:  # the pool was shut down: we are stopping
            return False
        self._futures.add(future)
        future.add_done_callback(self._sync_done)
        if await asyncio.wrap_future(claimed) is None:
            await asyncio.gather(future, return_exceptions=True)
            return False
        return True

    def _sync_done(self, future: asyncio.Future[Any]) -> None:
        self._futures.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("scheduled sync crashed: %s", future.exception())
        if self._wake is not None:
            self._wake.set()

    def _recover(self) -> None:
        """At start-up: finish the runs a process that ended left unfinished."""
        recovered = self.services.recover()
        if recovered:
            log.info("recovered %d interrupted run(s)", len(recovered))

    def _housekeep(self) -> int:
        """Each poll: read the frequency, stop syncs of connections paused or
        removed meanwhile, raise alerts left by manual syncs, update plans."""
        frequency = _frequency()
        with self._lock:
            inflight = dict(self._inflight)
        if inflight:
            active = {
                row.id
                for row in DataConnection.select(DataConnection.id).where(
                    (DataConnection.id << list(inflight))
                    & (DataConnection.status == "active")
                )
            }
            for connection_id, sync in inflight.items():
                if connection_id not in active and not sync.stop.is_set():
                    log.info(
                        "data connection %d was paused or removed: its sync stops "
                        "at a safe point",
                        connection_id,
                    )
                    sync.stop.set()
        for alert in alerts.observe():
            # Whichever path sees the change first, the alert names its run.
            self._raise_alert(alert, _latest_run(alert.connection_id))
        _write_plans(frequency)
        return frequency

    def _claim(self, frequency: int) -> leases.Claim:
        with self._lock:
            here = set(self._inflight)
            accounts_here = {sync.account_id for sync in self._inflight.values()}
        now = utcnow()
        rows = leases.read_candidates(_maybe_due(frequency, now))
        candidates = [
            row
            for row in due_connections(rows, frequency, now)
            if row.id not in here and row.account_id not in accounts_here
        ]
        return leases.claim_due(
            candidates,
            self.owner,
            lambda fresh: is_due(fresh, frequency, utcnow()),
        )

    def _claim_and_sync(
        self, frequency: int, claimed: concurrent.futures.Future[int | None]
    ) -> None:
        """In a sync thread: claim a due connection, then sync it here.

        The claim and the sync share a thread because holds are recorded per
        thread (see `leases`).
        """
        try:
            claim = self._claim(frequency) if not self._closing else leases.Claim()
        except BaseException as error:
            claimed.set_exception(error)
            return
        connection = claim.connection
        if connection is None:
            claimed.set_result(None)
            self._report_busy(claim.busy, complete=True)
            return
        sync = _InFlight(connection.id, connection.account_id, connection.name)
        with self._lock:
            self._inflight[connection.id] = sync
            if self._closing:  # shutdown came while this claim was being made
                sync.stop.set()
        claimed.set_result(connection.id)
        self._report_busy(claim.busy, complete=False)
        try:
            if not sync.stop.is_set():
                self._sync(sync, frequency)
        finally:
            # The engine gives its holds back; these are left only if it never
            # took them (refused, or the connection was removed meanwhile).
            for model, row_id in (
                (DataConnection, sync.connection_id),
                (Account, sync.account_id),
            ):
                if leases.held_in_this_process(model, row_id):
                    leases.release(model, row_id, self.owner)
            with self._lock:
                self._inflight.pop(sync.connection_id, None)

    def _sync(self, sync: _InFlight, frequency: int) -> None:
        """Run one scheduled sync and tell the console and the log how it went."""
        label = f"data connection {sync.connection_id} ({sync.name})"
        self._emit(
            SchedulerEvent(
                "sync_started", sync.connection_id, f"Sync of {label} started."
            ),
            logging.INFO,
        )
        try:
            run = self.services.sync_now(
                sync.connection_id,
                progress=self.on_progress,
                stop=sync.stop,
                trigger="scheduled",
            )
        except SyncBusy:
            self._emit(
                SchedulerEvent(
                    "skipped_busy",
                    sync.connection_id,
                    f"Skipped {label}: another process is syncing it or its "
                    "Klaviyo account.",
                ),
                logging.INFO,
            )
            return
        except (SyncRefused, ServiceError) as error:
            # Paused or removed since the claim, or refused by the engine: the
            # sync announced above ends here, without a run.
            self._emit(
                SchedulerEvent(
                    "sync_finished",
                    sync.connection_id,
                    f"Sync of {label} did not run: {error}",
                ),
                logging.WARNING,
            )
            return
        except Exception as error:
            self._count_failure()
            log.debug("scheduled sync raised", exc_info=True)
            self._emit(
                SchedulerEvent(
                    "sync_failed",
                    sync.connection_id,
                    f"Sync of {label} failed: {error}",
                ),
                logging.ERROR,
            )
            return
        self.finished_runs.append(run.id)
        self._report_run(run, label)
        for alert in alerts.observe([sync.connection_id]):
            self._raise_alert(alert, run.id)
        _write_plans(frequency, [sync.connection_id])

    def _report_run(self, run: SyncRun, label: str) -> None:
        counts = (
            f"fetched {run.fetched}, imported {run.imported}, failed {run.failed}, "
            f"skipped {run.skipped_duplicate}"
        )
        if run.status == "failed":
            self._count_failure()
            event = SchedulerEvent(
                "sync_failed",
                run.connection_id,
                f"Sync of {label} failed: {run.error or 'see the sync history'} "
                f"({counts}).",
                run.id,
            )
            self._emit(event, logging.ERROR, run=run)
            return
        if run.status == "interrupted":
            text = f"Sync of {label} stopped at a safe point ({counts}): {run.error}"
        else:
            text = f"Sync of {label} {run.status}: {counts}."
        level = logging.WARNING if run.status != "succeeded" else logging.INFO
        self._emit(
            SchedulerEvent("sync_finished", run.connection_id, text, run.id),
            level,
            run=run,
        )

    def _count_failure(self) -> None:
        with self._lock:
            self.failed_syncs += 1

    def _report_busy(self, busy: list[int], *, complete: bool) -> None:
        """Tell of connections skipped because another process holds them, once
        each time one becomes busy rather than at every poll."""
        with self._lock:
            new = [c for c in busy if c not in self._reported_busy]
            if complete:
                self._reported_busy = set(busy)
            else:
                self._reported_busy.update(busy)
        if not new:
            return
        names = dict(
            DataConnection.select(DataConnection.id, DataConnection.name)
            .where(DataConnection.id << new)
            .tuples()
        )
        for connection_id in new:
            self._emit(
                SchedulerEvent(
                    "skipped_busy",
                    connection_id,
                    f"Skipped data connection {connection_id} "
                    f"({names.get(connection_id, 'removed')}): another process is "
                    "syncing it or its Klaviyo account.",
                ),
                logging.INFO,
            )

    def _raise_alert(self, alert: alerts.Alert, run_id: int | None) -> None:
        self._emit(
            SchedulerEvent(alert.kind, alert.connection_id, alert.message, run_id),
            logging.ERROR,
        )
        self._deliver([alert.connection_id])  # a failure is retried later

    def _keep_holds(self) -> None:
        """Renew the holds of the syncs in flight, so a short lease never lapses
        under a running sync; a hold taken over by another process stops it."""
        with self._lock:
            inflight = list(self._inflight.values())
        for sync in inflight:
            kept = leases.renew(DataConnection, sync.connection_id, self.owner)
            leases.renew(Account, sync.account_id, self.owner)
            if kept:
                continue
            holder = (
                DataConnection.select(DataConnection.lease_owner)
                .where(DataConnection.id == sync.connection_id)
                .scalar()
            )
            if holder and holder != self.owner and not sync.stop.is_set():
                log.warning(
                    "data connection %d is now held by another process: its sync "
                    "here stops at a safe point",
                    sync.connection_id,
                )
                sync.stop.set()

    def _emit(
        self,
        event: SchedulerEvent,
        level: int,
        run: SyncRun | None = None,
        *,
        logged: bool = False,
    ) -> None:
        """Log an event as one line (unless `logged` already) and hand it to the
        console."""
        event = SchedulerEvent(
            event.kind, event.connection_id, redact_text(event.message), event.run_id
        )
        extra: dict[str, Any] = {
            "event": event.kind,
            "connection_id": event.connection_id,
            "run_id": event.run_id,
        }
        if run is not None:
            extra.update(
                status=run.status,
                fetched=run.fetched,
                imported=run.imported,
                failed=run.failed,
                skipped=run.skipped_duplicate,
            )
        if not logged:
            log.log(level, "%s", event.message, extra={"zaptui": extra})
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:
            log.exception("the scheduler's event handler failed")


def _maybe_due(frequency: int, now: datetime) -> Any:
    """A SQL filter passing every connection `due` may find due (and few
    others), so a claim reads only the rows that matter."""
    last = DataConnection.last_sync_at
    return (
        last.is_null()
        | (last <= now - period(frequency))
        | (DataConnection.resumed_at > last)
    )


def _latest_run(connection_id: int) -> int | None:
    """The connection's last finished run: the one that moved its alert state."""
    return (
        SyncRun.select(SyncRun.id)
        .where(
            (SyncRun.connection == connection_id) & SyncRun.finished_at.is_null(False)
        )
        .order_by(SyncRun.id.desc())
        .limit(1)
        .scalar()
    )


def _frequency() -> int:
    return int(settings.get("sync_frequency_hours"))


def _write_plans(frequency: int, connection_ids: list[int] | None = None) -> None:
    """Keep `next_sync_at` showing when each connection is next due (for display;
    the schedule itself is computed from the last sync, see `due`)."""
    query = DataConnection.select(
        DataConnection.id,
        DataConnection.status,
        DataConnection.created_at,
        DataConnection.resumed_at,
        DataConnection.last_sync_at,
        DataConnection.next_sync_at,
    )
    if connection_ids is not None:
        query = query.where(DataConnection.id << connection_ids)
    for row in list(query):  # read it all before writing (see alerts.observe)
        planned = due_at(row, frequency)
        if planned == EARLIEST or planned == row.next_sync_at:
            continue
        DataConnection.update(next_sync_at=planned).where(
            DataConnection.id == row.id
        ).execute()


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", "chore").strip("_").replace("_", " ")
