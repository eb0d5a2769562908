"""Settings: how and how often the integration syncs, saved as soon as changed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Input, Label, RadioButton, RadioSet, Static, Switch

from zaptui import settings
from zaptui.services import Services
from zaptui.settings import SPECS, SYNC_FREQUENCIES, SettingError
from zaptui.ui.messages import DataChanged
from zaptui.ui.text import clean, literal

log = logging.getLogger(__name__)

NUMBER_UNITS = {
    "hold_back_days": "days",
    "lookback_hours": "hours",
    "retention_days": "days",
}
TEXT_KEYS = ("hold_back_days", "lookback_hours", "retention_days", "alert_webhook_url")
SHOWN_KEYS = ("sync_frequency_hours", "fix_address_data", *TEXT_KEYS)


def hours(count: int) -> str:
    """`1 hour`, `6 hours`."""
    return f"{count} hour" if count == 1 else f"{count} hours"


def confirmation(key: str, value: Any) -> str:
    """The toast that confirms a saved setting (never repeating a webhook URL)."""
    label = SPECS[key].label
    if key == "sync_frequency_hours":
        return f"Sync frequency set to {hours(value)}"
    if key == "fix_address_data":
        return f"Fix address data switched {'on' if value else 'off'}"
    if key == "alert_webhook_url":
        return "Alert webhook saved" if value else "Alert webhook removed"
    unit = NUMBER_UNITS[key]
    if value == 1:
        unit = unit.removesuffix("s")
    suffix = " (off)" if key == "hold_back_days" and value == 0 else ""
    return f"{label} set to {value} {unit}{suffix}"


def parse_text(key: str, text: str) -> Any:
    """Read what was typed for a setting; raises SettingError with the sentence."""
    text = text.strip()
    if key in NUMBER_UNITS:
        try:
            value: Any = int(text)
        except ValueError:
            value = text  # not a number: validate() says what is expected
    else:
        value = text
    return settings.validate(key, value)


def unit_hint(key: str, *, saved: bool) -> str:
    """What follows an input: its unit, and whether what is typed is saved."""
    hint = "Enter saves" if saved else "not saved yet: Enter saves"
    unit = NUMBER_UNITS.get(key, "")
    return f"{unit} · {hint}" if unit else hint


def shown_text(value: Any) -> str:
    """A stored value as it appears in an input."""
    return "" if value is None else str(value)


class SettingsTab(Widget):
    """Sync frequency, address correction and the other settings, saved at once."""

    BINDINGS = [
        Binding("f", "next_frequency", "Frequency"),
        Binding("a", "toggle_address", "Address fix"),
        Binding("r", "reload", "Refresh"),
    ]

    class Loaded(Message):
        """The stored settings were read."""

        def __init__(self, values: dict[str, Any]) -> None:
            super().__init__()
            self.values = values

    class LoadFailed(Message):
        """The stored settings could not be read."""

        def __init__(self, error: str) -> None:
            super().__init__()
            self.error = error

    class Saved(Message):
        """A setting was stored and audited."""

        def __init__(self, key: str, value: Any) -> None:
            super().__init__()
            self.key = key
            self.value = value

    class SaveFailed(Message):
        """A setting could not be stored."""

        def __init__(self, key: str, value: Any, error: str) -> None:
            super().__init__()
            self.key = key
            self.value = value
            self.error = error

    def __init__(self, services: Services, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.services = services
        self._stored: dict[str, Any] = {}
        self._saving: set[str] = set()

    def compose(self) -> ComposeResult:
        # The form scrolls but is not a stop of its own: focus goes to the fields.
        with VerticalScroll(id="settings-form", can_focus=False):
            yield Static(
                "Changes are saved at once and recorded in the audit trail.",
                id="settings-intro",
            )
            with Vertical(classes="setting", id="setting-sync_frequency_hours"):
                with Horizontal(classes="setting-row"):
                    yield Label(SPECS["sync_frequency_hours"].label, classes="name")
                    with RadioSet(id="sync-frequency"):
                        for count in SYNC_FREQUENCIES:
                            yield RadioButton(hours(count), id=f"frequency-{count}")
                yield from self._help("sync_frequency_hours")
            with Vertical(classes="setting", id="setting-fix_address_data"):
                with Horizontal(classes="setting-row"):
                    yield Label(SPECS["fix_address_data"].label, classes="name")
                    yield Switch(id="fix-address-data")
                    yield Label("off", id="fix-address-state", classes="unit")
                yield from self._help("fix_address_data")
            for key in TEXT_KEYS:
                with Vertical(classes="setting", id=f"setting-{key}"):
                    with Horizontal(classes="setting-row"):
                        yield Label(SPECS[key].label, classes="name")
                        yield Input(
                            id=f"input-{key}",
                            compact=True,
                            placeholder="https://…" if key not in NUMBER_UNITS else "",
                            classes="number" if key in NUMBER_UNITS else "url",
                        )
                        yield Label(
                            unit_hint(key, saved=True), id=f"unit-{key}", classes="unit"
                        )
                    yield from self._help(key)

    def _help(self, key: str) -> ComposeResult:
        yield Static(SPECS[key].help, classes="help", markup=False)
        yield Static("", id=f"error-{key}", classes="error", markup=False)

    def on_mount(self) -> None:
        self.reload()

    def reload(self) -> None:
        """Read the stored settings again."""
        self._load()

    def commands(self) -> list[tuple[str, str, Callable[[], object]]]:
        """Command-palette entries for this tab."""
        entries: list[tuple[str, str, Callable[[], object]]] = [
            (
                f"Settings: sync every {hours(count)}",
                f"Sync each active data connection every {hours(count)}",
                lambda count=count: self.choose_frequency(count),
            )
            for count in SYNC_FREQUENCIES
        ]
        entries.append(
            (
                "Settings: toggle fix address data",
                SPECS["fix_address_data"].help,
                self.action_toggle_address,
            )
        )
        entries += [
            (
                f"Settings: edit {SPECS[key].label.lower()}",
                SPECS[key].help,
                lambda key=key: self.query_one(f"#input-{key}", Input).focus(),
            )
            for key in TEXT_KEYS
        ]
        entries.append(("Settings: refresh", "Read the settings again", self.reload))
        return entries

    # -- reading -------------------------------------------------------------

    @work(thread=True, exclusive=True, group="settings-load", exit_on_error=False)
    def _load(self) -> None:
        try:
            values = {key: settings.get(key) for key in SHOWN_KEYS}
        except Exception as error:
            log.exception("could not read the settings")
            self.post_message(self.LoadFailed(str(error)))
            return
        self.post_message(self.Loaded(values))

    def on_settings_tab_loaded(self, message: Loaded) -> None:
        message.stop()
        for key, value in message.values.items():
            if key in self._saving:
                continue  # the save in flight reports the value when it lands
            previous = self._stored.get(key)
            self._stored[key] = value
            self._show(key, value, previous)

    def on_settings_tab_load_failed(self, message: LoadFailed) -> None:
        message.stop()
        self.notify(
            clean(f"Could not read the settings: {message.error}"),
            severity="error",
            markup=False,
        )

    def _show(self, key: str, value: Any, previous: Any = None) -> None:
        """Put a stored value in its widget; change events for it are then ignored."""
        if key == "sync_frequency_hours":
            if value not in SYNC_FREQUENCIES:
                self._show_error(
                    key,
                    f"the stored sync frequency ({clean(value)}) is not one of "
                    "1, 6, 12 or 24 hours: choose one",
                )
                return
            button = self.query_one(f"#frequency-{value}", RadioButton)
            if not button.value:
                button.value = True
        elif key == "fix_address_data":
            self.query_one("#fix-address-data", Switch).value = bool(value)
            self.query_one("#fix-address-state", Label).update("on" if value else "off")
        else:
            field = self.query_one(f"#input-{key}", Input)
            # Never overwrite what the operator is typing.
            if previous is None or field.value.strip() == shown_text(previous):
                field.value = shown_text(value)
            self._mark_saved(key)

    # -- changes -------------------------------------------------------------

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        event.stop()
        pressed = event.pressed.id or ""
        self._changed("sync_frequency_hours", int(pressed.removeprefix("frequency-")))

    def on_switch_changed(self, event: Switch.Changed) -> None:
        event.stop()
        self.query_one("#fix-address-state", Label).update(
            "on" if event.value else "off"
        )
        self._changed("fix_address_data", event.value)

    def _changed(self, key: str, value: Any) -> None:
        """A widget changed: save it unless it shows what is stored already."""
        if key not in self._stored or key in self._saving:
            return  # not loaded yet, or the running save looks again when done
        if value == self._stored[key]:
            return
        self._start_save(key, value)

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        key = (event.input.id or "").removeprefix("input-")
        if key in TEXT_KEYS and key in self._stored:
            self._mark_saved(key)

    def _mark_saved(self, key: str) -> None:
        """Say beside an input whether what it shows is what is stored."""
        typed = self.query_one(f"#input-{key}", Input).value.strip()
        saved = typed == shown_text(self._stored.get(key))
        hint = self.query_one(f"#unit-{key}", Label)
        hint.update(unit_hint(key, saved=saved))
        hint.set_class(not saved, "-unsaved")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        key = (event.input.id or "").removeprefix("input-")
        if key not in TEXT_KEYS:
            return
        try:
            value = parse_text(key, event.value)
        except SettingError as error:
            self._show_error(key, str(error))
            return
        if key in self._saving:
            self._show_error(key, "still saving the last change; try again")
            return
        if key in self._stored and value == self._stored[key]:
            self._show_error(key, "")
            event.input.value = shown_text(value)
            return
        self._start_save(key, value)

    def _start_save(self, key: str, value: Any) -> None:
        self._saving.add(key)
        self._save(key, value)

    @work(thread=True, group="settings-save", exit_on_error=False)
    def _save(self, key: str, value: Any) -> None:
        try:
            stored = self.services.set_setting(key, value)
        except SettingError as error:
            self.post_message(self.SaveFailed(key, value, str(error)))
        except Exception as error:
            log.exception("could not save the setting %s", key)
            self.post_message(self.SaveFailed(key, value, f"could not save: {error}"))
        else:
            self.post_message(self.Saved(key, stored))

    def on_settings_tab_saved(self, message: Saved) -> None:
        message.stop()
        key, value = message.key, message.value
        self._saving.discard(key)
        self._stored[key] = value
        self._show_error(key, "")
        if key in TEXT_KEYS:
            field = self.query_one(f"#input-{key}", Input)
            try:
                typed = parse_text(key, field.value)
            except SettingError:
                typed = None
            if typed == value:
                field.value = shown_text(value)
            self._mark_saved(key)
        self.notify(clean(confirmation(key, value)), markup=False)
        self._tell_scheduler()
        self.post_message(DataChanged("settings"))
        if key in ("sync_frequency_hours", "fix_address_data"):
            self._save_again_if_changed(key)

    def _save_again_if_changed(self, key: str) -> None:
        """The operator changed the widget again while it was saving."""
        if key == "sync_frequency_hours":
            pressed = self.query_one(RadioSet).pressed_button
            current: Any = (
                int((pressed.id or "").removeprefix("frequency-")) if pressed else None
            )
        else:
            current = self.query_one("#fix-address-data", Switch).value
        if current is not None and current != self._stored[key]:
            self._start_save(key, current)

    def on_settings_tab_save_failed(self, message: SaveFailed) -> None:
        message.stop()
        key = message.key
        self._saving.discard(key)
        text = clean(message.error)
        label = SPECS[key].label
        self._show_error(key, text)
        self.notify(
            f"{label} was not changed: {text}",
            severity="error",
            markup=False,
        )
        if key in ("sync_frequency_hours", "fix_address_data") and key in self._stored:
            self._show(key, self._stored[key])
        # The store may have changed before it failed: look again.
        self.reload()

    def _show_error(self, key: str, text: str) -> None:
        error = self.query_one(f"#error-{key}", Static)
        error.update(literal(text[:1].upper() + text[1:]))
        error.set_class(bool(text), "-shown")

    def _tell_scheduler(self) -> None:
        scheduler = getattr(self.app, "scheduler", None)
        if scheduler is None:
            return
        try:
            scheduler.refresh()
        except Exception as error:
            log.exception("the scheduler could not take the new settings")
            self.notify(
                clean(f"Saved, but the scheduler did not take it yet: {error}"),
                severity="warning",
                markup=False,
            )

    # -- actions -------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Letter keys belong to an input while one has focus."""
        if action in ("next_frequency", "toggle_address", "reload"):
            return not isinstance(self.screen.focused, Input)
        return True

    def choose_frequency(self, count: int) -> None:
        """Select a sync frequency (saved like a click on it)."""
        self.query_one(f"#frequency-{count}", RadioButton).value = True

    def action_next_frequency(self) -> None:
        """Move to the next sync frequency: 1, 6, 12, 24 hours, then 1 again."""
        index = self.query_one(RadioSet).pressed_index
        self.choose_frequency(SYNC_FREQUENCIES[(index + 1) % len(SYNC_FREQUENCIES)])

    def action_toggle_address(self) -> None:
        """Switch address correction on or off."""
        self.query_one("#fix-address-data", Switch).toggle()

    def action_reload(self) -> None:
        """Read the settings again."""
        self.reload()
