"""A DataTable whose rows are kept in step with fresh data by key.

Reloading a table by clearing it loses the cursor and flickers; this one
updates only the cells that changed, removes rows that went away and adds the
new ones, so the operator's place in the table survives a reload.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.coordinate import Coordinate
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, RowKey

Cells = Sequence[Text | str]


class KeyedTable(DataTable[Text | str]):
    """A row-cursor DataTable updated by row key instead of being rebuilt."""

    DEFAULT_CSS = """
    KeyedTable {
        height: 1fr;
    }
    """

    def __init__(
        self, columns: Sequence[tuple[str, str]], *, id: str | None = None
    ) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._column_spec = list(columns)
        self._shown: dict[str, tuple[Text | str, ...]] = {}

    def on_mount(self) -> None:
        for key, label in self._column_spec:
            self.add_column(label, key=key)

    def watch_virtual_size(self) -> None:
        # A column widened by a changed cell: lines drawn before the new widths
        # were known would otherwise stay cut off until the cursor moves.
        self._clear_caches()
        self.refresh()

    def show_rows(self, rows: Sequence[tuple[str, Cells]]) -> None:
        """Make the table show exactly `rows`, given as (row key, cells) in order."""
        wanted = [key for key, _ in rows]
        for key in [key for key in self._shown if key not in wanted]:
            self.remove_row(key)
            del self._shown[key]
        existing = list(self._shown)
        if wanted[: len(existing)] != existing:  # new rows only ever go last
            self._rebuild(rows)
            return
        for key, cells in rows:
            values = tuple(cells)
            if key not in self._shown:
                self.add_row(*values, key=key)
            elif self._shown[key] != values:
                for (column, _), old, new in zip(
                    self._column_spec, self._shown[key], values, strict=True
                ):
                    if old != new:
                        self.update_cell(key, column, new, update_width=True)
            self._shown[key] = values

    def set_cell(self, row_key: str, column_key: str, value: Text | str) -> None:
        """Change one cell of a shown row (nothing happens if the row is gone)."""
        if row_key not in self._shown:
            return
        index = [key for key, _ in self._column_spec].index(column_key)
        values = list(self._shown[row_key])
        values[index] = value
        self._shown[row_key] = tuple(values)
        self.update_cell(row_key, column_key, value, update_width=True)

    def selected_key(self) -> str | None:
        """The key of the row under the cursor, or None when the table is empty."""
        if not self.row_count:
            return None
        try:
            row_key: RowKey = self.coordinate_to_cell_key(
                Coordinate(self.cursor_row, 0)
            ).row_key
        except CellDoesNotExist:
            return None
        return row_key.value

    def select_key(self, row_key: str) -> None:
        """Move the cursor to the row with this key, if it is shown."""
        if row_key in self._shown:
            self.move_cursor(row=self.get_row_index(row_key))

    def _rebuild(self, rows: Sequence[tuple[str, Cells]]) -> None:
        selected = self.selected_key()
        self.clear()
        self._shown = {}
        for key, cells in rows:
            self._shown[key] = tuple(cells)
            self.add_row(*cells, key=key)
        if selected is not None:
            self.select_key(selected)
