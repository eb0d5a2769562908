"""The run panel: one sync run in detail, sliding in from the right."""

from __future__ import annotations

import logging

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Static

from zaptui.clock import format_utc
from zaptui.store import queries
from zaptui.ui.text import clean, literal

log = logging.getLogger(__name__)

# What the operator sees for each stored run status, and the theme variable
# that colours it. "submitting" is a phase of a run still in progress.
STATUS_LABELS = {
    "running": ("running", "accent"),
    "submitting": ("running", "accent"),
    "succeeded": ("succeeded", "success"),
    "partial": ("partial", "warning"),
    "failed": ("failed", "error"),
    "interrupted": ("interrupted", "warning"),
}


def status_text(status: str, theme: dict[str, str] | None = None) -> Text:
    """A run status as a word, coloured from the theme when one is given."""
    label, variable = STATUS_LABELS.get(status, (status, ""))
    colour = (theme or {}).get(variable, "")
    return literal(label, style=colour)


def _summary(run: queries.RunDetail, theme: dict[str, str]) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    status = status_text(run.status, theme)
    if run.phase and run.status in ("running", "submitting"):
        status.append(literal(f" ({run.phase})"))
    rows: list[tuple[str, Text]] = [
        ("Sync id", literal(run.id)),
        ("Reference", literal(run.reference)),
        ("Status", status),
        ("Trigger", literal(run.trigger)),
        ("Campaign", literal(run.campaign_name or "—")),
        (
            "List or segment",
            literal(f"{run.source_name or '—'} ({run.source_type or '—'})"),
        ),
        (
            "Members read",
            literal(
                f"the whole {run.source_type or 'list or segment'}"
                if run.full_read
                else "joins since the last sync"
            ),
        ),
        ("Started", literal(format_utc(run.started_at))),
        ("Finished", literal(format_utc(run.finished_at))),
        ("Profiles fetched", literal(f"{run.fetched:,}")),
        ("Profiles imported", literal(f"{run.imported:,}")),
        ("Profiles failed", literal(f"{run.failed:,}")),
        ("Duplicates skipped", literal(f"{run.skipped_duplicate:,}")),
    ]
    if run.address_updates_failed:
        rows.append(
            ("Address updates failed", literal(f"{run.address_updates_failed:,}"))
        )
    rows += [
        ("Submission id", literal(run.submission_id or "—")),
        ("Submission link", literal(run.submission_url or "—")),
    ]
    if run.error:
        rows.append(("Sync error", literal(run.error, single_line=False)))
    for label, value in rows:
        grid.add_row(label, value)
    return grid


def _failures(failed: queries.FailedProfiles) -> Group:
    parts: list[RenderableType] = [
        Text(f"Failed profiles ({failed.total:,})", style="bold")
    ]
    if not failed.rows:
        parts.append(Text("None."))
    for profile in failed.rows:
        who = literal(profile.display_name or profile.profile_id)
        if profile.email:
            who.append_text(literal(f" <{profile.email}>"))
        parts.append(who)
        reason = literal(profile.reason or "no reason given", style="dim")
        parts.append(Padding(reason, (0, 0, 0, 2)))
    if failed.more:
        parts.append(Text(f"… and {failed.more:,} more not shown.", style="italic"))
    return Group(*parts)


class RunPanel(Widget):
    """A sync run's details and its failed profiles, docked to the right.

    Hidden off screen until `open` is set; `show_run` loads a run in a thread
    worker and opens the panel.
    """

    DEFAULT_CSS = """
    RunPanel {
        layer: panel;
        dock: right;
        width: 62%;
        min-width: 40;
        max-width: 90;
        height: 100%;
        offset-x: 100%;
        transition: offset 200ms in_out_cubic;
        background: $panel;
        border-left: thick $primary;
        padding: 0 1;
    }
    RunPanel.-open {
        offset-x: 0;
    }
    RunPanel > VerticalScroll {
        height: 1fr;
    }
    RunPanel > VerticalScroll:focus {
        background-tint: $foreground 4%;
    }
    RunPanel #run-panel-title {
        dock: top;
        text-style: bold;
        color: $text-primary;
        margin-bottom: 1;
    }
    RunPanel #run-panel-hint {
        dock: bottom;
        color: $text-muted;
    }
    """

    open: reactive[bool] = reactive(False)
    """Whether the panel is on screen."""

    class Loaded(Message):
        """A run and its failed profiles were read."""

        def __init__(
            self,
            run_id: int,
            run: queries.RunDetail | None,
            failed: queries.FailedProfiles | None,
        ) -> None:
            super().__init__()
            self.run_id = run_id
            self.run = run
            self.failed = failed

    class LoadFailed(Message):
        """Reading a run failed."""

        def __init__(self, run_id: int, error: str) -> None:
            super().__init__()
            self.run_id = run_id
            self.error = error

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.run_id: int | None = None
        self.run: queries.RunDetail | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="run-panel-title")
        with VerticalScroll(id="run-panel-body", disabled=True):
            yield Static(id="run-panel-summary")
            yield Static(id="run-panel-failures")
        yield Static("Esc close · o open link · c copy link", id="run-panel-hint")

    @property
    def submission_url(self) -> str | None:
        """The submission link of the run shown, once it has loaded."""
        return self.run.submission_url if self.run else None

    def watch_open(self, value: bool) -> None:
        self.set_class(value, "-open")
        self.query_one("#run-panel-body").disabled = not value

    def show_run(self, run_id: int) -> None:
        """Open the panel on a sync run; its details load in the background."""
        if run_id != self.run_id or self.run is None:
            self.run_id = run_id
            self.run = None
            self.query_one("#run-panel-title", Static).update(f"Sync run {run_id}")
            self.query_one("#run-panel-summary", Static).update("Loading…")
            self.query_one("#run-panel-failures", Static).update("")
        self.open = True
        self._load(run_id)
        self.query_one("#run-panel-body").focus()

    def refresh_run(self) -> None:
        """Read the run shown again (it may still be running)."""
        if self.run_id is not None:
            self._load(self.run_id)

    def close(self) -> None:
        """Slide the panel away."""
        self.open = False

    @work(thread=True, exclusive=True, group="run-panel", exit_on_error=False)
    def _load(self, run_id: int) -> None:
        try:
            run = queries.run_detail(run_id)
            failed = queries.failed_profiles(run_id) if run else None
        except Exception as error:
            log.exception("could not read sync run %s", run_id)
            self.post_message(self.LoadFailed(run_id, str(error)))
            return
        self.post_message(self.Loaded(run_id, run, failed))

    def on_run_panel_loaded(self, message: Loaded) -> None:
        message.stop()
        if message.run_id != self.run_id:
            return
        summary = self.query_one("#run-panel-summary", Static)
        failures = self.query_one("#run-panel-failures", Static)
        if message.run is None or message.failed is None:
            summary.update("This sync run is no longer in the database.")
            failures.update("")
            return
        self.run = message.run
        title = f"Sync run {message.run.id} · {message.run.campaign_name or '—'}"
        self.query_one("#run-panel-title", Static).update(literal(title))
        theme = self.app.theme_variables
        summary.update(Group(_summary(message.run, theme), Text()))
        failures.update(_failures(message.failed))

    def on_run_panel_load_failed(self, message: LoadFailed) -> None:
        message.stop()
        if message.run_id != self.run_id:
            return
        self.query_one("#run-panel-summary", Static).update(
            literal(f"Could not read this sync run: {message.error}")
        )
        self.notify(
            clean(f"Could not read sync run {message.run_id}: {message.error}"),
            severity="error",
            markup=False,
        )
