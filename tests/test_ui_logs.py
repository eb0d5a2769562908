"""Logs: the paged table of API calls and the detail screen, driven by keyboard."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from rich.console import Console
from textual import events
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import DataTable, Select, Static
from ui_support import (
    FIXED_NOW,
    TabHost,
    clock_at_fixed_now,
    column,
    console,
    settle,
)

from zaptui.apilog import ApiCall, DatabaseApiLog
from zaptui.runtime import Runtime
from zaptui.services import Services
from zaptui.store import queries
from zaptui.store.models import ApiLogEntry
from zaptui.ui.screens.log_detail import LogDetailScreen, pretty_body
from zaptui.ui.tabs.logs import LogsTab, short_url

PRIVATE_KEY = "pk_4f9c2e7a1b3d5f6e8a0c2e4f6a8b0c2d"
HOSTILE = "[bold red]x[/] \x1b]52;c;ZWNobyBwd25lZA==\x07 done"


class LogsHost(TabHost):
    """The logs tab alone, with the console's stylesheets."""

    TAB = LogsTab
    TAB_ID = "logs-tab"


@pytest.fixture(autouse=True)
def fixed_clock() -> Iterator[None]:
    yield from clock_at_fixed_now()


@pytest.fixture
def services(db) -> Services:
    return Services(Runtime())


def make_log() -> None:
    """Four calls: two Klaviyo (one through the real redacting log), two ZAP~POST."""
    DatabaseApiLog().record(
        ApiCall(
            service="klaviyo",
            method="GET",
            url="https://a.klaviyo.com/api/segments/XyZ123/profiles?page%5Bsize%5D=100",
            status=200,
            duration_ms=412.0,
            request_headers={
                "Authorization": f"Klaviyo-API-Key {PRIVATE_KEY}",
                "revision": "2026-10-15",
            },
            response_headers={"content-type": "application/vnd.api+json"},
            response_body=json.dumps(
                {"data": [{"type": "profile", "id": "01HPROFILE0001"}], "links": {}}
            ),
            at=FIXED_NOW - timedelta(minutes=30),
        ),
        secrets=[PRIVATE_KEY],
    )
    ApiLogEntry.create(
        service="zappost",
        at=FIXED_NOW - timedelta(minutes=20),
        method="POST",
        url="https://api.zappost.com/api/v1/submissions",
        status=400,
        duration_ms=1234.0,
        request_headers={"Authorization": "[redacted]"},
        request_body=json.dumps({"campaignId": "c-1", "submissions": []}),
        response_headers={"content-type": "text/plain"},
        response_body=HOSTILE,
    )
    ApiLogEntry.create(
        service="klaviyo",
        at=FIXED_NOW - timedelta(minutes=10),
        method="GET",
        url="https://a.klaviyo.com/api/accounts",
        status=None,
        duration_ms=30000.0,
        error="timed out after 30 s",
    )
    ApiLogEntry.create(
        service="zappost",
        at=FIXED_NOW,
        method="GET",
        url="https://api.zappost.com/api/v1/campaigns",
        status=200,
        duration_ms=88.0,
        response_body="[]",
    )


def table_of(app: App) -> DataTable:
    return app.query_one("#logs-table", DataTable)


def screen_text(app: App) -> str:
    """Everything the detail screen's text widgets show, rendered wide."""
    console = Console(width=200, file=io.StringIO(), record=True)
    for static in app.screen.query(Static):
        console.print(static.content)
    return console.export_text()


async def test_logs_list_calls_newest_first_with_every_column(services):
    make_log()
    app = LogsHost(services)

    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        table = table_of(app)

        assert [str(col.label) for col in table.columns.values()] == [
            "Date (UTC)",
            "Service",
            "Verb",
            "URL",
            "Status",
            "Duration",
        ]
        assert column(table, "service") == [
            "ZAP~POST",
            "Klaviyo",
            "ZAP~POST",
            "Klaviyo",
        ]
        assert column(table, "method") == ["GET", "GET", "POST", "GET"]
        assert column(table, "status") == ["200", "error", "400", "200"]
        assert column(table, "duration") == ["88 ms", "30,000 ms", "1,234 ms", "412 ms"]
        assert column(table, "at")[0] == "2026-12-04 09:30"
        assert (
            column(table, "url")[3]
            == "/api/segments/XyZ123/profiles?page%5Bsize%5D=100"
        )


async def test_the_service_filter_shows_one_service(services):
    make_log()
    app = LogsHost(services)

    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        table = table_of(app)
        table.focus()

        await pilot.press("f")
        await settle(pilot)
        assert column(table, "service") == ["Klaviyo", "Klaviyo"]
        assert app.query_one(Select).value == "klaviyo"

        await pilot.press("f")
        await settle(pilot)
        assert column(table, "service") == ["ZAP~POST", "ZAP~POST"]

        await pilot.press("f")
        await settle(pilot)
        assert table.row_count == 4


async def test_moving_down_loads_more_of_the_log(services):
    ApiLogEntry.insert_many(
        [
            {
                "service": "klaviyo",
                "at": FIXED_NOW - timedelta(seconds=i),
                "method": "GET",
                "url": f"https://a.klaviyo.com/api/lists/{i}",
                "status": 200,
                "duration_ms": 10.0,
            }
            for i in range(150)
        ]
    ).execute()
    app = LogsHost(services)

    async with app.run_test() as pilot:
        await settle(pilot)
        table = table_of(app)
        assert table.row_count == queries.PAGE_SIZE

        table.focus()
        await pilot.press("ctrl+end")
        await settle(pilot)

        assert table.row_count == 150
        assert column(table, "url")[-1] == "/api/lists/149"


async def test_new_calls_appear_above_those_loaded(services):
    make_log()
    app = LogsHost(services)

    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        table = table_of(app)
        ApiLogEntry.create(
            service="klaviyo",
            at=FIXED_NOW + timedelta(minutes=1),
            method="GET",
            url="https://a.klaviyo.com/api/lists",
            status=200,
        )

        app.query_one(LogsTab).reload()
        await settle(pilot)

        assert table.row_count == 5
        assert column(table, "url")[0] == "/api/lists"


async def test_enter_opens_a_log_entry_with_pretty_json_and_redacted_key(services):
    make_log()
    app = LogsHost(services)

    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table_of(app).focus()
        await pilot.press("down", "down", "down", "enter")
        await settle(pilot)

        assert isinstance(app.screen, LogDetailScreen)
        text = screen_text(app)
        assert (
            "GET https://a.klaviyo.com/api/segments/XyZ123/profiles?page%5Bsize%5D=100"
            in text
        )
        assert "Klaviyo · status 200 · 412 ms · 2026-12-04 09:00 UTC" in text
        assert "Authorization: [redacted]" in text
        assert "revision: 2026-10-15" in text
        assert '      "type": "profile",' in text
        assert PRIVATE_KEY not in text and "pk_" not in text

        await pilot.press("escape")
        assert isinstance(app.screen, app.get_default_screen().__class__)
        assert table_of(app).has_focus


async def test_enter_typed_right_after_arrows_opens_the_call_they_reached(services):
    make_log()
    app = LogsHost(services)

    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table_of(app).focus()
        await pilot.pause()
        for key, character in [("down", None)] * 2 + [("enter", "\r")]:
            app.post_message(events.Key(key, character))
        await settle(pilot)

        assert isinstance(app.screen, LogDetailScreen)
        assert "POST https://api.zappost.com/api/v1/submissions" in screen_text(app)


async def test_a_body_with_markup_and_escape_sequences_is_shown_literally(services):
    make_log()
    app = LogsHost(services)

    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table_of(app).focus()
        await pilot.press("down", "down", "enter")
        await settle(pilot)

        text = screen_text(app)
        assert "[bold red]x[/] ␛]52;c;ZWNobyBwd25lZA==␇ done" in text
        assert "\x1b" not in text and "\x07" not in text
        assert '  "campaignId": "c-1",' in text
        assert "ZAP~POST · status 400 · 1,234 ms" in text


async def test_a_failed_call_shows_its_error(services):
    make_log()
    app = LogsHost(services)

    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table_of(app).focus()
        await pilot.press("down", "enter")
        await settle(pilot)

        text = screen_text(app)
        assert "Error: timed out after 30 s" in text
        assert "status no response" in text
        assert "Request body\n(empty)" in text


async def test_commands_cover_every_logs_action(services):
    make_log()
    app = LogsHost(services)

    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        table_of(app).focus()
        commands = {name: run for name, _, run in app.query_one(LogsTab).commands()}

        commands["Logs: show ZAP~POST"]()
        await settle(pilot)
        assert column(table_of(app), "service") == ["ZAP~POST", "ZAP~POST"]
        commands["Logs: show all services"]()
        await settle(pilot)
        assert table_of(app).row_count == 4
        commands["Logs: show API call"]()
        await settle(pilot)
        assert isinstance(app.screen, LogDetailScreen)
        assert "Logs: refresh" in commands and "Logs: show Klaviyo" in commands


def test_bodies_that_are_not_json_stay_as_they_are():
    assert pretty_body('{"a":[1,2]}') == '{\n  "a": [\n    1,\n    2\n  ]\n}'
    assert pretty_body("not {json") == "not {json"
    assert pretty_body(None) == "(empty)"
    assert short_url("https://a.klaviyo.com/api/lists?x=1") == "/api/lists?x=1"
    assert short_url("not a url") == "not a url"


# -- through the console --------------------------------------------------------


async def test_key_5_opens_a_logged_call_with_its_key_redacted(demo):
    newest = ApiLogEntry.select().order_by(ApiLogEntry.at.desc(), ApiLogEntry.id.desc())
    entry = newest.first()
    app = console(demo)

    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        assert app.focused is table_of(app)
        await pilot.press("enter")
        await settle(pilot)

        assert isinstance(app.screen, LogDetailScreen)
        assert app.screen.entry_id == entry.id
        text = screen_text(app)
        assert f"{entry.method} {entry.url}" in text
        assert "pk_" not in text
        if "authorization" in {name.lower() for name in entry.request_headers or {}}:
            assert "uthorization: [redacted]" in text

        await pilot.press("escape")
        await pilot.pause()
        assert app.focused is table_of(app)


# -- snapshots ------------------------------------------------------------------


async def _table_focused(pilot: Pilot) -> None:
    await settle(pilot)
    table_of(pilot.app).focus()
    await pilot.pause()


async def _detail_of_zappost_call(pilot: Pilot) -> None:
    await _table_focused(pilot)
    await pilot.press("down", "down", "enter")
    await settle(pilot)


def test_logs_snapshot_80x24(services, snap_compare):
    make_log()
    assert snap_compare(
        LogsHost(services), terminal_size=(80, 24), run_before=_table_focused
    )


def test_logs_snapshot_120x36(services, snap_compare):
    make_log()
    assert snap_compare(
        LogsHost(services), terminal_size=(120, 36), run_before=_table_focused
    )


def test_log_detail_snapshot_80x24(services, snap_compare):
    make_log()
    assert snap_compare(
        LogsHost(services), terminal_size=(80, 24), run_before=_detail_of_zappost_call
    )


def test_log_detail_snapshot_120x36(services, snap_compare):
    make_log()
    assert snap_compare(
        LogsHost(services),
        terminal_size=(120, 36),
        run_before=_detail_of_zappost_call,
    )
