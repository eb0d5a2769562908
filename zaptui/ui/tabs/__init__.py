"""The console tabs, one module each, and the little they share.

Every tab is a widget built as `XTab(services, id=...)`: it loads its own data
in a thread worker on mount and in `reload()`, carries its actions as
BINDINGS (so the footer shows them while it has focus) and lists them for the
command palette in `commands()`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from textual.dom import DOMNode
from textual.notifications import SeverityLevel
from textual.worker import Worker, WorkerState

from zaptui.ui.text import clean

log = logging.getLogger(__name__)

Command = tuple[str, str, Callable[[], object]]
"""A command-palette entry: its name, one line of help, and what it does."""

Tone = Callable[[str], str]
"""Turns a theme variable's name ("error", "success") into a Rich style."""


def theme_tone(node: DOMNode) -> Tone:
    """A Tone reading the app's current theme, for text inside table cells."""
    variables = node.app.theme_variables

    def tone(name: str) -> str:
        return variables.get(name, "") if name else ""

    return tone


def plural(count: int, noun: str) -> str:
    """`1 data connection`, `3 data connections`."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def toast(
    node: DOMNode,
    message: str,
    *,
    title: str = "",
    severity: SeverityLevel = "information",
    timeout: float | None = None,
) -> None:
    """Show a notification whose text may hold names from outside (thread-safe).

    The text is shown literally: no markup, control characters made visible.
    """
    node.app.notify(
        clean(message),
        title=clean(title),
        severity=severity,
        timeout=timeout,
        markup=False,
    )


def report_worker_failure(node: DOMNode, event: Worker.StateChanged) -> None:
    """Show a worker's unexpected failure as an error toast; the console goes on."""
    if event.state is not WorkerState.ERROR:
        return
    error = event.worker.error
    log.error("console task %s failed: %r", event.worker.name, error)
    message = f"That did not work: {error}"
    toast(node, message, title="Unexpected error", severity="error")
