"""Sync History: every sync run, newest first, paged through the database."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from zaptui.clock import format_utc
from zaptui.links import browser_opens_here
from zaptui.store import queries
from zaptui.ui.text import clean
from zaptui.ui.widgets.paged_table import (
    PagedTable,
    PagedTableTab,
    PageReader,
    ellipsis_cell,
)
from zaptui.ui.widgets.run_panel import RunPanel, status_text

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


def is_web_link(url: str | None) -> bool:
    """Whether a submission link is something a browser should be asked to open."""
    return bool(url) and str(url).lower().startswith(("https://", "http://"))


class SyncHistoryTab(PagedTableTab[queries.RunRow]):
    """The sync history: a table of runs and a panel with one run's details."""

    BINDINGS = [
        Binding("escape", "close_run", "Close"),
        Binding("o", "open_link", "Open link"),
        Binding("c", "copy_link", "Copy link"),
        Binding("r", "reload", "Refresh"),
    ]

    TABLE_ID = "history-table"
    SUMMARY_ID = "history-summary"
    SOURCE = "the sync history"
    HEADERS = _HEADERS
    SHORT_HEADERS = _SHORT_HEADERS
    NOUNS = ("sync run", "sync runs")
    EMPTY_SUMMARY = "No sync runs yet: each sync of a data connection appears here."
    SUMMARY_HINT = " · Enter for details"

    def compose(self) -> ComposeResult:
        yield Static("Loading sync history…", id="history-summary")
        yield PagedTable(id="history-table")
        yield RunPanel(id="run-panel")

    @property
    def panel(self) -> RunPanel:
        """The slide-out panel with one run's details."""
        return self.query_one(RunPanel)

    def reload(self) -> None:
        """Read the newest runs again; the runs loaded below them stay."""
        super().reload()
        if self.panel.open:
            self.panel.refresh_run()

    def start_over(self) -> None:
        """Show the newest runs only, dropping the pages loaded below them."""
        super().start_over()
        if self.panel.open:
            self.panel.refresh_run()

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

    # -- the table -----------------------------------------------------------

    def page_reader(self) -> PageReader:
        """Sync runs, newest first."""
        return queries.run_page

    def row_cursor(self, row: queries.RunRow) -> queries.Cursor:
        """Where a run sits in the history's order."""
        return queries.run_cursor(row)

    def column_widths(self, width: int) -> dict[str, int]:
        """Column widths that fill the table: the link only on wide terminals."""
        return column_widths(width)

    def row_cells(self, row: queries.RunRow, theme: dict[str, str]) -> dict[str, Text]:
        """A run's cells by column key."""
        return {
            "campaign": ellipsis_cell(row.campaign_name or "—"),
            "source": ellipsis_cell(row.source_name or "—"),
            "type": ellipsis_cell(row.source_type or "—"),
            "ingested": ellipsis_cell(format_utc(row.started_at).removesuffix(" UTC")),
            "profiles": Text(f"{row.fetched:,}", justify="right"),
            "link": ellipsis_cell(row.submission_url or "—"),
            "status": status_text(row.status, theme),
        }

    def _highlighted(self) -> queries.RunRow | None:
        run_id = self._highlighted_id()
        return self._by_id.get(run_id) if run_id is not None else None

    def cursor_moved(self) -> None:
        """The footer offers the link actions only for a run that has a link."""
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

    def _web_link(self) -> str | None:
        """The submission link to act on; None, once said, when there is none."""
        url = self._link()
        if url is None or not is_web_link(url):
            self.notify("This sync run has no submission link.", severity="warning")
            return None
        return url

    def action_open_link(self) -> None:
        """Open the submission in a browser, where the terminal allows it."""
        url = self._web_link()
        if url is None:
            return
        if not browser_opens_here():
            self.app.copy_to_clipboard(url)
            self.notify(
                clean(
                    "No browser can be opened from this terminal, so the link "
                    f"was copied to the clipboard: {url}"
                ),
                markup=False,
                timeout=10,
            )
            return
        self.app.open_url(url)
        self.notify(clean(f"Opening {url}"), markup=False)

    def action_copy_link(self) -> None:
        """Copy the submission link to the clipboard (where the terminal allows)."""
        url = self._web_link()
        if url is None:
            return
        self.app.copy_to_clipboard(url)
        self.notify("Submission link copied to the clipboard.")
