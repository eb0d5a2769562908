"""Sync History: the paged table of runs and the run panel, driven by keyboard."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from textual import events
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import DataTable
from ui_support import (
    FIXED_NOW,
    TabHost,
    clock_at_fixed_now,
    column,
    console,
    settle,
    static_text,
)

from zaptui.links import REMOTE_CONSOLE_ENV, browser_opens_here
from zaptui.runtime import Runtime
from zaptui.services import Services
from zaptui.store import queries
from zaptui.store.models import ProfileOutcome, SyncRun
from zaptui.ui.tabs.history import SyncHistoryTab, column_widths
from zaptui.ui.widgets.run_panel import RunPanel


class HistoryHost(TabHost):
    """The history tab alone, recording the links it would open."""

    TAB = SyncHistoryTab
    TAB_ID = "history-tab"

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        self.opened: list[str] = []

    def open_url(self, url: str, *, new_tab: bool = True) -> None:
        self.opened.append(url)


@pytest.fixture(autouse=True)
def fixed_clock() -> Iterator[None]:
    yield from clock_at_fixed_now()


@pytest.fixture
def services(db) -> Services:
    return Services(Runtime())


def make_runs() -> list[SyncRun]:
    """Five runs of every status, one with failed profiles, newest last."""
    specs = [
        ("Welcome Letter", "All UK customers", "segment", "succeeded", 5000, 5000, 0),
        ("Winter Postcard", "VIP [bold red]x[/]", "list", "partial", 1200, 1188, 12),
        ("Welcome Letter", "New joiners", "list", "failed", 40, 0, 40),
        ("Lapsed Customers", "Lapsed 90 days", "segment", "interrupted", 300, 0, 0),
        ("Welcome Letter", "All UK customers", "segment", "running", 800, 0, 0),
    ]
    runs = []
    for number, (
        campaign,
        source,
        kind,
        status,
        fetched,
        imported,
        failed,
    ) in enumerate(specs, start=1):
        finished = status not in ("running",)
        sent = status in ("succeeded", "partial")
        runs.append(
            SyncRun.create(
                connection_name=f"{source} to {campaign}",
                source_name=source,
                source_type=kind,
                campaign_name=campaign,
                reference=f"zt-run-{number:04d}",
                trigger="manual" if number == 2 else "scheduled",
                status=status,
                phase="done" if finished else "fetching",
                started_at=FIXED_NOW - timedelta(hours=6 * (len(specs) - number)),
                finished_at=(
                    FIXED_NOW - timedelta(hours=6 * (len(specs) - number), minutes=-4)
                    if finished
                    else None
                ),
                fetched=fetched,
                imported=imported,
                failed=failed,
                error=(
                    "ZAP~POST refused the submission: campaign is not published"
                    if status == "failed"
                    else ""
                ),
                submission_id=f"3f2a9c1e-0000-4000-8000-00000000000{number}"
                if sent
                else None,
                submission_url=(
                    "https://app.zappost.com/submissions/"
                    f"3f2a9c1e-0000-4000-8000-00000000000{number}"
                    if sent
                    else None
                ),
            )
        )
    partial = runs[1]
    ProfileOutcome.insert_many(
        [
            {
                "run": partial.id,
                "profile_id": f"01HPROFILE{i:04d}",
                "display_name": f"Customer {i}" if i != 3 else "[b]Eve[/b] \x1b[31m",
                "email": f"customer{i}@example.co.uk",
                "outcome": "failed",
                "reason": "postcode not found in the Postcode Address File",
            }
            for i in range(1, 13)
        ]
        + [
            {
                "run": partial.id,
                "profile_id": "01HIMPORTED",
                "display_name": "Imported Person",
                "outcome": "imported",
            }
        ]
    ).execute()
    return runs


def many_runs(count: int) -> None:
    SyncRun.insert_many(
        [
            {
                "reference": f"bulk-{i}",
                "trigger": "scheduled",
                "status": "succeeded",
                "campaign_name": f"Campaign {i}",
                "source_name": "All UK customers",
                "source_type": "segment",
                "started_at": FIXED_NOW - timedelta(minutes=count - i),
                "fetched": i,
            }
            for i in range(count)
        ]
    ).execute()


def table_of(app: App) -> DataTable:
    return app.query_one("#history-table", DataTable)


# -- the table ------------------------------------------------------------------


async def test_history_lists_runs_newest_first_with_every_column(services):
    make_runs()
    app = HistoryHost(services)

    async with app.run_test(size=(140, 30)) as pilot:
        await settle(pilot)
        table = table_of(app)

        assert [str(col.label) for col in table.columns.values()] == [
            "Campaign",
            "List or segment",
            "Type",
            "Ingested (UTC)",
            "Profiles",
            "Submission link",
            "Status",
        ]
        assert column(table, "status") == [
            "running",
            "interrupted",
            "failed",
            "partial",
            "succeeded",
        ]
        assert column(table, "ingested")[0] == "2026-12-04 09:30"
        assert column(table, "profiles") == ["800", "300", "40", "1,200", "5,000"]
        assert column(table, "source")[3] == "VIP [bold red]x[/]"
        assert column(table, "link")[3] == (
            "https://app.zappost.com/submissions/3f2a9c1e-0000-4000-8000-000000000002"
        )
        assert column(table, "link")[0] == "—"


async def test_history_says_when_there_are_no_runs(services):
    app = HistoryHost(services)

    async with app.run_test() as pilot:
        await settle(pilot)

        summary = static_text(app, "#history-summary")
        assert "No sync runs yet" in summary
        assert table_of(app).row_count == 0


async def test_narrow_history_leaves_the_link_to_the_panel(services):
    make_runs()
    app = HistoryHost(services)

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)

        keys = [str(key.value) for key in table_of(app).columns]
        assert "link" not in keys
        assert keys[-1] == "status"


def test_column_widths_fill_the_table():
    for width in (80, 100, 120, 160):
        widths = column_widths(width)
        assert sum(widths.values()) + 2 * len(widths) + 2 <= width
        assert sum(widths.values()) + 2 * len(widths) + 2 >= width - 3


async def test_moving_down_loads_the_next_page(services):
    many_runs(250)
    app = HistoryHost(services)

    async with app.run_test() as pilot:
        await settle(pilot)
        table = table_of(app)
        assert table.row_count == queries.PAGE_SIZE

        table.focus()
        await pilot.press("ctrl+end")
        await settle(pilot)
        assert table.row_count == 200

        await pilot.press("ctrl+end")
        await settle(pilot)
        assert table.row_count == 250
        assert column(table, "campaign")[-1] == "Campaign 0"
        summary = static_text(app, "#history-summary")
        assert summary.startswith("250 sync runs, newest first")


async def test_reload_keeps_the_highlighted_run_and_shows_new_ones(services):
    many_runs(20)
    app = HistoryHost(services)

    async with app.run_test() as pilot:
        await settle(pilot)
        table = table_of(app)
        table.focus()
        await pilot.press("down", "down", "down")
        assert column(table, "campaign")[table.cursor_row] == "Campaign 16"

        SyncRun.create(reference="new", trigger="manual", campaign_name="Brand new")
        await pilot.press("r")
        await settle(pilot)

        assert table.row_count == 21
        assert column(table, "campaign")[0] == "Brand new"
        assert column(table, "campaign")[table.cursor_row] == "Campaign 16"


async def test_a_refresh_keeps_the_pages_loaded_and_updates_a_running_run(services):
    many_runs(250)
    running = SyncRun.create(
        reference="live", trigger="manual", status="running", fetched=10
    )
    app = HistoryHost(services)

    async with app.run_test() as pilot:
        await settle(pilot)
        table = table_of(app)
        table.focus()
        await pilot.press("ctrl+end")
        await settle(pilot)
        assert table.row_count == 200
        highlighted = table.cursor_row
        SyncRun.update(status="succeeded", fetched=1234).where(
            SyncRun.id == running.id
        ).execute()

        app.query_one(SyncHistoryTab).reload()
        await settle(pilot)

        assert table.row_count == 200
        assert table.cursor_row == highlighted
        assert column(table, "status")[0] == "succeeded"
        assert column(table, "profiles")[0] == "1,234"

        SyncRun.create(reference="newer", trigger="manual", campaign_name="Newer")
        app.query_one(SyncHistoryTab).reload()
        await settle(pilot)

        assert table.row_count == 201
        assert column(table, "campaign")[0] == "Newer"
        assert table.cursor_row == highlighted + 1


async def test_deep_in_the_history_new_runs_wait_for_r(services, monkeypatch):
    monkeypatch.setattr(SyncHistoryTab, "REBUILD_LIMIT", 150)
    many_runs(250)
    app = HistoryHost(services)

    async with app.run_test() as pilot:
        await settle(pilot)
        table = table_of(app)
        table.focus()
        await pilot.press("ctrl+end")
        await settle(pilot)
        SyncRun.create(reference="newer", trigger="manual", campaign_name="Newer")

        app.query_one(SyncHistoryTab).reload()
        await settle(pilot)

        assert table.row_count == 200
        assert column(table, "campaign")[0] == "Campaign 249"
        assert "1 newer: r shows them" in static_text(app, "#history-summary")

        await pilot.press("r")
        await settle(pilot)

        assert table.row_count == queries.PAGE_SIZE
        assert column(table, "campaign")[0] == "Newer"
        assert "newer" not in static_text(app, "#history-summary")


# -- the run panel ----------------------------------------------------------------


async def test_enter_opens_run_panel_and_escape_closes_it(services):
    runs = make_runs()
    app = HistoryHost(services)

    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        table = table_of(app)
        table.focus()
        panel = app.query_one(RunPanel)
        assert not panel.open

        await pilot.press("down", "down", "down", "enter")
        await settle(pilot)

        assert panel.open and panel.has_class("-open")
        assert panel.run_id == runs[1].id
        summary = static_text(app, "#run-panel-summary")
        assert f"Sync id            {runs[1].id}" in summary
        assert "Status             partial" in summary
        assert "Trigger            manual" in summary
        assert "Profiles imported  1,188" in summary
        assert "Profiles failed    12" in summary
        assert "Submission id      3f2a9c1e-0000-4000-8000-000000000002" in summary

        await pilot.press("escape")
        await pilot.pause()

        assert not panel.open
        assert table.has_focus


async def test_run_panel_says_which_members_a_run_read(services):
    runs = make_runs()
    SyncRun.update(full_read=True).where(SyncRun.id == runs[0].id).execute()
    app = HistoryHost(services)

    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        panel = app.query_one(SyncHistoryTab).panel
        panel.show_run(runs[0].id)
        await settle(pilot)
        full = static_text(app, "#run-panel-summary")
        panel.show_run(runs[1].id)
        await settle(pilot)
        since = static_text(app, "#run-panel-summary")

    assert "Members read       the whole segment" in full
    assert "Members read       joins since the last sync" in since


async def test_enter_typed_right_after_arrows_opens_the_run_they_reached(services):
    runs = make_runs()
    app = HistoryHost(services)

    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        table_of(app).focus()
        await pilot.pause()
        # A burst, as a fast typist or a terminal delivers it: no pause between.
        for key, character in [("down", None)] * 3 + [("enter", "\r")]:
            app.post_message(events.Key(key, character))
        await settle(pilot)

        assert app.query_one(RunPanel).run_id == runs[1].id


async def test_run_panel_lists_failed_profiles_literally(services):
    runs = make_runs()
    app = HistoryHost(services)

    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        app.query_one(SyncHistoryTab).panel.show_run(runs[1].id)
        await settle(pilot)

        failures = static_text(app, "#run-panel-failures")
        assert failures.startswith("Failed profiles (12)")
        assert "Customer 1 <customer1@example.co.uk>" in failures
        assert "postcode not found in the Postcode Address File" in failures
        assert "[b]Eve[/b] ␛[31m" in failures
        assert "\x1b" not in failures
        assert "Imported Person" not in failures


async def test_run_panel_shows_the_first_500_failures_and_counts_the_rest(services):
    run = SyncRun.create(reference="big", trigger="scheduled", status="failed")
    ProfileOutcome.insert_many(
        [
            {
                "run": run.id,
                "profile_id": f"p{i:05d}",
                "display_name": f"Person {i}",
                "outcome": "failed",
                "reason": "missing postcode",
            }
            for i in range(620)
        ]
    ).execute()
    app = HistoryHost(services)

    async with app.run_test() as pilot:
        await settle(pilot)
        table_of(app).focus()
        await pilot.press("enter")
        await settle(pilot)

        failures = static_text(app, "#run-panel-failures")
        assert failures.startswith("Failed profiles (620)")
        assert "Person 499\n" in failures
        assert "Person 500\n" not in failures
        assert "… and 120 more not shown." in failures


@pytest.fixture
def desktop(monkeypatch) -> None:
    """A console on a desktop: a browser opens where the operator sits."""
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.delenv("SSH_CONNECTION", raising=False)
    monkeypatch.delenv(REMOTE_CONSOLE_ENV, raising=False)


@pytest.fixture
def remote(monkeypatch) -> None:
    """A console logged into over SSH, on a host without a display."""
    for name in ("DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SSH_CONNECTION", "192.0.2.7 50022 192.0.2.1 22")


async def press_o_in_the_oldest_runs_panel(pilot: Pilot) -> None:
    """Open the panel of the oldest run (it has a submission) and press o."""
    await settle(pilot)
    table_of(pilot.app).focus()
    await pilot.press("down", "down", "down", "down", "enter")
    await settle(pilot)
    await pilot.press("o")
    await pilot.pause()


async def test_o_opens_the_submission_link_of_the_open_run(services, desktop):
    runs = make_runs()
    app = HistoryHost(services)

    async with app.run_test(size=(120, 36)) as pilot:
        await press_o_in_the_oldest_runs_panel(pilot)

        assert app.opened == [runs[0].submission_url]


async def test_o_copies_the_link_where_no_browser_can_be_opened(services, remote):
    runs = make_runs()
    app = HistoryHost(services)

    async with app.run_test(size=(120, 36)) as pilot:
        await press_o_in_the_oldest_runs_panel(pilot)

        assert app.opened == []
        assert app.clipboard == runs[0].submission_url
        toasts = [n.message for n in app._notifications]
        assert toasts == [
            "No browser can be opened from this terminal, so the link was copied "
            f"to the clipboard: {runs[0].submission_url}"
        ]


@pytest.mark.parametrize(
    ("environ", "platform", "opens"),
    [
        ({"DISPLAY": ":0"}, "linux", True),
        ({"WAYLAND_DISPLAY": "wayland-0"}, "linux", True),
        ({}, "linux", False),
        ({}, "darwin", True),
        ({}, "win32", True),
        ({"DISPLAY": ":0", "SSH_CONNECTION": "a 1 b 22"}, "linux", False),
        ({REMOTE_CONSOLE_ENV: "1"}, "darwin", False),
    ],
)
def test_a_browser_opens_only_in_front_of_the_operator(environ, platform, opens):
    assert browser_opens_here(environ, platform) is opens


async def test_a_run_without_a_submission_opens_nothing(services):
    make_runs()
    app = HistoryHost(services)

    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        table_of(app).focus()
        tab = app.query_one(SyncHistoryTab)

        tab.action_open_link()
        await pilot.pause()

        assert app.opened == []


async def test_commands_cover_every_history_action(services):
    make_runs()
    app = HistoryHost(services)

    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        table_of(app).focus()
        await pilot.press("down")
        commands = {
            name: run for name, _, run in app.query_one(SyncHistoryTab).commands()
        }

        commands["Sync history: show run details"]()
        await settle(pilot)
        assert app.query_one(RunPanel).open
        commands["Sync history: open submission link"]()
        assert app.opened == []  # the interrupted run sent nothing
        assert set(commands) >= {
            "Sync history: copy submission link",
            "Sync history: refresh",
        }


# -- through the console --------------------------------------------------------


async def test_key_3_shows_the_history_and_enter_opens_the_newest_run(demo):
    newest = SyncRun.select().order_by(SyncRun.started_at.desc(), SyncRun.id.desc())
    app = console(demo)

    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        table = table_of(app)
        assert app.focused is table
        assert table.row_count == SyncRun.select().count()

        await pilot.press("enter")
        await settle(pilot)
        panel = app.query_one(RunPanel)
        assert panel.open and panel.run_id == newest.first().id

        await pilot.press("escape")
        await pilot.pause()
        assert not panel.open and app.focused is table


# -- snapshots ------------------------------------------------------------------


async def _open_second_run(pilot: Pilot) -> None:
    await settle(pilot)
    table_of(pilot.app).focus()
    await pilot.press("down", "down", "down", "enter")
    await settle(pilot)
    await pilot.wait_for_scheduled_animations()


async def _table_focused(pilot: Pilot) -> None:
    await settle(pilot)
    table_of(pilot.app).focus()
    await pilot.pause()


def test_history_snapshot_80x24(services, snap_compare):
    make_runs()
    assert snap_compare(
        HistoryHost(services), terminal_size=(80, 24), run_before=_table_focused
    )


def test_history_snapshot_120x36(services, snap_compare):
    make_runs()
    assert snap_compare(
        HistoryHost(services), terminal_size=(120, 36), run_before=_table_focused
    )


def test_run_panel_snapshot_80x24(services, snap_compare):
    make_runs()
    assert snap_compare(
        HistoryHost(services), terminal_size=(80, 24), run_before=_open_second_run
    )


def test_run_panel_snapshot_120x36(services, snap_compare):
    make_runs()
    assert snap_compare(
        HistoryHost(services), terminal_size=(120, 36), run_before=_open_second_run
    )
