"""The console shell: tabs by number, help, the command palette, the header,
the scheduler's events and the start behind a loading indicator."""

from __future__ import annotations

import asyncio
import threading

from textual.command import CommandPalette
from textual.widgets import Input, LoadingIndicator, TabbedContent
from ui_support import (
    SMALL_DEMO,
    cell_text,
    console,
    fixed_demo,
    screen_text,
    settle,
)

from zaptui.clock import set_clock
from zaptui.demo import Demo
from zaptui.scheduler import SchedulerEvent
from zaptui.store.models import DataConnection, SyncRun
from zaptui.ui.app import SchedulerNotice, SchedulerProgress, ZapTuiApp
from zaptui.ui.confirm import ConfirmScreen
from zaptui.ui.header import ConsoleHeader
from zaptui.ui.help import HelpScreen
from zaptui.ui.messages import DataChanged
from zaptui.ui.screens.connect_account import ConnectAccountScreen
from zaptui.ui.widgets.keyed_table import KeyedTable


def active(pilot) -> str:
    return pilot.app.query_one("#tabs", TabbedContent).active


async def test_number_keys_switch_tabs_and_focus_them(demo):
    async with console(demo).run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        seen = []
        for key in ("2", "3", "4", "5", "1"):
            await pilot.press(key)
            await settle(pilot)
            focused = pilot.app.focused
            tab = pilot.app.tabs[active(pilot)]
            seen.append(
                (active(pilot), focused is not None and tab in focused.ancestors)
            )

    assert seen == [
        ("connections", True),
        ("history", True),
        ("settings", True),
        ("logs", True),
        ("status", True),
    ]


async def test_digits_typed_into_a_form_stay_in_the_form(demo):
    async with console(demo).run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await pilot.press("c")
        await pilot.pause()
        await pilot.press("2", "3")
        await pilot.pause()
        typed = pilot.app.screen.query_one("#api-key", Input).value
        tab = active(pilot)

    assert typed == "23"
    assert tab == "status"


async def test_question_mark_lists_the_keys_of_the_tab_in_view(demo):
    async with console(demo).run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await pilot.press("2", "question_mark")
        await settle(pilot)
        assert isinstance(pilot.app.screen, HelpScreen)
        shown = screen_text(pilot)
        await pilot.press("escape")
        await pilot.pause()
        closed = not isinstance(pilot.app.screen, HelpScreen)

    for words in ("Data Connections", "Sync now", "Pause", "Map data", "Remove"):
        assert words in shown
    assert "Everywhere" in shown and "command palette" in shown
    assert closed


async def test_command_palette_offers_the_tab_in_view_first(demo):
    async with console(demo).run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        on_status = [name for name, _, _ in pilot.app.palette_commands()]
        await pilot.press("2")
        await settle(pilot)
        on_connections = [name for name, _, _ in pilot.app.palette_commands()]
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert isinstance(pilot.app.screen, CommandPalette)
        await pilot.press(*"pause data")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await settle(pilot)
        screen = pilot.app.screen

    assert on_status[0] == "Connect a Klaviyo account"
    assert "Sync now" not in on_status
    assert on_connections[0] == "Sync now"
    assert "Go to Sync History" in on_connections and "Show keys" in on_connections
    assert isinstance(screen, ConfirmScreen) and screen.title_text.startswith("Pause")


async def test_header_names_the_zap_account_and_the_scheduler_state(demo):
    async with console(demo).run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        first = screen_text(pilot).splitlines()[0]
        await asyncio.to_thread(
            demo.services.set_setting, "zap_account_name", "[b]Renamed[/b] Ltd"
        )
        pilot.app.post_message(DataChanged("settings"))
        await settle(pilot)
        renamed = screen_text(pilot).splitlines()[0]

    assert "ZAP~POST Acme Direct (demo)" in first
    assert "Scheduler: stopped" in first
    assert "ZAP~POST [b]Renamed[/b] Ltd" in renamed


async def test_scheduler_events_from_any_thread_become_toasts(demo):
    app = ZapTuiApp(demo.services, start_scheduler=True)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        started = app.scheduler is not None
        event = SchedulerEvent(
            "sync_failed", 1, "Shop win-back failed: Klaviyo refused the key.", 13
        )
        thread = threading.Thread(target=app.scheduler_event, args=(event,))
        thread.start()
        thread.join()
        await settle(pilot)
        toasts = [(n.title, n.severity, n.message) for n in app._notifications]

    assert started and app.scheduler is None  # shut down with the console
    assert (
        "Scheduler",
        "error",
        "Shop win-back failed: Klaviyo refused the key.",
    ) in toasts


async def wait_for(condition, seconds: float = 10.0) -> bool:
    """Poll a condition (a database read) from a thread until it holds."""
    for _ in range(int(seconds / 0.1)):
        if await asyncio.to_thread(condition):
            return True
        await asyncio.sleep(0.1)
    return False


async def test_a_scheduled_sync_reaches_the_header_and_its_row(demo):
    vip = DataConnection.get(DataConnection.name == "VIP preview")
    await asyncio.to_thread(demo.services.resume, vip.id)  # due at once
    app = ZapTuiApp(demo.services, start_scheduler=True)

    def synced() -> bool:
        return (
            SyncRun.select()
            .where(
                (SyncRun.connection == vip.id)
                & (SyncRun.trigger == "scheduled")
                & (SyncRun.status != "running")
            )
            .exists()
        )

    seen = []
    async with app.run_test(size=(120, 36), message_hook=seen.append) as pilot:
        await settle(pilot)
        assert await wait_for(synced)
        await settle(pilot)
        app.query_one(ConsoleHeader).refresh_facts()
        await settle(pilot)
        header = screen_text(pilot).splitlines()[0]
        table = app.query_one("#connections-table", KeyedTable)
        status = cell_text(table, str(vip.id), "status")

    events = [m.event for m in seen if isinstance(m, SchedulerNotice)]
    kinds = [(event.kind, event.connection_id) for event in events]
    assert "Scheduler: running here" in header
    assert ("sync_started", vip.id) in kinds and ("sync_finished", vip.id) in kinds
    assert any(isinstance(m, SchedulerProgress) for m in seen)
    assert status == "active"


async def test_console_starts_behind_a_loading_indicator_while_preparing(tmp_path):
    ready = threading.Event()
    built: list[Demo] = []

    def prepare():
        ready.wait(5)
        built.append(fixed_demo(tmp_path / "demo", profiles=SMALL_DEMO))
        return built[0].services

    app = ZapTuiApp(prepare=prepare, preparing="Building the demo…")
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            waiting = screen_text(pilot)
            indicators = len(app.query(LoadingIndicator))
            ready.set()
            await settle(pilot)
            await settle(pilot)
            after = screen_text(pilot)
    finally:
        for demo in built:
            demo.close()
        set_clock(None)

    assert indicators == 1 and "Building the demo…" in waiting
    assert "1 Integration Status" in after and "Acme Outdoor" in after
    assert len(app.query(LoadingIndicator)) == 0


async def test_a_form_over_a_tab_is_closed_by_escape(demo):
    async with console(demo).run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await pilot.press("c")
        await pilot.pause()
        opened = isinstance(pilot.app.screen, ConnectAccountScreen)
        await pilot.press("escape")
        await pilot.pause()
        closed = pilot.app.screen is pilot.app.screen_stack[0]

    assert opened and closed


def test_snapshot_help_screen(tmp_path, snap_compare):
    demo = fixed_demo(tmp_path / "demo")

    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press("2", "question_mark")
        await settle(pilot)

    try:
        assert snap_compare(
            console(demo), terminal_size=(80, 24), run_before=run_before
        )
    finally:
        demo.close()
        set_clock(None)
