"""The help screen: every key of the tab in view, then the console's own."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KeySection = tuple[str, Sequence[tuple[str, str]]]
"""A heading and its (key, what it does) lines."""


def binding_lines(
    bindings: Iterable[BindingType], display: Callable[[Binding], str]
) -> list[tuple[str, str]]:
    """(key, what it does) for each binding that has a description."""
    lines = []
    for binding in Binding.make_bindings(bindings):
        if binding.description:
            what = binding.description
            if binding.tooltip:
                what = f"{what}: {binding.tooltip}"
            lines.append((display(binding), what))
    return lines


class HelpScreen(ModalScreen[None]):
    """Lists keys by section; any of escape, ? or q closes it."""

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("question_mark", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, sections: Sequence[KeySection]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with Vertical(id="help-dialog", classes="dialog"):
            yield Static("Keys", classes="dialog-title")
            with VerticalScroll(id="help-body"):
                for heading, lines in self.sections:
                    yield Static(heading, classes="help-heading")
                    yield Static(self._table(lines), classes="help-keys")
            yield Static("escape closes this", classes="dialog-help")

    @staticmethod
    def _table(lines: Sequence[tuple[str, str]]) -> Table:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True, min_width=10)
        table.add_column()
        for key, description in lines:
            table.add_row(Text(key), Text(description))
        return table

    def action_close(self) -> None:
        self.dismiss(None)
