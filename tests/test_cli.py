"""The `zaptui` command, run as a real process against the simulators over
loopback and a SQLite file: exit status 0 on success, 1 when the work failed,
2 for bad usage, and every error one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from sync_world import World, build_world

from zaptui.sim.server import SimWorld
from zaptui.store.models import AuditEntry, DataConnection


@pytest.fixture
def world(db) -> Iterator[World]:
    yield from build_world(seed=9, clean=40)


@pytest.fixture
def env(world: World, db_url: str) -> dict[str, str]:
    values = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ZAPTUI_DEBUG", "ZAPTUI_ZAP_", "SSH_"))
    }
    values.update(
        ZAPTUI_DB=db_url,
        ZAPTUI_KLAVIYO_URL=SimWorld.klaviyo_url(world.server.url),
        ZAPTUI_ZAP_URL=SimWorld.zap_url(world.server.url),
        ZAPTUI_ZAP_API_KEY=world.sim.zappost.api_key,
        ZAPTUI_ZAP_API_PASSWORD=world.sim.zappost.api_password,
        ZAPTUI_ACTOR="cli-operator",
        ACME_KEY=world.acme.private_key,
    )
    return values


def zaptui(
    env: dict[str, str], *args: str, status: int = 0, **extra: str
) -> subprocess.CompletedProcess[str]:
    """Run `python -m zaptui ARGS`; check its exit status and one-line errors."""
    result = subprocess.run(
        [sys.executable, "-m", "zaptui", *args],
        capture_output=True,
        text=True,
        env={**env, **extra},
        timeout=60,
    )
    assert result.returncode == status, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 1, result.stderr
    return result


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


def add_acme(env: dict[str, str]) -> int:
    result = zaptui(env, "account", "add", "--api-key-env", "ACME_KEY")
    assert result.stdout.startswith("paired Klaviyo account 1: Acme Outdoor")
    return 1


def add_connection(
    env: dict[str, str], world: World, *extra: str, campaign: str | None = None
) -> int:
    add_acme(env)
    result = zaptui(
        env,
        "connection",
        "add",
        "--account",
        "1",
        "--segment",
        world.segment.id,
        "--campaign",
        campaign or world.campaign_id(),
        *extra,
    )
    assert result.stdout.startswith("created data connection 1: ")
    return 1


def test_account_add_reads_the_key_from_the_named_variable(
    world: World, env: dict[str, str]
) -> None:
    result = zaptui(env, "account", "add", "--api-key-env", "ACME_KEY")

    assert result.stdout.strip() == "paired Klaviyo account 1: Acme Outdoor (connected)"
    assert world.acme.private_key not in result.stdout + result.stderr
    listed = as_json(zaptui(env, "account", "list", "--json"))
    assert [(a["id"], a["name"], a["status"]) for a in listed] == [
        (1, "Acme Outdoor", "connected")
    ]
    assert AuditEntry.get().actor == "cli-operator"


def test_a_key_given_on_the_command_line_is_refused(
    world: World, env: dict[str, str]
) -> None:
    key = world.acme.private_key

    inline = zaptui(env, "account", "add", "--api-key-env", key, status=2)
    joined = zaptui(env, "account", "add", f"--api-key-env={key}", status=2)

    for result in (inline, joined):
        assert "environment variable" in result.stderr
        assert key not in result.stdout + result.stderr
    assert as_json(zaptui(env, "account", "list", "--json")) == []


def test_a_key_missing_a_scope_is_paired_and_exits_1_with_the_reason(
    world: World, env: dict[str, str]
) -> None:
    books = world.sim.klaviyo.account("Borough Books").private_key

    result = zaptui(
        env, "account", "add", "--api-key-env", "BOOKS", status=1, BOOKS=books
    )

    assert "Borough Books (missing scope: " in result.stdout
    assert "segments" in result.stdout


def test_a_revoked_key_fails_in_one_line(world: World, env: dict[str, str]) -> None:
    closed = world.sim.klaviyo.account("Closed Shop Ltd").private_key

    result = zaptui(
        env, "account", "add", "--api-key-env", "CLOSED", status=1, CLOSED=closed
    )

    assert result.stderr.startswith("zaptui: Klaviyo refused the key (unauthorised)")
    assert closed not in result.stderr


def test_an_unset_variable_is_bad_usage(env: dict[str, str]) -> None:
    result = zaptui(
        env, "account", "add", "--api-key-env", "NOT_SET_ANYWHERE", status=2
    )

    assert "NOT_SET_ANYWHERE is empty or not set" in result.stderr


def test_a_connection_is_paired_listed_paused_resumed_and_removed(
    world: World, env: dict[str, str]
) -> None:
    connection = add_connection(env, world, "--name", "Welcome new customers")

    listed = as_json(zaptui(env, "connection", "list", "--json"))
    zaptui(env, "connection", "pause", str(connection))
    paused = as_json(zaptui(env, "connection", "list", "--json"))
    refused = zaptui(env, "sync", str(connection), status=1)
    zaptui(env, "connection", "resume", str(connection))
    table = zaptui(env, "connection", "list").stdout
    removed = zaptui(env, "connection", "remove", str(connection))

    assert [(c["id"], c["name"], c["type"], c["status"]) for c in listed] == [
        (1, "Welcome new customers", "segment", "active")
    ]
    assert listed[0]["campaign"] == "Welcome Letter"
    assert paused[0]["status"] == "paused"
    assert "paused: resume it first" in refused.stderr
    assert "Welcome new customers" in table and "active" in table
    assert removed.stdout.strip() == "data connection 1 removed"
    assert as_json(zaptui(env, "connection", "list", "--json")) == []
    assert world.mailed() == []


def test_a_mapping_is_shown_and_changed_field_by_field(
    world: World, env: dict[str, str]
) -> None:
    spring = world.sim.zappost.campaign_named("Spring Sale A5 Postcard")
    add_connection(env, world, campaign=spring.id)

    saved = zaptui(
        env, "connection", "map", "1", "tier=properties.tier", "salutation=title"
    )
    shown = as_json(zaptui(env, "connection", "map", "1", "--json"))
    unmapped = zaptui(env, "connection", "map", "1", "salutation=")
    table = zaptui(env, "connection", "map", "1").stdout
    unknown = zaptui(env, "connection", "map", "1", "tier=loyalty", status=1)
    automatic = zaptui(env, "connection", "map", "1", "postcode=last_name", status=1)
    next(f for f in spring.fields if f["name"] == "tier")["required"] = True
    required = zaptui(env, "connection", "map", "1", "tier=", status=1)
    malformed = zaptui(env, "connection", "map", "1", "tier", status=2)

    assert saved.stdout.strip() == (
        "mapping of data connection 1 saved: tier=properties.tier, salutation=title"
    )
    assert shown["tier"] == "properties.tier" and shown["salutation"] == "title"
    assert "salutation not mapped" in unmapped.stdout
    assert "tier" in table and "properties.tier" in table
    assert "salutation" not in table
    assert "unknown profile path 'loyalty'" in unknown.stderr
    assert "filled from the cleansed address" in automatic.stderr
    assert required.stderr.strip() == (
        "zaptui: map every required campaign field first: tier"
    )
    assert "is not FIELD=PATH" in malformed.stderr
    final = as_json(zaptui(env, "connection", "map", "1", "--json"))
    assert final["tier"] == "properties.tier" and "salutation" not in final
    audits = AuditEntry.select().where(AuditEntry.action == "connection.map")
    assert [a.actor for a in audits] == ["cli-operator", "cli-operator"]


def test_names_holding_escape_sequences_never_reach_the_terminal(
    world: World, env: dict[str, str]
) -> None:
    created = zaptui(
        env,
        "connection",
        "add",
        "--account",
        str(add_acme(env)),
        "--segment",
        world.segment.id,
        "--campaign",
        world.campaign_id(),
        "--name",
        "Evil\x1b]52;c;Zm9v\x07 list",
    )
    table = zaptui(env, "connection", "list").stdout
    listed = as_json(zaptui(env, "connection", "list", "--json"))

    assert "\x1b" not in created.stdout and "Evil list" in created.stdout
    assert "\x1b" not in table and "Evil list" in table
    assert listed[0]["name"] == "Evil\x1b]52;c;Zm9v\x07 list"  # the data is kept


def test_sync_runs_now_and_prints_the_runs_counts(
    world: World, env: dict[str, str]
) -> None:
    connection = add_connection(env, world)

    first = as_json(zaptui(env, "sync", str(connection), "--json"))
    again = zaptui(env, "sync", str(connection)).stdout

    assert first["status"] == "partial"
    assert first["trigger"] == "manual"
    assert (first["fetched"], first["imported"], first["failed"]) == (44, 40, 4)
    assert first["submission_id"] == world.sim.zappost.submissions()[0].id
    assert sorted(world.mailed()) == sorted(world.members.mailable)
    assert again.startswith("sync 2 succeeded: fetched 44, imported 0, failed 0")
    assert "skipped as duplicate 44" in again
    assert len(world.mailed()) == 40


def test_new_joiners_only_connection_from_the_command_line(
    world: World, env: dict[str, str]
) -> None:
    connection = add_connection(env, world, "--new-joiners-only")

    run = as_json(zaptui(env, "sync", str(connection), "--json"))

    assert DataConnection.get_by_id(connection).new_joiners_only
    assert (run["fetched"], run["imported"]) == (0, 0)


def test_a_failed_sync_exits_1(world: World, env: dict[str, str]) -> None:
    connection = add_connection(env, world)
    del world.acme.segments[world.segment.id]  # deleted in Klaviyo since

    result = zaptui(env, "sync", str(connection), "--json", status=1)

    run = as_json(result)
    assert run["status"] == "failed"
    assert "HTTP 404" in run["error"]
    assert world.mailed() == []


def test_settings_are_changed_from_the_command_line(
    world: World, env: dict[str, str]
) -> None:
    frequency = zaptui(env, "settings", "set", "sync-frequency", "6h")
    fix = zaptui(env, "settings", "set", "fix-address-data", "on")
    wrong = zaptui(env, "settings", "set", "sync-frequency", "5h", status=2)
    shown = as_json(zaptui(env, "settings", "show", "--json"))

    assert frequency.stdout.strip() == "Sync frequency set to 6"
    assert fix.stdout.strip() == "Fix address data set to True"
    assert "one of 1h, 6h, 12h, 24h" in wrong.stderr
    assert (shown["sync_frequency_hours"], shown["fix_address_data"]) == (6, True)
    assert "zap_api_password_encrypted" not in shown


@pytest.mark.parametrize(
    "args",
    [
        ("frobnicate",),
        ("connection", "add", "--account", "1", "--campaign", "x"),
        ("connection", "add", "--account", "1", "--list", "a", "--segment", "b"),
        ("sync",),
        ("sync", "one"),
        ("settings", "set", "colour", "red"),
        ("account", "list", "--jsn"),
    ],
)
def test_bad_usage_exits_2_with_one_line(env: dict[str, str], args) -> None:
    result = zaptui(env, *args, status=2)

    assert result.stderr.startswith("zaptui: ")
    assert "--help" in result.stderr


def test_unknown_things_fail_in_one_line(env: dict[str, str]) -> None:
    sync = zaptui(env, "sync", "99", status=1)
    pause = zaptui(env, "connection", "pause", "7", status=1)
    recheck = zaptui(env, "account", "recheck", "3", status=1)

    assert sync.stderr.strip() == "zaptui: there is no data connection 99"
    assert pause.stderr.strip() == "zaptui: there is no data connection 7"
    assert recheck.stderr.strip() == "zaptui: there is no Klaviyo account 3"


def test_an_unreachable_database_is_one_line_naming_the_fix(
    env: dict[str, str],
) -> None:
    result = zaptui(
        env,
        "--db",
        "postgresql://nobody:hunter22@127.0.0.1:1/zaptui",
        "account",
        "list",
        status=1,
    )

    assert result.stderr.startswith("zaptui: cannot open the database")
    assert "check --db or ZAPTUI_DB" in result.stderr
    assert "hunter22" not in result.stderr


def test_missing_zappost_credentials_say_how_to_set_them(
    world: World, env: dict[str, str]
) -> None:
    del env["ZAPTUI_ZAP_API_KEY"], env["ZAPTUI_ZAP_API_PASSWORD"]

    result = zaptui(env, "zap", "campaigns", status=1)

    assert "export ZAPTUI_ZAP_API_KEY and ZAPTUI_ZAP_API_PASSWORD" in result.stderr


def test_urls_on_the_command_line_win_over_the_environment(
    world: World, env: dict[str, str]
) -> None:
    env = {**env, "ZAPTUI_KLAVIYO_URL": "http://127.0.0.1:1/nowhere"}

    paired = zaptui(
        env,
        "--klaviyo-url",
        SimWorld.klaviyo_url(world.server.url),
        "account",
        "add",
        "--api-key-env",
        "ACME_KEY",
    )

    assert paired.stdout.strip().endswith("Acme Outdoor (connected)")


def test_debug_output_carries_no_secret_and_no_value_written(
    env: dict[str, str], world: World
) -> None:
    token = "T0K3N-only-the-webhook-knows"
    debug = {**env, "ZAPTUI_DEBUG": "1"}
    runs = [
        ["account", "add", "--api-key-env", "ACME_KEY"],
        ["settings", "set", "alert-webhook", f"https://hooks.example/{token}"],
        ["connection", "add", "--account", "1", "--segment", world.segment.id]
        + ["--campaign", world.campaign_id()],
        ["sync", "1"],
    ]
    stderr = ""
    for args in runs:
        result = subprocess.run(
            [sys.executable, "-m", "zaptui", *args],
            capture_output=True,
            text=True,
            env=debug,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        stderr += result.stderr

    assert "DEBUG" in stderr  # debug output was on
    for secret in (world.acme.private_key, world.sim.zappost.api_password, token):
        assert secret not in stderr
    # Nor the profiles' own data: debug output is for the operator's journal.
    email = world.sim.klaviyo.profiles[world.members.mailable[0]].attributes["email"]
    assert email not in stderr
