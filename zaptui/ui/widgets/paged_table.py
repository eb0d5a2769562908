"""A tab whose table pages through the database, newest first.

The sync history and the API log both show tables far longer than one read
should bring back. This base reads them a keyset page at a time in a thread
worker, loads the next page as the cursor nears the end, and folds the newest
page, read again, into what is shown so the operator keeps their place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from rich.text import Text
from textual import events, work
from textual.binding import Binding
from textual.message import Message
from textual.widget import Widget
from textual.widgets import DataTable, Static

from zaptui.services import Services
from zaptui.store import queries
from zaptui.ui.text import clean, literal

log = logging.getLogger(__name__)


class KeyedRow(Protocol):
    """A row read from the database, known by its id."""

    @property
    def id(self) -> int: ...


Row = TypeVar("Row", bound=KeyedRow)

PageReader = Callable[[queries.Cursor | None, int], queries.Page[Any]]
"""Reads the page after a cursor (None: the first), at most `limit` rows long."""


def ellipsis_cell(value: object, style: str = "") -> Text:
    """A cell shown literally on one line, cut with an ellipsis when too long."""
    text = literal(value, style=style)
    text.no_wrap = True
    text.overflow = "ellipsis"
    return text


class PagedTable(DataTable):
    """The table of a PagedTableTab: one row highlighted, Enter for its details.

    Enter stays the table's own binding, handled in the table's turn after any
    arrow keys typed before it; only its Footer label is added here.
    """

    BINDINGS = [Binding("enter", "select_cursor", "Details")]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)


class PagedTableTab(Widget, Generic[Row]):
    """A table of rows, newest first, read a page at a time as the cursor moves.

    A subclass composes a PagedTable with id TABLE_ID and a Static with id
    SUMMARY_ID, and says how to read a page, where a row sits in the order and
    what its cells show.
    """

    TABLE_ID: ClassVar[str]
    SUMMARY_ID: ClassVar[str]
    SOURCE: ClassVar[str]
    """What is read, as errors name it: "the sync history"."""
    HEADERS: ClassVar[dict[str, str]]
    """Column labels by column key."""
    SHORT_HEADERS: ClassVar[dict[str, str]] = {}
    """Labels for columns too narrow for their usual one."""
    NOUNS: ClassVar[tuple[str, str]]
    """The summary's word for one row and for several."""
    EMPTY_SUMMARY: ClassVar[str]
    SUMMARY_HINT: ClassVar[str] = ""
    """Said at the end of the summary while there are rows."""

    LOAD_AHEAD: ClassVar[int] = 30
    """Load the next page when the cursor comes within this many rows of the end."""
    REBUILD_LIMIT: ClassVar[int] = 1_000
    """Reading the newest rows again redraws the table only up to this many rows;
    deeper down new rows wait for a fresh start so the operator keeps their place."""

    class PageLoaded(Message):
        """A page of rows was read.

        `mode` says where it goes: "start" (the table starts again), "refresh"
        (the newest rows again, above those already loaded) or "more" (below).
        """

        def __init__(self, page: queries.Page[Any], generation: int, mode: str) -> None:
            super().__init__()
            self.page = page
            self.generation = generation
            self.mode = mode

    class LoadFailed(Message):
        """Reading the rows failed."""

        def __init__(self, error: str, generation: int) -> None:
            super().__init__()
            self.error = error
            self.generation = generation

    def __init__(self, services: Services, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.services = services
        self._rows: list[Row] = []
        self._by_id: dict[int, Row] = {}
        self._next: queries.Cursor | None = None
        self._loading = False
        self._newer = 0
        # Pages read for an earlier start (another filter, a fresh start) are
        # dropped when they arrive: only the latest generation is shown.
        self._generation = 0
        self._widths: dict[str, int] = {}

    # -- what a subclass says ------------------------------------------------

    def page_reader(self) -> PageReader:
        """How to read a page as things stand now (asked on the event loop)."""
        raise NotImplementedError

    def row_cursor(self, row: Row) -> queries.Cursor:
        """Where a row sits in the table's order."""
        raise NotImplementedError

    def row_cells(self, row: Row, theme: dict[str, str]) -> dict[str, Text]:
        """A row's cells by column key."""
        raise NotImplementedError

    def column_widths(self, width: int) -> dict[str, int]:
        """Column widths (in order) that fill a table `width` cells wide."""
        raise NotImplementedError

    def cursor_moved(self) -> None:
        """Called once the table's cursor reached another row."""

    # -- reading -------------------------------------------------------------

    @property
    def table(self) -> DataTable:
        """The paged table."""
        return self.query_one(f"#{self.TABLE_ID}", DataTable)

    def on_mount(self) -> None:
        self._read_first_page("start")

    def reload(self) -> None:
        """Read the newest rows again; the rows loaded below them stay."""
        self._read_first_page("refresh")

    def start_over(self) -> None:
        """Show the newest rows only, dropping the pages loaded below them."""
        self._read_first_page("start")

    def action_reload(self) -> None:
        """Read the table again, from the newest row."""
        self.start_over()

    def _read_first_page(self, mode: str) -> None:
        self._generation += 1
        self._loading = True
        self._fetch(self.page_reader(), None, self._generation, mode)

    def _load_more(self) -> None:
        if self._loading or self._next is None:
            return
        self._loading = True
        self._fetch(self.page_reader(), self._next, self._generation, "more")

    @work(thread=True, exclusive=True, group="pages", exit_on_error=False)
    def _fetch(
        self,
        read: PageReader,
        after: queries.Cursor | None,
        generation: int,
        mode: str,
    ) -> None:
        try:
            page = read(after, queries.PAGE_SIZE)
        except Exception as error:
            log.exception("could not read %s", self.SOURCE)
            self.post_message(self.LoadFailed(str(error), generation))
            return
        self.post_message(self.PageLoaded(page, generation, mode))

    def on_paged_table_tab_page_loaded(self, message: PageLoaded) -> None:
        message.stop()
        if message.generation != self._generation:
            return
        self._loading = False
        page: queries.Page[Row] = message.page
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

    def on_paged_table_tab_load_failed(self, message: LoadFailed) -> None:
        message.stop()
        if message.generation != self._generation:
            return
        self._loading = False
        text = clean(f"Could not read {self.SOURCE}: {message.error}")
        self.query_one(f"#{self.SUMMARY_ID}", Static).update(literal(text))
        self.notify(text, severity="error", markup=False)

    def _forget_rows(self) -> None:
        """Drop the rows shown, before reading others (another filter)."""
        self._rows = []
        self._by_id = {}
        self._next = None

    def _show(self, page: queries.Page[Row]) -> None:
        self._rows = list(page.rows)
        self._by_id = {row.id: row for row in page.rows}
        self._next = page.next
        self._rebuild()

    def _refresh(self, first: queries.Page[Row]) -> None:
        """Fold the newest rows, read again, into what is shown."""
        merged = queries.after_first_page(
            first, self._rows, self._next, self.row_cursor
        )
        same_rows = [row.id for row in merged.rows] == [row.id for row in self._rows]
        if same_rows:
            self._update_in_place(merged.rows)
            self._next = merged.next
        elif len(merged.rows) > self.REBUILD_LIMIT:
            self._update_in_place([row for row in merged.rows if row.id in self._by_id])
            self._newer = sum(1 for row in first.rows if row.id not in self._by_id)
        else:
            self._newer = 0
            self._show(merged)

    def _update_in_place(self, rows: list[Row]) -> None:
        """Change only the cells of rows whose values changed (a run's status)."""
        if not self._widths:
            return
        theme = self.app.theme_variables
        table = self.table
        for row in rows:
            if self._by_id.get(row.id) == row:
                continue
            self._by_id[row.id] = row
            cells = self.row_cells(row, theme)
            for key in self._widths:
                table.update_cell(str(row.id), key, cells[key])
        self._rows = [self._by_id[row.id] for row in self._rows]

    # -- the table -----------------------------------------------------------

    def on_resize(self, event: events.Resize) -> None:
        widths = self.column_widths(event.size.width)
        if widths != self._widths:
            self._widths = widths
            self._rebuild()

    def _rebuild(self) -> None:
        """Lay the table out again, keeping the highlighted row highlighted."""
        if not self._widths:
            return
        table = self.table
        current = self._highlighted_id()
        table.clear(columns=True)
        for key, width in self._widths.items():
            label = self.HEADERS[key]
            if len(label) > width:
                label = self.SHORT_HEADERS.get(key, label)
            table.add_column(label, width=width, key=key)
        self._add_rows(self._rows)
        if current is not None and current in self._by_id:
            table.move_cursor(row=table.get_row_index(str(current)), animate=False)

    def _add_rows(self, rows: list[Row]) -> None:
        if not self._widths:
            return
        theme = self.app.theme_variables
        table = self.table
        for row in rows:
            cells = self.row_cells(row, theme)
            table.add_row(*(cells[key] for key in self._widths), key=str(row.id))

    def _show_summary(self) -> None:
        summary = self.query_one(f"#{self.SUMMARY_ID}", Static)
        if not self._rows:
            summary.update(self.EMPTY_SUMMARY)
            return
        shown = len(self._rows)
        noun = self.NOUNS[0] if shown == 1 else self.NOUNS[1]
        more = " · more load as you move down" if self._next else ""
        newer = f" · {self._newer:,} newer: r shows them" if self._newer else ""
        summary.update(
            f"{shown:,} {noun}, newest first{more}{newer}{self.SUMMARY_HINT}"
        )

    def _highlighted_id(self) -> int | None:
        table = self.table
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return int(key.value) if key.value is not None else None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.cursor_row >= event.data_table.row_count - self.LOAD_AHEAD:
            self._load_more()
        self.cursor_moved()
