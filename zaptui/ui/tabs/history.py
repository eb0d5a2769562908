"""Sync History: every sync run, newest first, paged through the database."""

from __future__ import annotations

import logging
from collections.abc import Callable

from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widget import Widget
from textual.widgets import DataTable, Static

from zaptui.clock import format_utc
from zaptui.services import Services
from zaptui.store import queries
from zaptui.ui.text import clean, literal
from zaptui.ui.widgets.run_panel import RunPanel, status_text

log = logging.getLogger(__name__)

# Load the next page when the cursor comes within this many rows of the end.
LOAD_AHEAD = 30
# Reading the newest runs again redraws the table only up to this many rows;
# deeper in the history new runs wait for "r" so the operator keeps their place.
REBUILD_LIMIT = 1_000
# Below this width the submission link leaves the table (the run panel has it).
WIDE = 110
_FIXED = {"type": 7, "ingested": 16, "profiles": 8, "status": 11}
_HEADERS = {
    "campaign": "Campaign",
    "source": "List or segment",
    "type": "Type",
    "ingested": "Ingested (UTC)",
    "profiles": "Profiles",
    "link": "Submission link",
    "status": "Status",
}
_SHORT_HEADERS = {"source": "List/segment"}


def column_widths(width: int) -> dict[str, int]:
    """Column widths (in order) that fill a table `width` cells wide."""
    wide = width >= WIDE
    keys = list(_HEADERS) if wide else [key for key in _HEADERS if key != "link"]
    # Two cells of padding per column and two for the vertical scrollbar.
    spare = max(0, width - 2 - 2 * len(keys) - sum(_FIXED.values()))
    if wide:
        flexible = {"campaign": 0.28, "source": 0.28, "link": 0.44}
    else:
        flexible = {"campaign": 0.5, "source": 0.5}
    sizes = {key: max(8, int(spare * share)) for key, share in flexible.items()}
    return {key: _FIXED.get(key) or sizes[key] for key in keys}


def _cell(value: object) -> Text:
    text = literal(value)
    text.no_wrap = True
    text.overflow = "ellipsis"
    return text


def is_web_link(url: str | None) -> bool:
    """Whether a submission link is something a browser should be asked to open."""
    return bool(url) and str(url).lower().startswith(("https://", "http://"))


class RunTable(DataTable):
    """The table of sync runs; Enter (shown in the Footer) opens the run panel.

    Enter stays the table's own binding, handled in the table's turn after any
    arrow keys typed before it; only its Footer label is added here.
    """

    BINDINGS = [Binding("enter", "select_cursor", "Details")]


class SyncHistoryTab(Widget):
    """The sync history: a table of runs and a panel with one run's details."""

    BINDINGS = [
        Binding("escape", "close_run", "Close"),
        Binding("o", "open_link", "Open link"),
        Binding("c", "copy_link", "Copy link"),
        Binding("r", "reload", "Refresh"),
    ]

    class PageLoaded(Message):
        """A page of runs was read.

        `mode` says where it goes: "start" (the table starts again), "refresh"
        (the newest runs again, above those already loaded) or "more" (below).
        """

        def __init__(
            self, page: queries.Page[queries.RunRow], generation: int, mode: str
        ) -> None:
            super().__init__()
            self.page = page
            self.generation = generation
            self.mode = mode

    class LoadFailed(Message):
        """Reading the history failed."""

        def __init__(self, error: str, generation: int) -> None:
            super().__init__()
            self.error = error
            self.generation = generation

    def __init__(self, services: Services, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.services = services
        self._rows: list[queries.RunRow] = []
        self._by_id: dict[int, queries.RunRow] = {}
        self._next: queries.Cursor | None = None
        self._loading = False
        self._newer = 0
        self._generation = 0
        self._widths: dict[str, int] = {}

    def compose(self) -> ComposeResult:
        yield Static("Loading sync history…", id="history-summary")
        yield RunTable(id="history-table", cursor_type="row", zebra_stripes=True)
        yield RunPanel(id="run-panel")

    @property
    def table(self) -> DataTable:
        """The table of sync runs."""
        return self.query_one("#history-table", DataTable)

    @property
    def panel(self) -> RunPanel:
        """The slide-out panel with one run's details."""
        return self.query_one(RunPanel)

    def on_mount(self) -> None:
        self._read_first_page("start")

    def reload(self) -> None:
        """Read the newest runs again; the runs loaded below them stay."""
        self._read_first_page("refresh")
        if self.panel.open:
            self.panel.refresh_run()

    def start_over(self) -> None:
        """Show the newest runs only, dropping the pages loaded below them."""
        self._read_first_page("start")
        if self.panel.open:
            self.panel.refresh_run()

    def _read_first_page(self, mode: str) -> None:
        self._generation += 1
        self._loading = True
        self._fetch(None, queries.PAGE_SIZE, self._generation, mode)

    def commands(self) -> list[tuple[str, str, Callable[[], object]]]:
        """Command-palette entries for this tab."""
        return [
            (
                "Sync history: show run details",
                "Open the panel for the highlighted sync run",
                self.action_open_run,
            ),
            (
                "Sync history: open submission link",
                "Open the highlighted run's ZAP~POST submission in a browser",
                self.action_open_link,
            ),
            (
                "Sync history: copy submission link",
                "Copy the highlighted run's submission link to the clipboard",
                self.action_copy_link,
            ),
            (
                "Sync history: refresh",
                "Read the sync history again, from the newest run",
                self.start_over,
            ),
        ]

    # -- loading -------------------------------------------------------------

    @work(thread=True, exclusive=True, group="history", exit_on_error=False)
    def _fetch(
        self,
        after: queries.Cursor | None,
        limit: int,
        generation: int,
        mode: str,
    ) -> None:
        try:
            page = queries.run_page(after, limit)
        except Exception as error:
            log.exception("could not read the sync history")
            self.post_message(self.LoadFailed(str(error), generation))
            return
        self.post_message(self.PageLoaded(page, generation, mode))

    def _load_more(self) -> None:
        if self._loading or self._next is None:
            return
        self._loading = True
        self._fetch(self._next, queries.PAGE_SIZE, self._generation, "more")

    def on_sync_history_tab_page_loaded(self, message: PageLoaded) -> None:
        message.stop()
        if message.generation != self._generation:
            return
        self._loading = False
        page = message.page
        if message.mode == "more":
            fresh = [row for row in page.rows if row.id not in self._by_id]
            self._rows.extend(fresh)
            self._by_id.update((row.id, row) for row in fresh)
            self._add_rows(fresh)
            self._next = page.next
        elif message.mode == "refresh":
            self._refresh(page)
        else:
            self._newer = 0
            self._show(page)
        self._show_summary()
        self.refresh_bindings()

    def _show(self, page: queries.Page[queries.RunRow]) -> None:
        self._rows = list(page.rows)
        self._by_id = {row.id: row for row in page.rows}
        self._next = page.next
        self._rebuild()

    def _refresh(self, first: queries.Page[queries.RunRow]) -> None:
        """Fold the newest runs, read again, into what is shown."""
        merged = queries.after_first_page(
            first, self._rows, self._next, queries.run_cursor
        )
        same_runs = [row.id for row in merged.rows] == [row.id for row in self._rows]
        if same_runs:
            self._update_in_place(merged.rows)
            self._next = merged.next
        elif len(merged.rows) > REBUILD_LIMIT:
            self._update_in_place([row for row in merged.rows if row.id in self._by_id])
            self._newer = sum(1 for row in first.rows if row.id not in self._by_id)
        else:
            self._newer = 0
            self._show(merged)

    def _update_in_place(self, rows: list[queries.RunRow]) -> None:
        """Change only the cells of runs whose values changed (status, counts)."""
        if not self._widths:
            return
        theme = self.app.theme_variables
        table = self.table
        for row in rows:
            if self._by_id.get(row.id) == row:
                continue
            self._by_id[row.id] = row
            cells = self._cells(row, theme)
            for key in self._widths:
                table.update_cell(str(row.id), key, cells[key])
        self._rows = [self._by_id[row.id] for row in self._rows]

    def on_sync_history_tab_load_failed(self, message: LoadFailed) -> None:
        message.stop()
        if message.generation != self._generation:
            return
        self._loading = False
        text = clean(f"Could not read the sync history: {message.error}")
        self.query_one("#history-summary", Static).update(literal(text))
        self.notify(text, severity="error", markup=False)

    # -- the table -----------------------------------------------------------

    def on_resize(self, event: events.Resize) -> None:
        widths = column_widths(event.size.width)
        if widths != self._widths:
            self._widths = widths
            self._rebuild()

    def _rebuild(self) -> None:
        """Lay the table out again, keeping the highlighted run highlighted."""
        if not self._widths:
            return
        table = self.table
        current = self._highlighted_id()
        table.clear(columns=True)
        for key, width in self._widths.items():
            label = _HEADERS[key]
            if len(label) > width:
                label = _SHORT_HEADERS.get(key, label)
            table.add_column(label, width=width, key=key)
        self._add_rows(self._rows)
        if current is not None and current in self._by_id:
            table.move_cursor(row=table.get_row_index(str(current)), animate=False)

    def _add_rows(self, rows: list[queries.RunRow]) -> None:
        if not self._widths:
            return
        theme = self.app.theme_variables
        table = self.table
        for row in rows:
            cells = self._cells(row, theme)
            table.add_row(*(cells[key] for key in self._widths), key=str(row.id))

    @staticmethod
    def _cells(row: queries.RunRow, theme: dict[str, str]) -> dict[str, Text]:
        return {
            "campaign": _cell(row.campaign_name or "—"),
            "source": _cell(row.source_name or "—"),
            "type": _cell(row.source_type or "—"),
            "ingested": _cell(format_utc(row.started_at).removesuffix(" UTC")),
            "profiles": Text(f"{row.fetched:,}", justify="right"),
            "link": _cell(row.submission_url or "—"),
            "status": status_text(row.status, theme),
        }

    def _show_summary(self) -> None:
        summary = self.query_one("#history-summary", Static)
        if not self._rows:
            summary.update(
                "No sync runs yet: each sync of a data connection appears here."
            )
            return
        shown = len(self._rows)
        more = " · more load as you move down" if self._next else ""
        noun = "sync run" if shown == 1 else "sync runs"
        newer = f" · {self._newer:,} newer: r shows them" if self._newer else ""
        summary.update(
            f"{shown:,} {noun}, newest first{more}{newer} · Enter for details"
        )

    def _highlighted_id(self) -> int | None:
        table = self.table
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return int(key.value) if key.value is not None else None

    def _highlighted(self) -> queries.RunRow | None:
        run_id = self._highlighted_id()
        return self._by_id.get(run_id) if run_id is not None else None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.cursor_row >= event.data_table.row_count - LOAD_AHEAD:
            self._load_more()
        self.refresh_bindings()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_run()

    # -- actions -------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Offer Escape only while the panel is open, links only when there is one."""
        if action == "close_run":
            return self.panel.open
        if action in ("open_link", "copy_link"):
            return True if is_web_link(self._link()) else None
        return True

    def action_open_run(self) -> None:
        """Slide in the panel for the highlighted run."""
        run_id = self._highlighted_id()
        if run_id is not None:
            self.panel.show_run(run_id)
            self.refresh_bindings()

    def action_close_run(self) -> None:
        """Slide the panel away and go back to the table."""
        self.panel.close()
        self.table.focus()
        self.refresh_bindings()

    def _link(self) -> str | None:
        if self.panel.open:
            return self.panel.submission_url
        row = self._highlighted()
        return row.submission_url if row else None

    def action_open_link(self) -> None:
        """Open the submission in a browser, where the terminal allows it."""
        url = self._link()
        if not is_web_link(url):
            self.notify("This sync run has no submission link.", severity="warning")
            return
        assert url is not None
        # TODO(open-url): on a host without a desktop browser Python may start a
        # console browser in this terminal; offer copying instead there.
        self.app.open_url(url)
        self.notify(clean(f"Opening {url}"), markup=False)

    def action_copy_link(self) -> None:
        """Copy the submission link to the clipboard (where the terminal allows)."""
        url = self._link()
        if not is_web_link(url):
            self.notify("This sync run has no submission link.", severity="warning")
            return
        assert url is not None
        self.app.copy_to_clipboard(url)
        self.notify("Submission link copied to the clipboard.")

    def action_reload(self) -> None:
        """Read the history again, from the newest run."""
        self.start_over()
