"""Data Connections: each Klaviyo list or segment paired with a campaign."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import peewee as pw
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Static
from textual.worker import Worker

from zaptui.clock import format_utc
from zaptui.services import ServiceError, Services
from zaptui.store.models import DataConnection, SyncRun
from zaptui.sync.engine import Progress, SyncBusy, SyncRefused
from zaptui.ui.confirm import ConfirmScreen
from zaptui.ui.messages import DataChanged
from zaptui.ui.screens.mapping import MappingScreen
from zaptui.ui.screens.new_connection import NewConnectionScreen
from zaptui.ui.tabs import Command, Tone, report_worker_failure, theme_tone, toast
from zaptui.ui.text import literal
from zaptui.ui.widgets.keyed_table import KeyedTable

COLUMNS = (
    ("source", "Connected data"),
    ("name", "Connection name"),
    ("type", "Type"),
    ("last_submission", "Last submission"),
    ("status", "Status"),
)
NAME_WIDTH = 20
RELOAD_SECONDS = 15.0
STATE_TONES = {"active": "success", "paused": "warning", "error": "error"}
SYNC_HELP = "the selected data connection, after saying what will be mailed"
MAP_HELP = "which profile field fills each campaign field"
NEW_HELP = "pair a list or segment with a campaign"
RESULT_SEVERITY = {
    "succeeded": "information",
    "partial": "warning",
    "failed": "error",
    "interrupted": "error",
}


@dataclass(frozen=True)
class RunSummary:
    """What one sync run did, in numbers."""

    status: str
    started_at: datetime | None
    fetched: int
    imported: int
    failed: int
    skipped: int

    def describe(self) -> str:
        """One line: status, time and counts."""
        return (
            f"{self.status} {format_utc(self.started_at)}: {self.fetched:,} "
            f"fetched, {self.imported:,} imported, {self.failed:,} failed, "
            f"{self.skipped:,} skipped"
        )


@dataclass(frozen=True)
class ConnectionRow:
    """One data connection as the table shows it."""

    id: int
    name: str
    source_name: str
    source_type: str
    campaign_name: str
    account_name: str
    state: str  # active, paused or error
    last_submission_at: datetime | None
    last_error: str
    running: bool
    last_run: RunSummary | None


def _state(connection: DataConnection) -> str:
    if connection.status == "paused":
        return "paused"
    if connection.status == "error" or connection.failing or connection.last_error:
        return "error"
    return "active"


def _summary(run: SyncRun) -> RunSummary:
    return RunSummary(
        run.status,
        run.started_at,
        run.fetched,
        run.imported,
        run.failed,
        run.skipped_duplicate,
    )


def load_connection_rows(services: Services) -> list[ConnectionRow]:
    """Every data connection with its latest run (blocking: database reads)."""
    connections = services.connections()
    ids = [connection.id for connection in connections]
    latest: dict[int, RunSummary] = {}
    running: set[int] = set()
    if ids:
        newest = (
            SyncRun.select(pw.fn.MAX(SyncRun.id))
            .where(SyncRun.connection << ids)
            .group_by(SyncRun.connection)
        )
        for run in SyncRun.select().where(SyncRun.id << newest):
            latest[run.connection_id] = _summary(run)
            if run.status == "running":
                running.add(run.connection_id)
    return [
        ConnectionRow(
            id=connection.id,
            name=connection.name,
            source_name=connection.source_name,
            source_type=connection.source_type,
            campaign_name=connection.campaign_name,
            account_name=connection.account.name,
            state=_state(connection),
            last_submission_at=connection.last_submission_at,
            last_error=connection.last_error,
            running=connection.id in running,
            last_run=latest.get(connection.id),
        )
        for connection in connections
    ]


def progress_text(progress: Progress | None) -> str:
    """A running sync's Status cell, kept short: its phase and profiles so far."""
    if progress is None:
        return "syncing…"
    if progress.phase == "submitting":
        return f"sending {progress.fetched - progress.failed - progress.skipped:,}"
    return f"syncing {progress.fetched:,}"


def progress_detail(progress: Progress | None) -> str:
    """A running sync's counts in full, for the detail line."""
    if progress is None:
        return "starting"
    return (
        f"{progress.phase}, {progress.fetched:,} fetched, {progress.failed:,} "
        f"failed, {progress.skipped:,} skipped"
    )


def result_text(run: SyncRun) -> str:
    """A finished sync's counts for its Status cell, until the next change."""
    return f"{run.status}: {run.imported:,} imported, {run.failed:,} failed"


class DataConnectionsTab(Widget):
    """The data connections: sync, pause, resume, map, remove and create them."""

    BINDINGS = [
        Binding("s", "sync_now", "Sync now", tooltip=SYNC_HELP),
        Binding("p", "pause", "Pause", tooltip="the selected data connection"),
        Binding("r", "resume", "Resume", tooltip="the selected data connection"),
        Binding("m", "map_data", "Map data", tooltip=MAP_HELP),
        Binding("x", "remove", "Remove", tooltip="unpair the selected list or segment"),
        Binding("n", "new_connection", "New", tooltip=NEW_HELP),
    ]

    class Loaded(Message):
        """The data connections were read from the database."""

        def __init__(self, rows: list[ConnectionRow]) -> None:
            super().__init__()
            self.rows = rows

    class SyncProgress(Message):
        """A sync started here has got further."""

        def __init__(self, progress: Progress) -> None:
            super().__init__()
            self.progress = progress

    class SyncEnded(Message):
        """A sync started here has finished, or could not start."""

        def __init__(
            self, row: ConnectionRow, run: SyncRun | None, refusal: str = ""
        ) -> None:
            super().__init__()
            self.row = row
            self.run = run
            self.refusal = refusal

    def __init__(self, services: Services, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.services = services
        self.rows: dict[str, ConnectionRow] = {}
        self.syncing: dict[int, Progress | None] = {}
        self._local: set[int] = set()
        self.results: dict[int, str] = {}
        self._stop = threading.Event()
        self._select_after_load: str | None = None

    def compose(self) -> ComposeResult:
        yield KeyedTable(COLUMNS, id="connections-table")
        yield Static(id="connection-detail", classes="detail")

    def on_mount(self) -> None:
        self.reload()
        # Other processes (a headless scheduler, the CLI) change things too.
        self.set_interval(RELOAD_SECONDS, self.reload)

    def on_unmount(self) -> None:
        self._stop.set()  # syncs in flight end at their next safe point

    def reload(self) -> None:
        """Read the data connections again."""
        self._load()

    def commands(self) -> list[Command]:
        """Command-palette entries for this tab."""
        return [
            ("Sync now", "Sync the selected data connection now", self.action_sync_now),
            ("Pause data connection", "Stop syncing the selected data connection",
             self.action_pause),
            ("Resume data connection", "Sync the selected data connection again",
             self.action_resume),
            ("Map data", "Choose which profile field fills each campaign field",
             self.action_map_data),
            ("Remove data connection", "Unpair the selected list or segment",
             self.action_remove),
            ("New data connection", "Pair a list or segment with a campaign",
             self.action_new_connection),
        ]  # fmt: skip

    @property
    def table(self) -> KeyedTable:
        """The data connections table."""
        return self.query_one("#connections-table", KeyedTable)

    def selected(self) -> ConnectionRow | None:
        """The data connection under the cursor."""
        key = self.table.selected_key()
        return self.rows.get(key) if key is not None else None

    # -- loading and showing ---------------------------------------------------

    @work(thread=True, exclusive=True, group="connections-load", exit_on_error=False)
    def _load(self) -> None:
        self.post_message(self.Loaded(load_connection_rows(self.services)))

    def on_data_connections_tab_loaded(self, message: Loaded) -> None:
        self.rows = {str(row.id): row for row in message.rows}
        tone = theme_tone(self)
        self.table.show_rows(
            [(str(row.id), self._cells(row, tone)) for row in message.rows]
        )
        if self._select_after_load in self.rows:
            self.table.select_key(self._select_after_load)
            self._select_after_load = None
        self._show_detail()

    def _cells(self, row: ConnectionRow, tone: Tone) -> tuple[Text, ...]:
        source, name = literal(row.source_name), literal(row.name)
        source.truncate(NAME_WIDTH, overflow="ellipsis")
        name.truncate(NAME_WIDTH, overflow="ellipsis")
        return (
            source,
            name,
            literal(row.source_type),
            Text(format_utc(row.last_submission_at)),
            self._status_cell(row, tone),
        )

    def _status_cell(self, row: ConnectionRow, tone: Tone) -> Text:
        if row.id in self.syncing:
            return Text(progress_text(self.syncing[row.id]), style=tone("accent"))
        if row.running:
            return Text("syncing…", style=tone("accent"))
        text = Text(row.state, style=tone(STATE_TONES.get(row.state, "")))
        result = self.results.get(row.id)
        if result and row.state == "active":
            text.append(f" · {result}")
        return text

    def on_data_table_row_highlighted(self) -> None:
        self._show_detail()

    def _show_detail(self) -> None:
        detail = self.query_one("#connection-detail", Static)
        row = self.selected()
        if row is None:
            detail.update(
                "No data connections yet: press n to pair a Klaviyo list or "
                "segment with a ZAP~POST campaign."
            )
            return
        text = Text.assemble(
            literal(row.source_type),
            " ",
            literal(row.source_name, style="bold"),
            " of ",
            literal(row.account_name),
            " → campaign ",
            literal(row.campaign_name, style="bold"),
        )
        if row.id in self.syncing:
            text.append("\nSyncing now: ")
            text.append(progress_detail(self.syncing[row.id]))
        elif row.last_run is not None:
            text.append(f"\nLast run {row.last_run.describe()}")
        else:
            text.append("\nNot synced yet.")
        if row.last_error:
            text.append("\nLast error: ")
            text.append(literal(row.last_error))
        detail.update(text)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        report_worker_failure(self, event)

    # -- sync now ------------------------------------------------------------

    def action_sync_now(self) -> None:
        """Sync the selected data connection now, after saying what that does."""
        row = self._require_row("sync")
        if row is None:
            return
        if row.id in self.syncing:
            toast(self, f"{row.name} is already syncing.")
            return
        body = (
            f"The members of the {row.source_type} {row.source_name} who have "
            "not been mailed yet are fetched from Klaviyo, their addresses "
            "cleansed, and compiled into one submission to the ZAP~POST "
            f"campaign {row.campaign_name}. It is printed with the campaign's "
            "published artwork and mailed.\n\nProfiles that cannot be mailed "
            "are listed in Sync History."
        )

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.start_sync(row)

        self.app.push_screen(
            ConfirmScreen(f"Sync {row.name} now?", body, "Sync now"), confirmed
        )

    def start_sync(self, row: ConnectionRow) -> None:
        """Start a sync of one data connection; its row shows the progress."""
        self.syncing[row.id] = None
        self._local.add(row.id)
        self.results.pop(row.id, None)
        self.table.set_cell(str(row.id), "status", Text(progress_text(None)))
        self._sync(row)

    # Not exclusive: several data connections may sync at the same time.
    @work(thread=True, group="connections-sync", exit_on_error=False)
    def _sync(self, row: ConnectionRow) -> None:
        def progress(update: Progress) -> None:
            self.post_message(self.SyncProgress(update))

        try:
            run = self.services.sync_now(row.id, progress=progress, stop=self._stop)
        except (SyncBusy, SyncRefused, ServiceError) as error:
            self.post_message(self.SyncEnded(row, None, str(error)))
            return
        except Exception:
            self.post_message(self.SyncEnded(row, None, ""))
            raise
        self.post_message(self.SyncEnded(row, run))

    def on_data_connections_tab_sync_progress(self, message: SyncProgress) -> None:
        if message.progress.connection_id in self._local:
            self.show_progress(message.progress)

    def show_progress(self, progress: Progress) -> None:
        """Show how far a sync has got (one started here or by the scheduler)."""
        key = str(progress.connection_id)
        if key not in self.rows:
            return
        self.syncing[progress.connection_id] = progress
        self.table.set_cell(
            key,
            "status",
            Text(progress_text(progress), style=theme_tone(self)("accent")),
        )
        selected = self.selected()
        if selected is not None and selected.id == progress.connection_id:
            self._show_detail()

    def show_started(self, connection_id: int) -> None:
        """Mark a sync the scheduler started, until its first progress arrives."""
        key = str(connection_id)
        if key in self.rows and connection_id not in self.syncing:
            self.syncing[connection_id] = None
            self.table.set_cell(key, "status", Text(progress_text(None)))

    def sync_ended_elsewhere(self, connection_id: int) -> None:
        """A sync this tab did not start has ended; the next load shows the result."""
        if connection_id not in self._local:
            self.syncing.pop(connection_id, None)

    def on_data_connections_tab_sync_ended(self, message: SyncEnded) -> None:
        row, run = message.row, message.run
        self.syncing.pop(row.id, None)
        self._local.discard(row.id)
        if run is None:
            if message.refusal:
                toast(
                    self,
                    message.refusal,
                    title=f"{row.name} was not synced",
                    severity="error",
                )
            self.reload()
            return
        self.results[row.id] = result_text(run)
        lines = [
            f"Fetched {run.fetched:,}, imported {run.imported:,}, failed "
            f"{run.failed:,}, skipped {run.skipped_duplicate:,}."
        ]
        if run.submission_id:
            lines.append(f"Submission {run.submission_id}.")
        if run.error:
            lines.append(run.error)
        toast(
            self,
            " ".join(lines),
            title=f"{row.name}: sync {run.status}",
            severity=RESULT_SEVERITY.get(run.status, "information"),
            timeout=10,
        )
        self.post_message(DataChanged("runs"))

    # -- pause, resume, remove -----------------------------------------------

    def action_pause(self) -> None:
        """Pause the selected data connection, after stating what pausing means."""
        row = self._require_row("pause")
        if row is None:
            return
        if row.state == "paused":
            toast(self, f"{row.name} is already paused.")
            return
        body = (
            f"{row.name} will not be synced until it is resumed.\n\n"
            "While it is paused nothing is queued for later. When it is "
            f"resumed, only the members of {row.source_name} at that time are "
            "ingested: anyone who joined and left meanwhile is not mailed."
        )
        self._confirm_then(
            ConfirmScreen(f"Pause {row.name}?", body, "Pause"), self._pause, row
        )

    def action_resume(self) -> None:
        """Resume the selected data connection, after stating what it will ingest."""
        row = self._require_row("resume")
        if row is None:
            return
        if row.state != "paused":
            toast(self, f"{row.name} is not paused.")
            return
        body = (
            f"{row.name} will be synced again on the schedule.\n\n"
            "Nothing was queued while it was paused: its next sync ingests the "
            f"current members of {row.source_name} who have not been mailed."
        )
        self._confirm_then(
            ConfirmScreen(f"Resume {row.name}?", body, "Resume"), self._resume, row
        )

    def action_remove(self) -> None:
        """Unpair the selected list or segment, after a confirmation."""
        row = self._require_row("remove")
        if row is None:
            return
        body = (
            f"The {row.source_type} {row.source_name} will be unpaired from the "
            f"campaign {row.campaign_name} and no longer synced. Its sync "
            "history stays."
        )
        self._confirm_then(
            ConfirmScreen(f"Remove {row.name}?", body, "Remove", danger=True),
            self._remove,
            row,
        )

    def _confirm_then(
        self,
        screen: ConfirmScreen,
        then: Callable[[ConnectionRow], object],
        row: ConnectionRow,
    ) -> None:
        def confirmed(yes: bool | None) -> None:
            if yes:
                then(row)

        self.app.push_screen(screen, confirmed)

    @work(thread=True, exclusive=True, group="connections-action", exit_on_error=False)
    def _pause(self, row: ConnectionRow) -> None:
        self._change(row, self.services.pause, "paused")

    @work(thread=True, exclusive=True, group="connections-action", exit_on_error=False)
    def _resume(self, row: ConnectionRow) -> None:
        self._change(row, self.services.resume, "resumed")

    @work(thread=True, exclusive=True, group="connections-action", exit_on_error=False)
    def _remove(self, row: ConnectionRow) -> None:
        self._change(row, self.services.remove, "removed")

    def _change(
        self, row: ConnectionRow, change: Callable[[int], object], done: str
    ) -> None:
        """Run one service change (in a worker thread) and say how it went."""
        try:
            change(row.id)
        except ServiceError as error:
            toast(self, str(error), severity="error")
            return
        self.results.pop(row.id, None)
        toast(self, f"{row.name} {done}.")
        self.post_message(DataChanged("connections"))

    # -- map data, new connection --------------------------------------------

    def action_map_data(self) -> None:
        """Open the selected data connection's mapping to change it."""
        row = self._require_row("map")
        if row is not None:
            self.app.push_screen(MappingScreen(self.services, row.id, row.name))

    def action_new_connection(self) -> None:
        """Open the form that pairs a list or segment with a campaign."""
        self.app.push_screen(NewConnectionScreen(self.services), self._created)

    def _created(self, connection: DataConnection | None) -> None:
        if connection is None:
            return
        toast(
            self,
            f"Created data connection {connection.name}.",
            title="Data connection created",
        )
        self._select_after_load = str(connection.id)
        self.post_message(DataChanged("connections"))

    def _require_row(self, verb: str) -> ConnectionRow | None:
        row = self.selected()
        if row is None:
            toast(
                self,
                f"There is no data connection to {verb}: press n to create one.",
                severity="warning",
            )
        return row
