"""One API call in full: request and response headers and bodies, as stored.

Secrets were redacted before the call was stored; everything here is shown
literally (no markup, escape sequences made visible), JSON pretty-printed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static

from zaptui.apilog import SERVICE_NAMES
from zaptui.clock import format_utc
from zaptui.store import queries
from zaptui.ui.text import clean, literal

log = logging.getLogger(__name__)


def service_name(service: str) -> str:
    """The name an operator knows a service by."""
    return SERVICE_NAMES.get(service, service)


def status_tone(status: int | None) -> str:
    """The theme variable that colours an HTTP status."""
    if status is None or status >= 500:
        return "error"
    if status >= 400:
        return "warning"
    return "success"


def pretty_body(body: str | None) -> str:
    """A body for reading: JSON indented, anything else exactly as stored."""
    if body is None or body == "":
        return "(empty)"
    try:
        parsed = json.loads(body)
    except ValueError:
        return body
    return json.dumps(parsed, indent=2, ensure_ascii=False)


def header_lines(headers: Any) -> str:
    """Headers one per line, `Name: value`."""
    if not headers:
        return "(none)"
    if isinstance(headers, dict):
        return "\n".join(f"{name}: {value}" for name, value in headers.items())
    return str(headers)


@dataclass(frozen=True)
class LogDetail:
    """An API call made ready to show (formatting big bodies is done off the UI)."""

    title: str
    facts: str
    error: str
    request_headers: str
    request_body: str
    response_headers: str
    response_body: str


def describe(entry: Any) -> LogDetail:
    """Turn a stored API log entry into the text of the detail screen."""
    status = str(entry.status) if entry.status is not None else "no response"
    facts = " · ".join(
        [
            service_name(entry.service),
            f"status {status}",
            f"{entry.duration_ms:,.0f} ms",
            format_utc(entry.at),
        ]
    )
    return LogDetail(
        title=f"{entry.method} {entry.url}",
        facts=facts,
        error=entry.error or "",
        request_headers=header_lines(entry.request_headers),
        request_body=pretty_body(entry.request_body),
        response_headers=header_lines(entry.response_headers),
        response_body=pretty_body(entry.response_body),
    )


class LogDetailScreen(Screen[None]):
    """The headers and bodies of one API call; Escape goes back."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("c", "copy_response", "Copy response body"),
    ]

    class Loaded(Message):
        """The entry was read and formatted; None if it is gone."""

        def __init__(self, detail: LogDetail | None, error: str = "") -> None:
            super().__init__()
            self.detail = detail
            self.error = error

    def __init__(self, entry_id: int) -> None:
        super().__init__()
        self.entry_id = entry_id
        self.detail: LogDetail | None = None

    def compose(self) -> ComposeResult:
        yield Static(f"API call {self.entry_id}", id="log-detail-title")
        yield Static("Loading…", id="log-detail-facts")
        with VerticalScroll(id="log-detail-body"):
            yield Static(id="log-detail-error", classes="log-error")
            for part, heading in (
                ("request-headers", "Request headers"),
                ("request-body", "Request body"),
                ("response-headers", "Response headers"),
                ("response-body", "Response body"),
            ):
                yield Static(heading, classes="log-heading")
                yield Static(id=f"log-{part}", classes="log-text")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#log-detail-body").focus()
        self._load()

    @work(thread=True, exclusive=True, group="log-detail", exit_on_error=False)
    def _load(self) -> None:
        try:
            entry = queries.log_entry(self.entry_id)
            detail = describe(entry) if entry is not None else None
        except Exception as error:
            log.exception("could not read API log entry %s", self.entry_id)
            self.post_message(self.Loaded(None, str(error)))
            return
        self.post_message(self.Loaded(detail))

    def on_log_detail_screen_loaded(self, message: Loaded) -> None:
        message.stop()
        facts = self.query_one("#log-detail-facts", Static)
        if message.detail is None:
            text = (
                f"Could not read this API call: {message.error}"
                if message.error
                else "This API call is no longer in the log."
            )
            facts.update(literal(text))
            return
        detail = self.detail = message.detail
        self.query_one("#log-detail-title", Static).update(literal(detail.title))
        facts.update(literal(detail.facts))
        error = self.query_one("#log-detail-error", Static)
        error.update(literal(f"Error: {detail.error}", single_line=False))
        error.display = bool(detail.error)
        for part, text in (
            ("request-headers", detail.request_headers),
            ("request-body", detail.request_body),
            ("response-headers", detail.response_headers),
            ("response-body", detail.response_body),
        ):
            self.query_one(f"#log-{part}", Static).update(
                literal(text, single_line=False)
            )

    def action_copy_response(self) -> None:
        """Copy the response body (where the terminal allows it)."""
        if self.detail is None:
            return
        self.app.copy_to_clipboard(clean(self.detail.response_body, single_line=False))
        self.notify("Response body copied to the clipboard.")
