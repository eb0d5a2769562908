"""What the console tests share: the demo at a fixed time, apps, and waiting."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from rich.console import Console
from rich.text import Text
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Input, Static
from textual.worker import WorkerCancelled

from zaptui.clock import set_clock
from zaptui.demo import Demo, build_demo
from zaptui.services import Services
from zaptui.store.models import ApiLogEntry, SyncRun
from zaptui.ui.app import ZapTuiApp
from zaptui.ui.paths import stylesheets
from zaptui.ui.widgets.keyed_table import KeyedTable

FIXED_NOW = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)
SMALL_DEMO = 80
"""Profiles in the demo of functional tests (the snapshots use the real size)."""


def fixed_demo(folder: Path, profiles: int | None = None) -> Demo:
    """The demo built at FIXED_NOW, the clock left there, timings made constant."""
    options = {} if profiles is None else {"profiles": profiles}
    demo = build_demo(folder, now=FIXED_NOW, churn_seconds=None, **options)
    normalise_timings()
    return demo


def demo_for_test(folder: Path, profiles: int | None = SMALL_DEMO) -> Iterator[Demo]:
    """A fixed demo for one test's fixture: built in `folder`, closed after the
    test, and the clock it held let go."""
    built = fixed_demo(folder / "demo", profiles=profiles)
    yield built
    built.close()
    set_clock(None)


def clock_at_fixed_now() -> Iterator[None]:
    """The clock held at FIXED_NOW for one test's fixture, let go after it."""
    set_clock(lambda: FIXED_NOW)
    yield
    set_clock(None)


def normalise_timings() -> None:
    """Replace what differs from run to run (call durations, seconds) by constants."""
    ApiLogEntry.update(duration_ms=42.0).execute()
    for run in SyncRun.select():
        SyncRun.update(
            started_at=run.started_at.replace(second=0, microsecond=0),
            finished_at=run.finished_at.replace(second=0, microsecond=0)
            if run.finished_at
            else None,
        ).where(SyncRun.id == run.id).execute()


def console(demo: Demo) -> ZapTuiApp:
    """The console on a demo, without the scheduler."""
    return ZapTuiApp(demo.services)


class TabHost(App[None]):
    """One console tab alone above a footer, with the console's stylesheets.

    A subclass names the tab, built as `TAB(services, id=TAB_ID)`.
    """

    CSS_PATH = stylesheets()
    TITLE = "zaptui"
    TAB: ClassVar[Callable[..., Widget]]
    TAB_ID: ClassVar[str]

    def __init__(self, services: Services, scheduler: object | None = None) -> None:
        super().__init__()
        self.services = services
        self.scheduler = scheduler

    def compose(self) -> ComposeResult:
        yield self.TAB(self.services, id=self.TAB_ID)
        yield Footer()


async def settle(pilot: Pilot) -> None:
    """Wait until every worker has finished and the screen has caught up.

    A worker cancelled because a newer one replaced it (a page fetched again
    while a sync reports progress) is no failure; the newer one is waited for.
    """
    for _ in range(3):
        for worker in list(pilot.app.workers):
            try:
                await worker.wait()
            except WorkerCancelled:
                pass
        await pilot.pause()


def stop_blinking(pilot: Pilot) -> None:
    """Hold every Input's cursor still, so snapshots do not depend on timing."""
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False


def cell_text(table: KeyedTable, row_key: str, column_key: str) -> str:
    """The plain text a table cell shows."""
    value = table.get_cell(row_key, column_key)
    return value.plain if isinstance(value, Text) else str(value)


def row_texts(table: KeyedTable) -> list[list[str]]:
    """Every row of a table as plain text, top to bottom."""
    return [
        [cell.plain if isinstance(cell, Text) else str(cell) for cell in row]
        for row in (table.get_row_at(index) for index in range(table.row_count))
    ]


def column(table: DataTable, key: str) -> list[str]:
    """Every cell of one column as text, top to bottom."""
    return [str(cell) for cell in table.get_column(key)]


def static_text(app: App, selector: str) -> str:
    """The text a Static shows, rendered wide enough not to wrap."""
    terminal = Console(width=200, file=io.StringIO(), record=True)
    terminal.print(app.query_one(selector, Static).content)
    return terminal.export_text()


async def go_to_row(pilot: Pilot, table: KeyedTable, row_key: str) -> None:
    """Move the table's cursor to a row with the arrow keys."""
    table.focus()
    target = table.get_row_index(row_key)
    while table.cursor_row != target:
        await pilot.press("down" if table.cursor_row < target else "up")
    await pilot.pause()


def screen_text(pilot: Pilot) -> str:
    """What the terminal shows now, as plain text, line by line."""
    app = pilot.app
    width, height = app.size
    terminal = Console(
        width=width,
        height=height,
        file=io.StringIO(),
        force_terminal=True,
        color_system="truecolor",
        record=True,
        legacy_windows=False,
    )
    terminal.print(
        app.screen._compositor.render_update(
            full=True, screen_stack=app._background_screens
        )
    )
    return terminal.export_text()
