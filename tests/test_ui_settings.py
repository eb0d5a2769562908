"""Settings: changes save at once, land in the audit trail, and bad values stay."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import Input, RadioButton, RadioSet, Static, Switch
from ui_support import (
    TabHost,
    clock_at_fixed_now,
    console,
    settle,
    stop_blinking,
)

from zaptui import settings
from zaptui.runtime import Runtime
from zaptui.services import Services
from zaptui.store.models import AuditEntry, Setting
from zaptui.ui.messages import DataChanged
from zaptui.ui.tabs.settings import SettingsTab, confirmation


class Scheduler:
    """Counts how often the console tells it the settings changed."""

    def __init__(self) -> None:
        self.refreshed = 0

    def refresh(self) -> None:
        self.refreshed += 1


class SettingsHost(TabHost):
    """The settings tab alone, recording what it announces and shows."""

    TAB = SettingsTab
    TAB_ID = "settings-tab"

    def __init__(self, services: Services, scheduler: Scheduler | None = None) -> None:
        super().__init__(services, scheduler)
        self.changes: list[str] = []
        self.toasts: list[tuple[str, str]] = []

    def on_data_changed(self, message: DataChanged) -> None:
        self.changes.append(message.what)

    def notify(self, message: str, **kwargs) -> None:
        self.toasts.append((str(message), kwargs.get("severity", "information")))
        super().notify(message, **kwargs)


@pytest.fixture(autouse=True)
def fixed_clock() -> Iterator[None]:
    yield from clock_at_fixed_now()


@pytest.fixture
def services(db) -> Services:
    runtime = Runtime()
    runtime.actor = "operator"
    return Services(runtime)


def stored(key: str):
    row = Setting.get_or_none(Setting.key == key)
    return None if row is None else row.value


def audit(action: str) -> list[tuple[object, object, str]]:
    return [
        (entry.before, entry.after, entry.actor)
        for entry in AuditEntry.select()
        .where(AuditEntry.action == action)
        .order_by(AuditEntry.id)
    ]


def refuse_setting_writes(db) -> None:
    """Make the real database refuse to store settings, as a full disk would."""
    db.execute_sql(
        "CREATE TRIGGER refuse_settings BEFORE INSERT ON setting "
        "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )


def error_text(app: App, key: str) -> str:
    return str(app.query_one(f"#error-{key}", Static).render())


async def test_settings_show_the_stored_values(services):
    services.set_setting("sync_frequency_hours", 6)
    services.set_setting("fix_address_data", True)
    services.set_setting("hold_back_days", 14)
    services.set_setting("alert_webhook_url", "https://hooks.example.com/zap")
    app = SettingsHost(services)

    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)

        assert app.query_one("#frequency-6", RadioButton).value
        assert not app.query_one("#frequency-24", RadioButton).value
        assert app.query_one("#fix-address-data", Switch).value
        assert app.query_one("#input-hold_back_days", Input).value == "14"
        assert app.query_one("#input-lookback_hours", Input).value == "6"
        assert app.query_one("#input-retention_days", Input).value == "30"
        assert (
            app.query_one("#input-alert_webhook_url", Input).value
            == "https://hooks.example.com/zap"
        )
        assert app.toasts == []  # showing stored values saves nothing


async def test_a_stored_frequency_that_is_not_offered_is_explained(services):
    Setting.create(key="sync_frequency_hours", value=3)
    app = SettingsHost(services)

    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)

        assert error_text(app, "sync_frequency_hours") == (
            "The stored sync frequency (3) is not one of 1, 6, 12 or 24 hours: "
            "choose one"
        )
        assert not any(button.value for button in app.query(RadioButton))

        app.query_one(RadioSet).focus()
        await pilot.press("enter")  # the first choice, 1 hour
        await settle(pilot)
        assert stored("sync_frequency_hours") == 1
        assert error_text(app, "sync_frequency_hours") == ""


async def test_changing_frequency_saves_audits_and_tells_the_scheduler(services):
    scheduler = Scheduler()
    app = SettingsHost(services, scheduler)

    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        app.query_one(RadioSet).focus()
        await pilot.press("left", "left", "enter")  # 24 -> 12 -> 6 hours
        await settle(pilot)

        assert stored("sync_frequency_hours") == 6
        assert audit("settings.sync_frequency_hours") == [
            ({"value": 24}, {"value": 6}, "operator")
        ]
        assert ("Sync frequency set to 6 hours", "information") in app.toasts
        assert scheduler.refreshed == 1
        assert app.changes == ["settings"]


async def test_f_steps_through_the_frequencies(services):
    services.set_setting("sync_frequency_hours", 12)
    app = SettingsHost(services)

    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        app.query_one(Switch).focus()
        await pilot.press("f")
        await settle(pilot)
        assert stored("sync_frequency_hours") == 24

        await pilot.press("f")
        await settle(pilot)
        assert stored("sync_frequency_hours") == 1
        assert ("Sync frequency set to 1 hour", "information") in app.toasts


async def test_quick_changes_end_with_the_last_choice_stored(services):
    scheduler = Scheduler()
    app = SettingsHost(services, scheduler)

    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        app.query_one(Switch).focus()
        await pilot.press("f", "f", "a", "a", "a")  # 24 -> 1 -> 6 hours; on
        await settle(pilot)

        assert stored("sync_frequency_hours") == 6
        assert stored("fix_address_data") is True
        assert app.query_one("#frequency-6", RadioButton).value
        assert app.query_one(Switch).value is True
        assert audit("settings.sync_frequency_hours")[-1][1] == {"value": 6}


async def test_toggling_address_correction_saves_and_audits(services):
    app = SettingsHost(services)

    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        app.query_one(Switch).focus()
        await pilot.press("enter")
        await settle(pilot)

        assert stored("fix_address_data") is True
        assert ("Fix address data switched on", "information") in app.toasts

        await pilot.press("a")
        await settle(pilot)

        assert stored("fix_address_data") is False
        assert audit("settings.fix_address_data") == [
            ({"value": False}, {"value": True}, "operator"),
            ({"value": True}, {"value": False}, "operator"),
        ]
        assert str(app.query_one("#fix-address-state").render()) == "off"


async def test_a_bad_number_is_refused_and_kept_then_a_good_one_saves(services):
    app = SettingsHost(services)

    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        field = app.query_one("#input-hold_back_days", Input)
        field.focus()
        field.value = ""
        await pilot.press("minus", "3", "enter")
        await settle(pilot)

        assert error_text(app, "hold_back_days") == (
            "Hold back recently mailed must be a whole number ≥ 0"
        )
        assert field.value == "-3"
        assert stored("hold_back_days") is None
        assert audit("settings.hold_back_days") == []

        await pilot.press("backspace", "backspace", "7", "enter")
        await settle(pilot)

        assert stored("hold_back_days") == 7
        assert audit("settings.hold_back_days") == [
            ({"value": 0}, {"value": 7}, "operator")
        ]
        assert error_text(app, "hold_back_days") == ""
        assert ("Hold back recently mailed set to 7 days", "information") in (
            app.toasts
        )


async def test_an_edit_not_yet_saved_says_so(services):
    app = SettingsHost(services)

    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        field = app.query_one("#input-lookback_hours", Input)
        hint = app.query_one("#unit-lookback_hours")
        field.focus()
        await pilot.press("end", "2")
        await pilot.pause()

        assert str(hint.render()) == "hours · not saved yet: Enter saves"

        await pilot.press("enter")
        await settle(pilot)

        assert stored("lookback_hours") == 62
        assert str(hint.render()) == "hours · Enter saves"


async def test_words_in_a_number_setting_are_refused_with_the_rule(services):
    app = SettingsHost(services)

    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        field = app.query_one("#input-retention_days", Input)
        field.focus()
        field.value = ""
        await pilot.press(*"ten", "enter")
        await pilot.pause()

        assert error_text(app, "retention_days") == (
            "Retention must be a whole number ≥ 0"
        )
        assert field.value == "ten"
        assert stored("retention_days") is None

        field.value = "0"
        await pilot.press("enter")
        await pilot.pause()
        assert error_text(app, "retention_days") == "Retention must be at least 1 day"


async def test_a_webhook_must_be_a_web_address_and_is_never_repeated(services):
    app = SettingsHost(services)

    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        field = app.query_one("#input-alert_webhook_url", Input)
        field.focus()
        await pilot.press(*"ftp://x", "enter")
        await pilot.pause()
        assert error_text(app, "alert_webhook_url") == (
            "The alert webhook must be an http:// or https:// URL"
        )

        field.value = "https://hooks.example.com/T0/B0/secret-path"
        await pilot.press("enter")
        await settle(pilot)

        assert stored("alert_webhook_url") == (
            "https://hooks.example.com/T0/B0/secret-path"
        )
        assert ("Alert webhook saved", "information") in app.toasts
        assert not any("secret-path" in toast for toast, _ in app.toasts)


async def test_a_failed_save_is_shown_and_the_switch_goes_back(services, db):
    refuse_setting_writes(db)
    app = SettingsHost(services)

    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        switch = app.query_one(Switch)
        switch.focus()
        await pilot.press("enter")
        await settle(pilot)

        assert switch.value is False
        assert stored("fix_address_data") is None
        assert audit("settings.fix_address_data") == []
        assert error_text(app, "fix_address_data") == (
            "Could not save: database or disk is full"
        )
        assert (
            "Fix address data was not changed: could not save: database or disk "
            "is full",
            "error",
        ) in app.toasts
        assert app.changes == []


async def test_a_failed_frequency_save_restores_the_stored_frequency(services, db):
    services.set_setting("sync_frequency_hours", 12)
    refuse_setting_writes(db)
    scheduler = Scheduler()
    app = SettingsHost(services, scheduler)

    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        app.query_one(RadioSet).focus()
        await pilot.press("right", "enter")
        await settle(pilot)

        assert app.query_one("#frequency-12", RadioButton).value
        assert not app.query_one("#frequency-24", RadioButton).value
        assert settings.get("sync_frequency_hours") == 12
        assert scheduler.refreshed == 0


async def test_a_failed_number_save_keeps_what_was_typed(services, db):
    refuse_setting_writes(db)
    app = SettingsHost(services)

    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        field = app.query_one("#input-lookback_hours", Input)
        field.focus()
        field.value = "12"
        await pilot.press("enter")
        await settle(pilot)

        assert field.value == "12"
        assert "database or disk is full" in error_text(app, "lookback_hours")
        assert settings.get("lookback_hours") == 6


async def test_a_reload_never_overwrites_what_is_being_typed(services):
    app = SettingsHost(services)

    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        field = app.query_one("#input-retention_days", Input)
        field.value = "45"
        services.set_setting("lookback_hours", 9)

        app.query_one(SettingsTab).reload()
        await settle(pilot)

        assert field.value == "45"
        assert app.query_one("#input-lookback_hours", Input).value == "9"


async def test_commands_cover_every_settings_action(services):
    app = SettingsHost(services)

    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        commands = {name: run for name, _, run in app.query_one(SettingsTab).commands()}

        commands["Settings: sync every 1 hour"]()
        await settle(pilot)
        commands["Settings: toggle fix address data"]()
        await settle(pilot)
        commands["Settings: edit retention"]()
        await pilot.pause()

        assert stored("sync_frequency_hours") == 1
        assert stored("fix_address_data") is True
        assert app.focused is app.query_one("#input-retention_days", Input)
        assert "Settings: refresh" in commands


def test_confirmations_read_as_sentences():
    assert confirmation("sync_frequency_hours", 24) == "Sync frequency set to 24 hours"
    assert confirmation("lookback_hours", 1) == "Look-back window set to 1 hour"
    assert confirmation("hold_back_days", 0) == (
        "Hold back recently mailed set to 0 days (off)"
    )
    assert confirmation("alert_webhook_url", "") == "Alert webhook removed"


# -- through the console --------------------------------------------------------


async def test_key_4_then_f_changes_the_frequency_in_the_console(demo):
    before = settings.get("sync_frequency_hours")
    app = console(demo)

    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        assert app.query_one(SettingsTab) in app.focused.ancestors_with_self
        await pilot.press("f")
        await settle(pilot)

        after = settings.get("sync_frequency_hours")
        assert after != before
        assert audit("settings.sync_frequency_hours")[-1][:2] == (
            {"value": before},
            {"value": after},
        )


# -- snapshots ------------------------------------------------------------------


async def _loaded(pilot: Pilot) -> None:
    await settle(pilot)
    stop_blinking(pilot)
    pilot.app.query_one(RadioSet).focus()
    await pilot.pause()


async def _bad_value(pilot: Pilot) -> None:
    await settle(pilot)
    stop_blinking(pilot)
    field = pilot.app.query_one("#input-hold_back_days", Input)
    field.focus()
    field.value = "-3"
    await pilot.press("enter")
    await pilot.pause()
    pilot.app.clear_notifications()
    await pilot.pause()


def test_settings_snapshot_80x24(services, snap_compare):
    services.set_setting("sync_frequency_hours", 6)
    assert snap_compare(
        SettingsHost(services), terminal_size=(80, 24), run_before=_loaded
    )


def test_settings_snapshot_120x36(services, snap_compare):
    services.set_setting("fix_address_data", True)
    assert snap_compare(
        SettingsHost(services), terminal_size=(120, 36), run_before=_loaded
    )


def test_settings_refusing_a_value_snapshot_80x24(services, snap_compare):
    assert snap_compare(
        SettingsHost(services), terminal_size=(80, 24), run_before=_bad_value
    )
