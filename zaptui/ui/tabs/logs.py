"""Logs: every API call to Klaviyo and ZAP~POST, newest first, paged."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from urllib.parse import urlsplit

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Label, Select, Static

from zaptui.clock import format_utc
from zaptui.services import Services
from zaptui.store import queries
from zaptui.ui.screens.log_detail import LogDetailScreen, service_name, status_tone
from zaptui.ui.widgets.paged_table import (
    PagedTable,
    PagedTableTab,
    PageReader,
    ellipsis_cell,
)

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


class LogsTab(PagedTableTab[queries.LogRow]):
    """The API log: a table of calls and a screen with one call in full."""

    BINDINGS = [
        Binding("f", "next_filter", "Service"),
        Binding("r", "reload", "Refresh"),
    ]

    TABLE_ID = "logs-table"
    SUMMARY_ID = "logs-summary"
    SOURCE = "the API log"
    HEADERS = _HEADERS
    NOUNS = ("call", "calls")
    EMPTY_SUMMARY = "No API calls logged yet."

    def __init__(self, services: Services, *, id: str | None = None) -> None:
        super().__init__(services, id=id)
        self.service: str | None = None

    def compose(self) -> ComposeResult:
        # The table comes first so that it is the first thing focused.
        yield PagedTable(id="logs-table")
        with Horizontal(id="logs-bar"):
            yield Label("Service", id="logs-filter-label")
            yield Select(
                FILTERS, value="all", allow_blank=False, compact=True, id="logs-filter"
            )
            yield Static("Loading the API log…", id="logs-summary")

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

    # -- the table -----------------------------------------------------------

    def page_reader(self) -> PageReader:
        """API calls to the service shown (all when None), newest first."""
        return partial(queries.log_page, service=self.service)

    def row_cursor(self, row: queries.LogRow) -> queries.Cursor:
        """Where a call sits in the log's order."""
        return queries.log_cursor(row)

    def column_widths(self, width: int) -> dict[str, int]:
        """Column widths that fill the table: the URL takes what is left."""
        return column_widths(width)

    def row_cells(self, row: queries.LogRow, theme: dict[str, str]) -> dict[str, Text]:
        """A call's cells by column key."""
        status = str(row.status) if row.status is not None else "error"
        return {
            "at": ellipsis_cell(format_utc(row.at).removesuffix(" UTC")),
            "service": ellipsis_cell(service_name(row.service)),
            "method": ellipsis_cell(row.method),
            "url": ellipsis_cell(short_url(row.url)),
            "status": ellipsis_cell(status, theme.get(status_tone(row.status), "")),
            "duration": Text(f"{row.duration_ms:,.0f} ms", no_wrap=True),
        }

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
            self._forget_rows()
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
