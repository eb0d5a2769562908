"""Settings: how and how often the integration syncs."""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Static

from zaptui.services import Services


class SettingsTab(Widget):
    """Settings: how and how often the integration syncs."""

    def __init__(self, services: Services, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.services = services

    def compose(self) -> ComposeResult:
        yield Static("Loading…")

    def reload(self) -> None:
        """Load the data again."""

    def commands(self) -> list[tuple[str, str, Callable[[], object]]]:
        """Command-palette entries for this tab."""
        return []
