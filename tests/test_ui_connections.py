"""Data Connections: the table, sync now with live progress, pause, resume,
remove, map data and new connection, driven from the keyboard."""

from __future__ import annotations

import asyncio

import pytest
from textual.message import Message
from textual.widgets import Select
from ui_support import (
    cell_text,
    console,
    go_to_row,
    row_texts,
    screen_text,
    settle,
    stop_blinking,
)

from zaptui.demo import Demo
from zaptui.store.models import AuditEntry, DataConnection, SyncRun
from zaptui.ui.confirm import ConfirmScreen
from zaptui.ui.screens.mapping import MappingScreen
from zaptui.ui.screens.new_connection import NewConnectionScreen
from zaptui.ui.tabs.connections import DataConnectionsTab
from zaptui.ui.widgets.keyed_table import KeyedTable


def connection_named(name: str) -> DataConnection:
    return DataConnection.get(DataConnection.name == name)


def table_of(pilot) -> KeyedTable:
    return pilot.app.query_one("#connections-table", KeyedTable)


async def open_tab(pilot) -> KeyedTable:
    await settle(pilot)
    await pilot.press("2")
    await settle(pilot)
    return table_of(pilot)


async def test_table_shows_every_connection_with_type_date_and_status(demo):
    async with console(demo).run_test(size=(120, 36)) as pilot:
        table = await open_tab(pilot)
        rows = {row[1]: row for row in row_texts(table)}

    assert set(rows) == {
        "Shop win-back",
        "Welcome pack",
        "Spring postcards",
        "Win back",
        "VIP preview",
    }
    assert rows["Welcome pack"][:3] == ["All UK customers", "Welcome pack", "segment"]
    assert rows["Welcome pack"][3] == "2026-12-04 08:40 UTC"
    assert rows["Welcome pack"][4] == "active"
    assert rows["VIP preview"][4] == "paused"
    assert rows["Shop win-back"][4] == "error"


async def test_sync_now_confirms_then_shows_progress_and_the_result(demo):
    joined = demo.world.klaviyo.tick()  # new customers, all in "All UK customers"
    welcome = connection_named("Welcome pack")
    runs_before = SyncRun.select().count()
    seen: list[Message] = []

    async with console(demo).run_test(
        size=(120, 36), message_hook=seen.append
    ) as pilot:
        table = await open_tab(pilot)
        await go_to_row(pilot, table, str(welcome.id))
        await pilot.press("s")
        await pilot.pause()
        confirm = pilot.app.screen
        assert isinstance(confirm, ConfirmScreen)
        assert "published artwork" in confirm.body_text
        assert "mailed" in confirm.body_text
        await pilot.press("y")
        await settle(pilot)
        status = cell_text(table, str(welcome.id), "status")
        toasts = [n.message for n in pilot.app._notifications]
        row_index = table.get_row_index(str(welcome.id))

    run = SyncRun.select().order_by(SyncRun.id.desc()).get()
    assert SyncRun.select().count() == runs_before + 1
    assert run.connection_id == welcome.id and run.trigger == "manual"
    assert joined > 0 and run.imported >= joined and run.fetched > run.imported
    progress = [m for m in seen if isinstance(m, DataConnectionsTab.SyncProgress)]
    assert progress and progress[-1].progress.connection_id == welcome.id
    assert status == (
        f"active · {run.status}: {run.imported} imported, {run.failed} failed"
    )
    assert row_index == 1  # updated in place, not rebuilt elsewhere
    assert any(f"imported {run.imported}" in message for message in toasts)


async def test_sync_now_of_a_paused_connection_is_refused_with_a_toast(demo):
    paused = connection_named("VIP preview")
    runs_before = SyncRun.select().count()

    async with console(demo).run_test(size=(120, 36)) as pilot:
        table = await open_tab(pilot)
        await go_to_row(pilot, table, str(paused.id))
        await pilot.press("s", "y")
        await settle(pilot)
        toasts = [(n.title, n.message) for n in pilot.app._notifications]
        status = cell_text(table, str(paused.id), "status")

    assert SyncRun.select().count() == runs_before
    assert ("VIP preview was not synced", f"data connection {paused.id} is paused: "
            "resume it first") in toasts  # fmt: skip
    assert status == "paused"


async def test_cancelling_sync_now_starts_nothing(demo):
    welcome = connection_named("Welcome pack")
    runs_before = SyncRun.select().count()

    async with console(demo).run_test(size=(120, 36)) as pilot:
        table = await open_tab(pilot)
        await go_to_row(pilot, table, str(welcome.id))
        await pilot.press("s", "escape")
        await settle(pilot)
        assert pilot.app.screen is pilot.app.screen_stack[0]

    assert SyncRun.select().count() == runs_before


async def test_pause_states_the_no_backlog_rule_then_pauses(demo):
    welcome = connection_named("Welcome pack")

    async with console(demo).run_test(size=(120, 36)) as pilot:
        table = await open_tab(pilot)
        await go_to_row(pilot, table, str(welcome.id))
        await pilot.press("p")
        await pilot.pause()
        body = pilot.app.screen.body_text
        await pilot.press("y")
        await settle(pilot)
        status = cell_text(table, str(welcome.id), "status")

    assert "nothing is queued" in body
    assert "only the members of All UK customers at that time are ingested" in body
    assert connection_named("Welcome pack").status == "paused"
    assert AuditEntry.get_or_none(
        (AuditEntry.action == "connection.pause")
        & (AuditEntry.subject == f"data connection {welcome.id}")
    )
    assert status == "paused"


async def test_resume_says_what_will_be_ingested_then_resumes(demo):
    paused = connection_named("VIP preview")

    async with console(demo).run_test(size=(120, 36)) as pilot:
        table = await open_tab(pilot)
        await go_to_row(pilot, table, str(paused.id))
        await pilot.press("r")
        await pilot.pause()
        body = pilot.app.screen.body_text
        await pilot.press("y")
        await settle(pilot)
        status = cell_text(table, str(paused.id), "status")

    resumed = connection_named("VIP preview")
    assert "Nothing was queued while it was paused" in body
    assert "current members" in body
    assert resumed.status == "active" and resumed.resumed_at is not None
    assert AuditEntry.get_or_none(AuditEntry.action == "connection.resume")
    assert status == "active"


async def test_remove_unpairs_the_source_and_keeps_its_history(demo):
    win_back = connection_named("Win back")
    runs = SyncRun.select().where(SyncRun.connection == win_back.id).count()

    async with console(demo).run_test(size=(120, 36)) as pilot:
        table = await open_tab(pilot)
        await go_to_row(pilot, table, str(win_back.id))
        await pilot.press("x")
        await pilot.pause()
        confirm = pilot.app.screen
        assert confirm.danger and "Lapsed 90 days" in confirm.body_text
        await pilot.press("y")
        await settle(pilot)
        names = [row[1] for row in row_texts(table)]

    assert DataConnection.get_or_none(DataConnection.name == "Win back") is None
    assert "Win back" not in names and len(names) == 4
    kept = SyncRun.select().where(SyncRun.connection_name == "Win back").count()
    assert runs > 0 and kept == runs
    assert AuditEntry.get_or_none(AuditEntry.action == "connection.remove")


async def test_map_data_shows_campaign_fields_and_their_profile_fields(demo):
    spring = connection_named("Spring postcards")

    async with console(demo).run_test(size=(120, 36)) as pilot:
        table = await open_tab(pilot)
        await go_to_row(pilot, table, str(spring.id))
        await pilot.press("m")
        await settle(pilot)
        assert isinstance(pilot.app.screen, MappingScreen)
        mapping = {
            row[0].split("  ")[0]: row[2]
            for row in row_texts(pilot.app.screen.query_one(KeyedTable))
        }
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(pilot.app.screen, MappingScreen)

    assert mapping["tier"] == "properties.tier"
    assert mapping["firstname"] == "first_name"
    assert mapping["postcode"] == "the cleansed address"
    assert mapping["customerid"] == "the Klaviyo profile id"
    assert mapping["offer_code"] == "not mapped"


async def choose(pilot, select_id: str, label_start: str) -> None:
    """Open a Select with the keyboard and pick the option whose label starts so."""
    select = pilot.app.screen.query_one(f"#{select_id}", Select)
    select.focus()
    await pilot.press("enter")
    await pilot.pause()
    labels = [str(prompt) for prompt, _ in select._options]
    target = next(i for i, label in enumerate(labels) if label.startswith(label_start))
    for _ in range(target):
        await pilot.press("down")
    await pilot.press("enter")
    await settle(pilot)


async def test_new_connection_form_pairs_a_source_with_a_campaign(demo):
    before = DataConnection.select().count()

    async with console(demo).run_test(size=(120, 36)) as pilot:
        table = await open_tab(pilot)
        await pilot.press("n")
        await settle(pilot)
        assert isinstance(pilot.app.screen, NewConnectionScreen)
        await choose(pilot, "account", "Acme Outdoor")
        await choose(pilot, "source", "Newsletter (list)")
        await choose(pilot, "campaign", "Welcome Letter")
        pilot.app.screen.query_one("#name").focus()
        await pilot.press(*"Newsletter welcome")
        await pilot.press("enter")
        await settle(pilot)
        assert not isinstance(pilot.app.screen, NewConnectionScreen)
        created = DataConnection.get(DataConnection.name == "Newsletter welcome")
        selected = table.selected_key()

    assert DataConnection.select().count() == before + 1
    assert created.source_name == "Newsletter" and created.source_type == "list"
    assert created.campaign_name == "Welcome Letter"
    assert selected == str(created.id)
    assert AuditEntry.get_or_none(AuditEntry.action == "connection.create")


async def test_new_connection_form_explains_a_refusal_and_stays_open(demo):
    async with console(demo).run_test(size=(120, 36)) as pilot:
        await open_tab(pilot)
        await pilot.press("n")
        await settle(pilot)
        await choose(pilot, "account", "Acme Outdoor")
        await choose(pilot, "source", "All UK customers")
        await choose(pilot, "campaign", "Welcome Letter")
        await pilot.press("tab", "tab", "tab")  # past the name and the checkbox
        await pilot.press("enter")
        await settle(pilot)
        screen = pilot.app.screen
        error = str(screen.query_one("#new-connection-error").render())

    assert isinstance(screen, NewConnectionScreen)
    assert "already paired with this campaign" in error


async def test_list_names_with_markup_and_escapes_are_shown_literally(demo):
    sim = demo.world.klaviyo
    acme = sim.account("Acme Outdoor")
    members = [pid for pid, _ in sim.members(acme, "Newsletter")[:3]]
    for name in ("[bold red]x[/]", "Evil\x1b]52;c;Zm9v\x07list"):
        source = sim.add_source(acme, "list", name)
        sim.join(acme, source, members)
        welcome = demo.world.zappost.campaign_named("Welcome Letter")
        account_id = connection_named("Welcome pack").account_id
        await asyncio.to_thread(
            demo.services.create_connection,
            account_id,
            "list",
            source.id,
            welcome.id,
            name=name,
        )

    async with console(demo).run_test(size=(120, 36)) as pilot:
        table = await open_tab(pilot)
        sources = [row[0] for row in row_texts(table)]
        names = [row[1] for row in row_texts(table)]
        shown = screen_text(pilot)
        evil = DataConnection.get(DataConnection.source_name.startswith("Evil"))
        await go_to_row(pilot, table, str(evil.id))
        await pilot.press("p", "y")
        await settle(pilot)
        toasts = [n.message for n in pilot.app._notifications]

    # Klaviyo's list names are stored as plain text (the escape sequence is
    # gone before anything can print it); the operator's connection name is
    # kept as typed and shown with its control characters made visible.
    assert evil.source_name == "Evillist"
    assert "Evil␛]52;c;Zm9v␇list paused." in toasts
    assert not any("\x1b" in message for message in toasts)
    assert "[bold red]x[/]" in sources
    assert "Evillist" in sources
    assert "Evil␛]52;c;Zm9v␇list" in names
    assert "[bold red]x[/]" in shown
    assert "Evil␛]52;c;Zm9v␇list" in shown
    assert "\x1b" not in shown


# -- snapshots -----------------------------------------------------------------


def snapshot_app(demo: Demo, *keys: str):
    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        table = table_of(pilot)
        await go_to_row(pilot, table, str(connection_named("Welcome pack").id))
        for key in keys:
            await pilot.press(key)
            await settle(pilot)
        stop_blinking(pilot)

    return console(demo), run_before


@pytest.mark.parametrize("size", [(80, 24), (120, 36)], ids=["80x24", "120x36"])
def test_snapshot_data_connections(full_demo, snap_compare, size):
    app, run_before = snapshot_app(full_demo)
    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("key", ["s", "p", "x"], ids=["sync_now", "pause", "remove"])
def test_snapshot_confirmation(full_demo, snap_compare, key):
    app, run_before = snapshot_app(full_demo, key)
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_snapshot_resume_confirmation(full_demo, snap_compare):
    paused = str(connection_named("VIP preview").id)

    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        await go_to_row(pilot, table_of(pilot), paused)
        await pilot.press("r")
        await settle(pilot)

    assert snap_compare(
        console(full_demo), terminal_size=(80, 24), run_before=run_before
    )


def test_snapshot_mapping_view(full_demo, snap_compare):
    app, run_before = snapshot_app(full_demo, "m")
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_snapshot_new_connection_form(full_demo, snap_compare):
    app, run_before = snapshot_app(full_demo, "n")
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
