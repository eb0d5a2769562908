"""Logs: every API call to Klaviyo and ZAP~POST, newest first, paged."""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import urlsplit

from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widget import Widget
from textual.widgets import DataTable, Label, Select, Static

from zaptui.clock import format_utc
from zaptui.services import Services
from zaptui.store import queries
from zaptui.ui.screens.log_detail import LogDetailScreen, service_name, status_tone
from zaptui.ui.text import clean, literal

log = logging.getLogger(__name__)

LOAD_AHEAD = 30
# Reading the newest calls again redraws the table only up to this many rows;
# deeper in the log new calls wait for "r" so the operator keeps their place.
REBUILD_LIMIT = 1_000
FILTERS: list[tuple[str, str]] = [
    ("All services", "all"),
    ("Klaviyo", "klaviyo"),
    ("ZAP~POST", "zappost"),
]
_FIXED = {"at": 16, "service": 8, "method": 6, "status": 6, "duration": 9}
_HEADERS = {
    "at": "Date (UTC)",
    "service": "Service",
    "method": "Verb",
    "url": "URL",
    "status": "Status",
    "duration": "Duration",
}


def column_widths(width: int) -> dict[str, int]:
    """Column widths (in order) that fill a table `width` cells wide."""
    spare = width - 2 - 2 * len(_HEADERS) - sum(_FIXED.values())
    return {key: _FIXED.get(key) or max(12, spare) for key in _HEADERS}


def short_url(url: str) -> str:
    """The path and query of a URL: the host is the service's own."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url
    tail = parts.path or "/"
    return f"{tail}?{parts.query}" if parts.query else tail


def _cell(value: object, style: str = "") -> Text:
    text = literal(value, style=style)
    text.no_wrap = True
    text.overflow = "ellipsis"
    return text


class LogTable(DataTable):
    """The table of API calls; Enter (shown in the Footer) opens the call.

    Enter stays the table's own binding, handled in the table's turn after any
    arrow keys typed before it; only its Footer label is added here.
    """

    BINDINGS = [Binding("enter", "select_cursor", "Details")]


class LogsTab(Widget):
    """The API log: a table of calls and a screen with one call in full."""

    BINDINGS = [
        Binding("f", "next_filter", "Service"),
        Binding("r", "reload", "Refresh"),
    ]

    class PageLoaded(Message):
        """A page of the API log was read.

        `mode` says where it goes: "start" (the table starts again), "refresh"
        (the newest calls again, above those already loaded) or "more" (below).
        """

        def __init__(
            self, page: queries.Page[queries.LogRow], generation: int, mode: str
        ) -> None:
            super().__init__()
            self.page = page
            self.generation = generation
            self.mode = mode

    class LoadFailed(Message):
        """Reading the API log failed."""

        def __init__(self, error: str, generation: int) -> None:
            super().__init__()
            self.error = error
            self.generation = generation

    def __init__(self, services: Services, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.services = services
        self.service: str | None = None
        self._rows: list[queries.LogRow] = []
        self._ids: set[int] = set()
        self._next: queries.Cursor | None = None
        self._loading = False
        self._newer = 0
        self._generation = 0
        self._widths: dict[str, int] = {}

    def compose(self) -> ComposeResult:
        # The table comes first so that it is the first thing focused.
        yield LogTable(id="logs-table", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="logs-bar"):
            yield Label("Service", id="logs-filter-label")
            yield Select(
                FILTERS, value="all", allow_blank=False, compact=True, id="logs-filter"
            )
            yield Static("Loading the API log…", id="logs-summary")

    @property
    def table(self) -> DataTable:
        """The table of API calls."""
        return self.query_one("#logs-table", DataTable)

    def on_mount(self) -> None:
        self.start_over()

    def reload(self) -> None:
        """Read the newest calls again; the calls loaded below them stay."""
        self._read_first_page("refresh")

    def start_over(self) -> None:
        """Show the newest calls only, dropping the pages loaded below them."""
        self._read_first_page("start")

    def _read_first_page(self, mode: str) -> None:
        self._generation += 1
        self._loading = True
        self._fetch(None, queries.PAGE_SIZE, self.service, self._generation, mode)

    def commands(self) -> list[tuple[str, str, Callable[[], object]]]:
        """Command-palette entries for this tab."""
        entries: list[tuple[str, str, Callable[[], object]]] = [
            (
                "Logs: show API call",
                "Show the highlighted call's headers and bodies",
                self.action_open_entry,
            )
        ]
        entries += [
            (
                f"Logs: show {label}" if value != "all" else "Logs: show all services",
                f"List the API calls to {label}"
                if value != "all"
                else "List the API calls to Klaviyo and ZAP~POST",
                lambda value=value: self.show_service(value),
            )
            for label, value in FILTERS
        ]
        entries.append(
            (
                "Logs: refresh",
                "Read the API log again, from the newest call",
                self.start_over,
            )
        )
        return entries

    # -- loading -------------------------------------------------------------

    @work(thread=True, exclusive=True, group="logs", exit_on_error=False)
    def _fetch(
        self,
        after: queries.Cursor | None,
        limit: int,
        service: str | None,
        generation: int,
        mode: str,
    ) -> None:
        try:
            page = queries.log_page(after, limit, service)
        except Exception as error:
            log.exception("could not read the API log")
            self.post_message(self.LoadFailed(str(error), generation))
            return
        self.post_message(self.PageLoaded(page, generation, mode))

    def _load_more(self) -> None:
        if self._loading or self._next is None:
            return
        self._loading = True
        self._fetch(
            self._next, queries.PAGE_SIZE, self.service, self._generation, "more"
        )

    def on_logs_tab_page_loaded(self, message: PageLoaded) -> None:
        message.stop()
        if message.generation != self._generation:
            return
        self._loading = False
        page = message.page
        if message.mode == "more":
            fresh = [row for row in page.rows if row.id not in self._ids]
            self._rows.extend(fresh)
            self._ids.update(row.id for row in fresh)
            self._add_rows(fresh)
            self._next = page.next
        elif message.mode == "refresh":
            self._refresh(page)
        else:
            self._newer = 0
            self._show(page)
        self._show_summary()
        self.refresh_bindings()

    def _show(self, page: queries.Page[queries.LogRow]) -> None:
        self._rows = list(page.rows)
        self._ids = {row.id for row in page.rows}
        self._next = page.next
        self._rebuild()

    def _refresh(self, first: queries.Page[queries.LogRow]) -> None:
        """Fold the newest calls, read again, into what is shown (calls never
        change once logged, so only new and pruned ones matter)."""
        merged = queries.after_first_page(
            first, self._rows, self._next, queries.log_cursor
        )
        if [row.id for row in merged.rows] == [row.id for row in self._rows]:
            self._next = merged.next
        elif len(merged.rows) > REBUILD_LIMIT:
            self._newer = sum(1 for row in first.rows if row.id not in self._ids)
        else:
            self._newer = 0
            self._show(merged)

    def on_logs_tab_load_failed(self, message: LoadFailed) -> None:
        message.stop()
        if message.generation != self._generation:
            return
        self._loading = False
        text = clean(f"Could not read the API log: {message.error}")
        self.query_one("#logs-summary", Static).update(literal(text))
        self.notify(text, severity="error", markup=False)

    # -- the table -----------------------------------------------------------

    def on_resize(self, event: events.Resize) -> None:
        widths = column_widths(event.size.width)
        if widths != self._widths:
            self._widths = widths
            self._rebuild()

    def _rebuild(self) -> None:
        if not self._widths:
            return
        table = self.table
        current = self._highlighted_id()
        table.clear(columns=True)
        for key, width in self._widths.items():
            table.add_column(_HEADERS[key], width=width, key=key)
        self._add_rows(self._rows)
        if current is not None and current in self._ids:
            table.move_cursor(row=table.get_row_index(str(current)), animate=False)

    def _add_rows(self, rows: list[queries.LogRow]) -> None:
        if not self._widths:
            return
        theme = self.app.theme_variables
        table = self.table
        for row in rows:
            status = str(row.status) if row.status is not None else "error"
            table.add_row(
                _cell(format_utc(row.at).removesuffix(" UTC")),
                _cell(service_name(row.service)),
                _cell(row.method),
                _cell(short_url(row.url)),
                _cell(status, theme.get(status_tone(row.status), "")),
                Text(f"{row.duration_ms:,.0f} ms", no_wrap=True),
                key=str(row.id),
            )

    def _show_summary(self) -> None:
        summary = self.query_one("#logs-summary", Static)
        if not self._rows:
            summary.update("No API calls logged yet.")
            return
        shown = len(self._rows)
        noun = "call" if shown == 1 else "calls"
        more = " · more load as you move down" if self._next else ""
        newer = f" · {self._newer:,} newer: r shows them" if self._newer else ""
        summary.update(f"{shown:,} {noun}, newest first{more}{newer}")

    def _highlighted_id(self) -> int | None:
        table = self.table
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return int(key.value) if key.value is not None else None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.cursor_row >= event.data_table.row_count - LOAD_AHEAD:
            self._load_more()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_entry()

    # -- the filter ----------------------------------------------------------

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        value = str(event.value)
        service = None if value == "all" else value
        if service != self.service:
            self.service = service
            self._rows = []
            self._ids = set()
            self._next = None
            self.start_over()

    def show_service(self, value: str) -> None:
        """Show the calls of one service ("klaviyo", "zappost") or of all."""
        self.query_one("#logs-filter", Select).value = value

    # -- actions -------------------------------------------------------------

    def action_open_entry(self) -> None:
        """Show the highlighted call in full."""
        entry_id = self._highlighted_id()
        if entry_id is not None:
            self.app.push_screen(LogDetailScreen(entry_id))

    def action_next_filter(self) -> None:
        """Show Klaviyo calls, then ZAP~POST calls, then all of them."""
        values = [value for _, value in FILTERS]
        current = "all" if self.service is None else self.service
        self.show_service(values[(values.index(current) + 1) % len(values)])

    def action_reload(self) -> None:
        """Read the API log again, from the newest call."""
        self.start_over()
