"""The demo: what `zaptui --demo` opens on, built without the network."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ui_support import SMALL_DEMO, fixed_demo, settle

from zaptui import settings
from zaptui.clock import set_clock
from zaptui.demo import ZAP_ACCOUNT_NAME, Demo, build_demo
from zaptui.store.models import (
    Account,
    ApiLogEntry,
    DataConnection,
    ProfileOutcome,
    SyncRun,
    database_proxy,
)
from zaptui.ui.launch import launch_console
from zaptui.ui.widgets.keyed_table import KeyedTable


@pytest.fixture
def demo(tmp_path) -> Iterator[Demo]:
    built = fixed_demo(tmp_path / "demo")
    yield built
    built.close()
    set_clock(None)


def test_demo_has_two_accounts_one_of_them_revoked(demo):
    accounts = {account.name: account for account in Account.select()}

    assert set(accounts) == {"Acme Outdoor", "Closed Shop Ltd"}
    assert accounts["Acme Outdoor"].status == "connected"
    closed = accounts["Closed Shop Ltd"]
    assert closed.status == "unauthorised"
    assert "The API key specified is invalid." in closed.status_reason


def test_demo_has_several_connections_one_paused_with_complete_mappings(demo):
    connections = list(DataConnection.select())
    paused = [c.name for c in connections if c.status == "paused"]
    spring = next(c for c in connections if c.name == "Spring postcards")

    assert len(connections) == 5 and paused == ["VIP preview"]
    assert {c.campaign_name for c in connections} == {
        "Welcome Letter",
        "Spring Sale A5 Postcard",
        "Win-back Postcard",
    }
    assert {c.source_type for c in connections} == {"list", "segment"}
    assert demo.services.mapping(spring.id)["tier"] == "properties.tier"


def test_demo_history_holds_a_partial_run_with_failed_profiles_and_api_calls(demo):
    partial = SyncRun.select().where(SyncRun.status == "partial").first()
    failed_profiles = ProfileOutcome.select().where(
        (ProfileOutcome.run == partial.id) & (ProfileOutcome.outcome == "failed")
    )
    services = {row.service for row in ApiLogEntry.select(ApiLogEntry.service)}

    assert SyncRun.select().count() >= 10
    assert partial is not None and partial.failed > 0 and partial.imported > 0
    assert failed_profiles.count() == partial.failed
    assert SyncRun.select().where(SyncRun.status == "failed").exists()
    assert services == {"klaviyo", "zappost"}
    assert settings.get("zap_account_name") == ZAP_ACCOUNT_NAME


def test_demo_members_keep_joining_so_sync_now_has_someone_new(tmp_path):
    built = build_demo(tmp_path / "demo", profiles=SMALL_DEMO, churn_seconds=0.05)
    try:
        welcome = DataConnection.get(DataConnection.name == "Welcome pack")
        time.sleep(0.2)
        first = built.services.sync_now(welcome.id)
        time.sleep(0.2)
        second = built.services.sync_now(welcome.id)
    finally:
        built.close()

    assert first.imported > 0 and second.imported > 0


def test_demo_never_touches_the_network(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the demo tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    built = fixed_demo(tmp_path / "demo", profiles=SMALL_DEMO)
    try:
        assert SyncRun.select().count() > 0
    finally:
        built.close()
        set_clock(None)


def test_demo_writes_no_key_file_outside_its_folder(tmp_path):
    key_file = Path(os.environ["ZAPTUI_SECRET_KEY_FILE"])
    built = fixed_demo(tmp_path / "demo", profiles=SMALL_DEMO)
    try:
        acme = Account.get(Account.name == "Acme Outdoor")
        key = built.runtime.secrets.decrypt(acme.api_key_encrypted)
    finally:
        built.close()
        set_clock(None)

    assert not key_file.exists()
    assert key == built.world.klaviyo.account("Acme Outdoor").private_key


def test_demo_module_imports_no_textual():
    code = (
        "import sys, zaptui.demo\n"
        "print(','.join(m for m in sys.modules if m.split('.')[0] == 'textual'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def namespace(**values) -> argparse.Namespace:
    options = {"demo": False, "db": None, "klaviyo_url": None, "zap_url": None}
    return argparse.Namespace(**(options | values))


def test_launch_demo_opens_the_console_and_cleans_up(tmp_path, monkeypatch):
    monkeypatch.setenv("ZAPTUI_LOG_FILE", str(tmp_path / "console.log"))
    seen: dict[str, object] = {}

    async def pilot_run(pilot) -> None:
        for _ in range(100):
            await settle(pilot)
            if pilot.app.query("#accounts-table"):
                break
        await settle(pilot)
        table = pilot.app.query_one("#accounts-table", KeyedTable)
        seen["accounts"] = table.row_count
        seen["database"] = Path(database_proxy.obj.database)
        seen["key"] = os.environ.get("ZAPTUI_SECRET_KEY")
        await pilot.press("q")

    status = launch_console(namespace(demo=True), auto_pilot=pilot_run)
    set_clock(None)

    assert status == 0
    assert seen["accounts"] == 2 and seen["key"]
    assert not Path(str(seen["database"])).exists()  # the demo folder is gone
    assert "ZAPTUI_SECRET_KEY" not in os.environ
    assert not Path(os.environ["ZAPTUI_SECRET_KEY_FILE"]).exists()


def test_launch_opens_the_configured_database(tmp_path, monkeypatch):
    monkeypatch.setenv("ZAPTUI_LOG_FILE", str(tmp_path / "console.log"))
    url = f"sqlite:///{tmp_path / 'zaptui.db'}"
    seen: dict[str, object] = {}

    async def pilot_run(pilot) -> None:
        await settle(pilot)
        seen["accounts"] = pilot.app.query_one("#accounts-table").row_count
        seen["detail"] = str(pilot.app.query_one("#account-detail").render())
        await pilot.press("q")

    status = launch_console(namespace(db=url), auto_pilot=pilot_run)

    assert status == 0
    assert seen["accounts"] == 0
    assert "press c to connect one" in str(seen["detail"])
    assert (tmp_path / "zaptui.db").exists()
