"""The mapping of one data connection: which profile field fills each campaign field.

The operator changes it here: each campaign field other than the address and
the customer id can be filled from a profile field, a custom property or
nothing. Changes are held on the screen until they are saved, and the
services check them then (a required field left unmapped is refused).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Static
from textual.worker import Worker, WorkerState

from zaptui.domain.mapping import ADDRESS_FIELDS, campaign_fields, is_profile_path
from zaptui.services import ServiceError, Services
from zaptui.ui.confirm import ConfirmScreen
from zaptui.ui.screens.profile_field import NOT_MAPPED, ProfileFieldScreen
from zaptui.ui.tabs import plural, theme_tone, toast
from zaptui.ui.text import literal
from zaptui.ui.widgets.keyed_table import KeyedTable

COLUMNS = (
    ("field", "Campaign field"),
    ("required", "Required"),
    ("source", "Profile field"),
)
ADDRESS_SOURCE = "the cleansed address"
PROFILE_ID_SOURCE = "the Klaviyo profile id"


@dataclass(frozen=True)
class MappingLine:
    """One campaign field and where its value comes from."""

    name: str
    label: str
    required: bool
    source: str
    automatic: bool

    @property
    def described(self) -> str:
        """The field as a sentence names it: its label and its name."""
        if self.label and self.label != self.name:
            return f"{self.label} ({self.name})"
        return self.name


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
            source, automatic = ADDRESS_SOURCE, True
        elif field.name == "customerid":
            source, automatic = PROFILE_ID_SOURCE, True
        else:
            source, automatic = mapping.get(field.name, ""), False
        lines.append(
            MappingLine(field.name, field.label, field.required, source, automatic)
        )
    return lines


class MappingScreen(ModalScreen[bool]):
    """Change a data connection's mapping: campaign field <- profile field.

    Dismisses with True when a changed mapping was saved.
    """

    BINDINGS = [
        Binding("ctrl+s", "save", "Save"),
        Binding("delete,backspace", "clear", "Not mapped"),
        Binding("escape", "cancel", "Cancel"),
        Binding("q", "cancel", "Cancel", show=False),
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

    class Saved(Message):
        """The services stored the changed mapping."""

    class Refused(Message):
        """The services would not store the mapping; the reason says why."""

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
        self.lines: dict[str, MappingLine] = {}
        self.edits: dict[str, str] = {}
        """Campaign field -> profile path as the operator has it, saved or not."""
        self.saving = False

    def compose(self) -> ComposeResult:
        with Vertical(id="mapping-dialog", classes="dialog"):
            yield Static(
                Text.assemble("Mapping of ", literal(self.connection_name)),
                classes="dialog-title",
            )
            yield Static(
                "Campaign field ← profile field. enter changes a field, delete "
                "leaves it not mapped, ctrl+s saves, escape cancels.",
                classes="dialog-help",
            )
            yield KeyedTable(COLUMNS, id="mapping-table")
            yield Static(id="mapping-detail")
            yield Static(id="mapping-error", classes="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button(
                    "Save", variant="primary", id="save", compact=True, disabled=True
                )
                yield Button("Cancel", id="cancel", compact=True)

    @property
    def table(self) -> KeyedTable:
        """The campaign fields and their profile fields."""
        return self.query_one("#mapping-table", KeyedTable)

    def on_mount(self) -> None:
        self.table.loading = True
        self.table.focus()
        self._load()

    # -- reading ---------------------------------------------------------------

    @work(thread=True, exclusive=True, group="mapping", exit_on_error=False)
    def _load(self) -> None:
        try:
            lines = mapping_lines(self.services, self.connection_id)
        except ServiceError as error:
            self.post_message(self.Failed(str(error)))
            return
        self.post_message(self.Loaded(lines))

    def on_mapping_screen_loaded(self, message: Loaded) -> None:
        self.table.loading = False
        self.lines = {line.name: line for line in message.lines}
        self.edits = {
            line.name: line.source for line in message.lines if not line.automatic
        }
        self.query_one("#save", Button).disabled = False
        self._show()

    def on_mapping_screen_failed(self, message: Failed) -> None:
        self.table.loading = False
        self._show_error(message.reason)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is not WorkerState.ERROR:
            return
        if event.worker.group == "mapping-save":
            self.saving = False
            self._show_error(f"The mapping could not be saved: {event.worker.error}")
        else:
            self.table.loading = False
            self._show_error(f"The mapping could not be read: {event.worker.error}")

    # -- showing ---------------------------------------------------------------

    def changed(self) -> list[str]:
        """The campaign fields whose profile field differs from the saved one."""
        return [
            name for name, path in self.edits.items() if path != self.lines[name].source
        ]

    def unmapped_required(self) -> list[str]:
        """The required campaign fields the edited mapping leaves empty."""
        return [
            name
            for name, path in self.edits.items()
            if self.lines[name].required and not path
        ]

    def _show(self) -> None:
        rows = []
        for line in self.lines.values():
            name = literal(line.name)
            if line.label and line.label != line.name:
                name.append_text(literal(f"  {line.label}", style="dim"))
            rows.append(
                (line.name, (name, "yes" if line.required else "", self._source(line)))
            )
        self.table.show_rows(rows)
        self._show_detail()

    def _source(self, line: MappingLine) -> Text:
        """The Profile field cell: where the value comes from, and what changed."""
        if line.automatic:
            return Text(line.source, style="italic")
        tone = theme_tone(self)
        path = self.edits.get(line.name, "")
        if not path:
            text = Text("not mapped", style="dim")
            if line.required:
                text = Text("not mapped: required", style=f"bold {tone('error')}")
        elif not is_profile_path(path):
            text = literal(path, style=tone("error"))
            text.append(" (not a profile field)")
        else:
            text = literal(path)
        if path != line.source:
            text.stylize("bold")
            text.append_text(
                Text.assemble(
                    "  was ", literal(line.source or "not mapped"), style="dim"
                )
            )
        return text

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._show_detail()

    def _show_detail(self) -> None:
        """What the selected field is, then what is not saved or not mapped."""
        detail = Text()
        line = self._selected()
        if line is not None:
            detail.append_text(self._line_detail(line))
        changed, missing = self.changed(), self.unmapped_required()
        if changed:
            detail.append(f"\nNot saved yet: {plural(len(changed), 'change')}.")
        if missing:
            detail.append("\nRequired but not mapped: ")
            detail.append_text(literal(", ".join(missing)))
            detail.append(". Saving is refused until each is mapped.")
        self.query_one("#mapping-detail", Static).update(detail)

    def _line_detail(self, line: MappingLine) -> Text:
        if line.automatic:
            return Text.assemble(
                literal(line.described),
                f" is filled from {line.source} on every record: it cannot be mapped.",
            )
        path = self.edits.get(line.name, "")
        return Text.assemble(
            literal(line.described),
            " ← ",
            literal(path) if path else "not mapped",
            " (required)" if line.required else "",
        )

    def _selected(self) -> MappingLine | None:
        key = self.table.selected_key()
        return self.lines.get(key) if key is not None else None

    def _show_error(self, reason: str) -> None:
        error = self.query_one("#mapping-error", Static)
        error.update(literal(reason))
        error.display = bool(reason)  # no blank line while there is nothing to say

    # -- changing --------------------------------------------------------------

    @on(DataTable.RowSelected, "#mapping-table")
    def _row_chosen(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_change()

    def _changeable(self) -> MappingLine | None:
        """The selected line if the operator may change it; else say why not."""
        if self.saving:
            return None
        line = self._selected()
        if line is not None and line.automatic:
            toast(
                self,
                f"{line.described} is filled from {line.source} on every record, "
                "so it cannot be mapped.",
                severity="warning",
            )
            return None
        return line

    def action_change(self) -> None:
        """Choose the profile field that fills the selected campaign field."""
        line = self._changeable()
        if line is None:
            return

        def chosen(path: str | None) -> None:
            if path is not None:
                self._set(line.name, path)

        self.app.push_screen(
            ProfileFieldScreen(line.described, self.edits.get(line.name, "")), chosen
        )

    def action_clear(self) -> None:
        """Leave the selected campaign field not mapped."""
        line = self._changeable()
        if line is not None:
            self._set(line.name, NOT_MAPPED)

    def _set(self, name: str, path: str) -> None:
        self.edits[name] = path
        self.table.set_cell(name, "source", self._source(self.lines[name]))
        self._show_error("")  # a refusal was about the mapping before this change
        self._show_detail()

    # -- saving and leaving ----------------------------------------------------

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "save":
            self.action_save()
        else:
            self.action_cancel()

    def action_save(self) -> None:
        """Store the edited mapping through the services, which check it first."""
        if self.saving or not self.lines:
            return
        if not self.changed():
            toast(self, "Nothing to save: the mapping is as it was.")
            self.dismiss(False)
            return
        self.saving = True
        self.query_one("#save", Button).disabled = True
        self._show_error("")
        self._save({name: path for name, path in self.edits.items() if path})

    @work(thread=True, exclusive=True, group="mapping-save", exit_on_error=False)
    def _save(self, mapping: dict[str, str]) -> None:
        try:
            self.services.update_mapping(self.connection_id, mapping)
        except ServiceError as error:
            self.post_message(self.Refused(str(error)))
            return
        self.post_message(self.Saved())

    def on_mapping_screen_saved(self, message: Saved) -> None:
        self.saving = False
        toast(
            self,
            f"{plural(len(self.changed()), 'campaign field')} changed.",
            title=f"Mapping of {self.connection_name} saved",
        )
        self.dismiss(True)

    def on_mapping_screen_refused(self, message: Refused) -> None:
        self.saving = False
        self.query_one("#save", Button).disabled = False
        self._show_error(f"Not saved: {message.reason}.")

    def action_cancel(self) -> None:
        """Close without saving; with unsaved changes, ask first."""
        if self.saving:
            return
        changed = self.changed()
        if not changed:
            self.dismiss(False)
            return

        def answered(discard: bool | None) -> None:
            if discard:
                self.dismiss(False)

        body = (
            f"{plural(len(changed), 'change')} to the mapping of "
            f"{self.connection_name} ({', '.join(changed)}) will be lost.\n\n"
            "Choose Cancel to go back and save them."
        )
        self.app.push_screen(
            ConfirmScreen("Discard the unsaved changes?", body, "Discard", danger=True),
            answered,
        )
