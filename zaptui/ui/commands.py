"""The command palette's provider: the tab in view's actions, then the console's."""

from __future__ import annotations

from typing import Protocol, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

from zaptui.ui.tabs import Command


class OffersCommands(Protocol):
    """An app that lists its palette commands, most relevant first."""

    def palette_commands(self) -> list[Command]:
        """The active tab's commands, then the global ones."""


class ConsoleCommands(Provider):
    """Offers what the active tab can do and the console-wide commands."""

    def _commands(self) -> list[Command]:
        return cast(OffersCommands, self.app).palette_commands()

    async def discover(self) -> Hits:
        """Everything on offer, before anything is typed."""
        for name, help_text, callback in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        """The commands whose names match what was typed."""
        matcher = self.matcher(query)
        for name, help_text, callback in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
