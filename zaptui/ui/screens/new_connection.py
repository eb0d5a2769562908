"""The form that pairs a Klaviyo list or segment with a ZAP~POST campaign."""

from __future__ import annotations

from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, Static
from textual.worker import Worker, WorkerState

from zaptui.services import ServiceError, Services, Source
from zaptui.store.models import DataConnection
from zaptui.ui.text import literal


class NewConnectionScreen(ModalScreen[DataConnection | None]):
    """Pick an account, one of its lists or segments, a campaign and a name."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    class Options(Message):
        """Choices for one of the form's Selects arrived."""

        def __init__(self, select_id: str, options: list[tuple[Any, str]]) -> None:
            super().__init__()
            self.select_id = select_id
            self.options = options

    class Failed(Message):
        """Something the form needs could not be read or done."""

        def __init__(self, reason: str) -> None:
            super().__init__()
            self.reason = reason

    class Created(Message):
        """The data connection was created."""

        def __init__(self, connection: DataConnection) -> None:
            super().__init__()
            self.connection = connection

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services
        self.sources: dict[str, Source] = {}

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="new-connection-dialog", classes="dialog"):
            yield Static("New data connection", classes="dialog-title")
            yield Label("Klaviyo account")
            yield Select[str](
                [], prompt="Loading accounts…", id="account", compact=True
            )
            yield Label("List or segment")
            yield Select[str](
                [], prompt="Choose an account first", id="source", compact=True
            )
            yield Label("ZAP~POST campaign")
            yield Select[str](
                [], prompt="Loading campaigns…", id="campaign", compact=True
            )
            yield Label("Connection name")
            yield Input(
                placeholder="optional: list or segment → campaign",
                id="name",
                compact=True,
            )
            yield Checkbox(
                "Only people who join from now on", id="new-joiners", compact=True
            )
            yield Static(id="new-connection-error", classes="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Create", variant="primary", id="create", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#account", Select).focus()
        self._load_accounts()
        self._load_campaigns()

    # -- loading the choices ---------------------------------------------------

    @work(thread=True, exclusive=True, group="form-accounts", exit_on_error=False)
    def _load_accounts(self) -> None:
        options = [
            (literal(f"{account.name} ({account.status})"), str(account.id))
            for account in self.services.accounts()
        ]
        self.post_message(self.Options("account", options))

    @work(thread=True, exclusive=True, group="form-campaigns", exit_on_error=False)
    def _load_campaigns(self) -> None:
        try:
            campaigns = self.services.campaigns()
        except ServiceError as error:
            self.post_message(self.Failed(str(error)))
            return
        options = [
            (literal(campaign.get("name", "")), str(campaign.get("id", "")))
            for campaign in campaigns
        ]
        self.post_message(self.Options("campaign", options))

    @work(thread=True, exclusive=True, group="form-sources", exit_on_error=False)
    def _load_sources(self, account_id: int) -> None:
        try:
            sources = self.services.sources(account_id)
        except ServiceError as error:
            self.post_message(self.Failed(str(error)))
            self.post_message(self.Options("source", []))
            return
        self.sources = {f"{s.type}:{s.id}": s for s in sources}
        options = [
            (literal(f"{source.name} ({source.type})"), key)
            for key, source in self.sources.items()
        ]
        self.post_message(self.Options("source", options))

    def on_new_connection_screen_options(self, message: Options) -> None:
        select = self.query_one(f"#{message.select_id}", Select)
        select.set_options(message.options)
        select.prompt = "Choose…" if message.options else "Nothing to choose"
        if len(message.options) == 1:
            select.value = message.options[0][1]

    @on(Select.Changed, "#account")
    def _account_chosen(self, event: Select.Changed) -> None:
        source = self.query_one("#source", Select)
        source.set_options([])
        if isinstance(event.value, str):
            source.prompt = "Loading lists and segments…"
            self._load_sources(int(event.value))
        else:
            source.prompt = "Choose an account first"

    def on_new_connection_screen_failed(self, message: Failed) -> None:
        self._show_error(message.reason)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR:
            self._show_error(f"That did not work: {event.worker.error}")

    # -- creating --------------------------------------------------------------

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "create":
            self._submit()
        else:
            self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def _submit(self) -> None:
        account = self.query_one("#account", Select).value
        source = self.sources.get(str(self.query_one("#source", Select).value))
        campaign = self.query_one("#campaign", Select).value
        if not isinstance(account, str):
            self._show_error("Choose a Klaviyo account.")
            return
        if source is None:
            self._show_error("Choose a list or segment.")
            return
        if not isinstance(campaign, str):
            self._show_error("Choose a campaign.")
            return
        button = self.query_one("#create", Button)
        if button.disabled:
            return
        button.disabled = True
        button.label = "Creating…"
        self.query_one("#new-connection-error", Static).update("")
        self._create(
            int(account),
            source,
            campaign,
            self.query_one("#name", Input).value.strip() or None,
            self.query_one("#new-joiners", Checkbox).value,
        )

    @work(thread=True, exclusive=True, group="form-create", exit_on_error=False)
    def _create(
        self,
        account_id: int,
        source: Source,
        campaign_id: str,
        name: str | None,
        new_joiners_only: bool,
    ) -> None:
        try:
            connection = self.services.create_connection(
                account_id,
                source.type,
                source.id,
                campaign_id,
                name=name,
                new_joiners_only=new_joiners_only,
            )
        except ServiceError as error:
            self.post_message(self.Failed(str(error)))
            return
        self.post_message(self.Created(connection))

    def on_new_connection_screen_created(self, message: Created) -> None:
        self.dismiss(message.connection)

    def _show_error(self, reason: str) -> None:
        self.query_one("#new-connection-error", Static).update(literal(reason))
        button = self.query_one("#create", Button)
        button.disabled = False
        button.label = "Create"
