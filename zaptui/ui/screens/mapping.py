"""The mapping of one data connection: which profile field fills each campaign field.

Read-only for now: it shows every field of the campaign's record, whether it
is required, and where its value comes from.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Static
from textual.worker import Worker, WorkerState

from zaptui.domain.mapping import ADDRESS_FIELDS, campaign_fields
from zaptui.services import ServiceError, Services
from zaptui.ui.text import literal
from zaptui.ui.widgets.keyed_table import KeyedTable

COLUMNS = (
    ("field", "Campaign field"),
    ("required", "Required"),
    ("source", "Profile field"),
)


@dataclass(frozen=True)
class MappingLine:
    """One campaign field and where its value comes from."""

    name: str
    label: str
    required: bool
    source: str
    automatic: bool


def mapping_lines(services: Services, connection_id: int) -> list[MappingLine]:
    """The campaign's fields with the connection's mapping (blocking: HTTP)."""
    connection = next(
        (c for c in services.connections() if c.id == connection_id), None
    )
    if connection is None:
        raise ServiceError(f"there is no data connection {connection_id}")
    mapping = services.mapping(connection_id)
    fields = campaign_fields(services.campaign(connection.campaign_id))
    lines = []
    for field in fields:
        if field.name in ADDRESS_FIELDS:
            source, automatic = "the cleansed address", True
        elif field.name == "customerid":
            source, automatic = "the Klaviyo profile id", True
        else:
            source, automatic = mapping.get(field.name, ""), False
        lines.append(
            MappingLine(field.name, field.label, field.required, source, automatic)
        )
    return lines


class MappingScreen(ModalScreen[None]):
    """Show a data connection's mapping: campaign field -> profile field."""

    # TODO(mapping-editor): let the operator change the mapping here, through
    # Services.update_mapping, instead of only reading it.

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("q", "close", "Close", show=False),
    ]

    class Loaded(Message):
        """The mapping and the campaign's fields were read."""

        def __init__(self, lines: list[MappingLine]) -> None:
            super().__init__()
            self.lines = lines

    class Failed(Message):
        """The mapping could not be read."""

        def __init__(self, reason: str) -> None:
            super().__init__()
            self.reason = reason

    def __init__(
        self, services: Services, connection_id: int, connection_name: str
    ) -> None:
        super().__init__()
        self.services = services
        self.connection_id = connection_id
        self.connection_name = connection_name

    def compose(self) -> ComposeResult:
        with Vertical(id="mapping-dialog", classes="dialog"):
            yield Static(
                Text.assemble("Mapping of ", literal(self.connection_name)),
                classes="dialog-title",
            )
            yield Static(
                "Campaign field ← profile field. Address fields always come "
                "from the cleansed address. Editing the mapping comes later.",
                classes="dialog-help",
            )
            yield KeyedTable(COLUMNS, id="mapping-table")
            yield Static(id="mapping-error", classes="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", variant="primary", id="close")

    def on_mount(self) -> None:
        table = self.query_one("#mapping-table", KeyedTable)
        table.loading = True
        table.focus()
        self._load()

    @work(thread=True, exclusive=True, group="mapping", exit_on_error=False)
    def _load(self) -> None:
        try:
            lines = mapping_lines(self.services, self.connection_id)
        except ServiceError as error:
            self.post_message(self.Failed(str(error)))
            return
        self.post_message(self.Loaded(lines))

    def on_mapping_screen_loaded(self, message: Loaded) -> None:
        table = self.query_one("#mapping-table", KeyedTable)
        table.loading = False
        rows = []
        for line in message.lines:
            name = literal(line.name)
            if line.label and line.label != line.name:
                name.append(f"  {line.label}", style="dim")
            if line.automatic:
                source = Text(line.source, style="italic")
            elif line.source:
                source = literal(line.source)
            else:
                source = Text("not mapped", style="dim")
            rows.append((line.name, (name, "yes" if line.required else "", source)))
        table.show_rows(rows)

    def on_mapping_screen_failed(self, message: Failed) -> None:
        self._fail(message.reason)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR:
            self._fail(f"The mapping could not be read: {event.worker.error}")

    def _fail(self, reason: str) -> None:
        self.query_one("#mapping-table", KeyedTable).loading = False
        self.query_one("#mapping-error", Static).update(literal(reason))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)
