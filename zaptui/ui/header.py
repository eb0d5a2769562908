"""The console's top line: the ZAP~POST account and the scheduler's state."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Static
from textual.worker import Worker

from zaptui import settings
from zaptui.services import Services
from zaptui.ui.tabs import report_worker_failure
from zaptui.ui.text import literal

REFRESH_SECONDS = 5.0
STATES = ("running here", "running elsewhere", "stopped")


def read_scheduler_state(owner: str) -> str:
    """The scheduler's state from the database; "stopped" without a scheduler."""
    try:
        from zaptui.scheduler import scheduler_state
    except ImportError:
        return "stopped"
    return scheduler_state(owner)


class ConsoleHeader(Horizontal):
    """Names the ZAP~POST account and says whether the scheduler runs, and where."""

    class Read(Message):
        """The header's facts were read from the database."""

        def __init__(self, account_name: str, state: str) -> None:
            super().__init__()
            self.account_name = account_name
            self.state = state

    def __init__(self, services: Services, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.services = services

    def compose(self) -> ComposeResult:
        yield Static("zaptui", id="header-title")
        yield Static(id="header-account")
        yield Static(id="header-scheduler")

    def on_mount(self) -> None:
        self.refresh_facts()
        self.set_interval(REFRESH_SECONDS, self.refresh_facts)

    @work(thread=True, exclusive=True, group="header", exit_on_error=False)
    def refresh_facts(self) -> None:
        """Read the account name and the scheduler's state again."""
        name = str(settings.get("zap_account_name") or "")
        state = read_scheduler_state(self.services.runtime.owner)
        self.post_message(self.Read(name, state))

    def on_console_header_read(self, message: Read) -> None:
        account = self.query_one("#header-account", Static)
        if message.account_name:
            account.update(Text.assemble("ZAP~POST ", literal(message.account_name)))
        else:
            account.update("ZAP~POST account not named (Settings)")
        scheduler = self.query_one("#header-scheduler", Static)
        scheduler.update(f"Scheduler: {message.state}")
        for state in STATES:
            scheduler.set_class(state == message.state, f"-{state.replace(' ', '-')}")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        report_worker_failure(self, event)
