"""Choosing the profile field that fills one campaign field of a mapping."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from zaptui.domain.mapping import PROFILE_FIELDS, PROPERTY_PREFIX, is_profile_path
from zaptui.ui.text import literal

NOT_MAPPED = ""
"""The choice that leaves a campaign field empty on every record."""


def path_problem(path: str) -> str:
    """Why a typed path cannot fill a campaign field, or "" when it can."""
    if is_profile_path(path):
        return ""
    if not path or path == PROPERTY_PREFIX:
        return (
            f"Write the custom property's name after {PROPERTY_PREFIX} "
            f"(for example {PROPERTY_PREFIX}tier)."
        )
    return (
        f"{path} is not a profile field: choose one from the list, or write a "
        f"custom property as {PROPERTY_PREFIX}<name>."
    )


class ProfileFieldScreen(ModalScreen[str | None]):
    """Pick a profile field, "not mapped", or type a custom property's path.

    Dismisses with the chosen path (NOT_MAPPED for none), or None when the
    operator keeps the field as it was.
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, field_described: str, current: str) -> None:
        super().__init__()
        self.field_described = field_described
        self.current = current
        self.choices = [NOT_MAPPED] + [path for path, _ in PROFILE_FIELDS]

    def compose(self) -> ComposeResult:
        with Vertical(id="profile-field-dialog", classes="dialog"):
            yield Static(
                Text.assemble("Fill ", literal(self.field_described), " from"),
                classes="dialog-title",
            )
            yield Static(
                "enter picks a field, tab goes to a custom property.",
                classes="dialog-help",
            )
            yield OptionList(*self._options(), id="profile-field-list", compact=True)
            yield Label("Or a custom property")
            custom = self.current.startswith(PROPERTY_PREFIX)
            yield Input(
                value=self.current if custom else PROPERTY_PREFIX,
                placeholder=f"{PROPERTY_PREFIX}<name>",
                id="custom-path",
                compact=True,
                select_on_focus=False,  # typing goes after the prefix
            )
            yield Static(id="profile-field-error", classes="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Use", variant="primary", id="use-custom", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def _options(self) -> list[Option]:
        options = [Option(Text("not mapped", style="italic"))]
        for path, label in PROFILE_FIELDS:
            options.append(Option(Text.assemble(label, (f"  {path}", "dim"))))
        return options

    def on_mount(self) -> None:
        options = self.query_one("#profile-field-list", OptionList)
        if self.current in self.choices:
            options.highlighted = self.choices.index(self.current)
            options.focus()
        else:
            options.highlighted = 0
            self.query_one("#custom-path", Input).focus()

    @on(OptionList.OptionSelected, "#profile-field-list")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(self.choices[event.option_index])

    @on(Input.Submitted, "#custom-path")
    def _typed(self, event: Input.Submitted) -> None:
        event.stop()
        self._use_custom()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "use-custom":
            self._use_custom()
        else:
            self.dismiss(None)

    def _use_custom(self) -> None:
        path = self.query_one("#custom-path", Input).value.strip()
        problem = path_problem(path)
        if problem:
            self.query_one("#profile-field-error", Static).update(literal(problem))
            return
        self.dismiss(path)

    def action_cancel(self) -> None:
        self.dismiss(None)
