"""The form that pairs a Klaviyo account by its private key."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static
from textual.worker import Worker, WorkerState

from zaptui.services import ServiceError, Services
from zaptui.store.models import Account
from zaptui.ui.text import literal


class ConnectAccountScreen(ModalScreen[Account | None]):
    """Ask for a private key (masked), check it with Klaviyo, return the account.

    A refused key leaves the form open with the reason and what was typed, so
    the operator can correct it; the key is never shown again once accepted.
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    class Refused(Message):
        """Klaviyo or the services refused the key."""

        def __init__(self, reason: str) -> None:
            super().__init__()
            self.reason = reason

    class Paired(Message):
        """The account was paired."""

        def __init__(self, account: Account) -> None:
            super().__init__()
            self.account = account

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services

    def compose(self) -> ComposeResult:
        with Vertical(id="connect-dialog", classes="dialog"):
            yield Static("Connect a Klaviyo account", classes="dialog-title")
            yield Static(
                "Paste the account's private API key (it starts with pk_). "
                "It is checked with Klaviyo, stored encrypted and never shown "
                "again.",
                classes="dialog-help",
            )
            yield Input(placeholder="pk_…", password=True, id="api-key")
            yield Static(id="connect-error", classes="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Connect", variant="primary", id="connect")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#api-key", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "connect":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def _submit(self) -> None:
        button = self.query_one("#connect", Button)
        if button.disabled:
            return
        key = self.query_one("#api-key", Input).value
        if not key.strip():
            self._show_error("Paste the private API key first.")
            return
        button.disabled = True
        button.label = "Checking…"
        self.query_one("#connect-error", Static).update("")
        self._connect(key)

    @work(thread=True, exclusive=True, group="connect", exit_on_error=False)
    def _connect(self, key: str) -> None:
        try:
            account = self.services.connect_account(key)
        except ServiceError as error:
            self.post_message(self.Refused(str(error)))
            return
        self.post_message(self.Paired(account))

    def on_connect_account_screen_refused(self, message: Refused) -> None:
        self._show_error(message.reason)

    def on_connect_account_screen_paired(self, message: Paired) -> None:
        self.query_one("#api-key", Input).value = ""
        self.dismiss(message.account)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR:
            self._show_error(f"The key could not be checked: {event.worker.error}")

    def _show_error(self, reason: str) -> None:
        self.query_one("#connect-error", Static).update(literal(reason))
        button = self.query_one("#connect", Button)
        button.disabled = False
        button.label = "Connect"
        self.query_one("#api-key", Input).focus()
