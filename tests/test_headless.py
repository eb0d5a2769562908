"""`zaptui --run-scheduler` as a real process: its log lines, exit statuses,
--once, and a clean stop on SIGTERM or SIGINT that the next start recovers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta

import pytest
from scheduler_world import Fleet, start_headless, wait_for

from zaptui.clock import utcnow
from zaptui.store.models import DataConnection, SyncRun


@pytest.fixture
def fleet(db) -> Iterator[Fleet]:
    served = Fleet.serve()
    yield served
    served.stop()


def run_once(
    fleet: Fleet, db_url: str, log_format: str = "text", **env: str
) -> tuple[int, str]:
    process = start_headless(db_url, fleet.env(**env), once=True, log_format=log_format)
    _, stderr = process.communicate(timeout=60)
    return process.returncode, stderr


def assert_no_secrets(fleet: Fleet, output: str) -> None:
    for secret in fleet.secrets():
        assert secret not in output
    assert "pk_" not in output


def test_once_syncs_what_is_due_and_exits_zero(fleet, db_url) -> None:
    ids = fleet.pair(2, 1, members=4)

    status, stderr = run_once(fleet, db_url)

    assert status == 0, stderr
    lines = stderr.strip().splitlines()
    assert sum("started." in line for line in lines) == 2
    finished = [line for line in lines if "succeeded: fetched 4, imported 4" in line]
    assert len(finished) == 2
    assert all(" INFO " in line for line in finished)
    assert sorted(fleet.mailed()) == sorted(fleet.members(ids))
    assert {run.trigger for run in SyncRun.select()} == {"scheduled"}
    assert_no_secrets(fleet, stderr)

    # Nothing is due any more: a second run syncs nothing.
    status, stderr = run_once(fleet, db_url)
    assert status == 0
    assert "started" not in stderr
    assert SyncRun.select().count() == 2


def test_once_exits_one_when_a_sync_failed(fleet, db_url) -> None:
    good, bad = fleet.pair(2, 1, members=2)
    fleet.sources[bad][0].revoked = True

    status, stderr = run_once(fleet, db_url)

    assert status == 1
    errors = [line for line in stderr.splitlines() if " ERROR " in line]
    assert any(f"data connection {bad}" in line and "failed" in line for line in errors)
    assert any("is failing" in line for line in errors)  # the alert
    assert sorted(fleet.mailed()) == sorted(fleet.members([good]))
    assert_no_secrets(fleet, stderr)


def test_json_log_lines_carry_the_event_and_counts(fleet, db_url) -> None:
    (connection_id,) = fleet.pair(1, 1, members=3)

    status, stderr = run_once(fleet, db_url, log_format="json")

    assert status == 0
    entries = [json.loads(line) for line in stderr.strip().splitlines()]
    finished = [e for e in entries if e.get("event") == "sync_finished"]
    assert len(finished) == 1
    assert finished[0]["connection_id"] == connection_id
    assert (finished[0]["status"], finished[0]["imported"]) == ("succeeded", 3)
    assert finished[0]["level"] == "INFO"
    assert {"time", "level", "logger", "message"} <= set(entries[0])


def test_a_connection_held_elsewhere_is_skipped_and_logged(fleet, db_url) -> None:
    (connection_id,) = fleet.pair(1, 1, members=2)
    DataConnection.update(
        lease_owner="another-host:77:cafe",
        lease_expires_at=utcnow() + timedelta(minutes=5),
    ).execute()

    status, stderr = run_once(fleet, db_url)

    assert status == 0
    (line,) = [line for line in stderr.splitlines() if "Skipped" in line]
    assert f"data connection {connection_id}" in line
    assert "another process" in line
    assert SyncRun.select().count() == 0


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_sync_at_a_safe_point_and_the_next_start_recovers(
    fleet, db_url, stop_signal
) -> None:
    (connection_id,) = fleet.pair(1, 1, members=250)
    fleet.sim.faults.add("klaviyo", "list_profiles", "slow", None, delay=0.5)
    process = start_headless(db_url, fleet.env(ZAPTUI_SCHEDULER_POLL_SECONDS="0.2"))
    wait_for(
        lambda: SyncRun.select().where(SyncRun.fetched > 0).exists(),
        30,
        "the sync to fetch a page",
    )

    process.send_signal(stop_signal)
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == 0, stderr
    assert f"{stop_signal.name} received" in stderr
    assert "scheduler stopped" in stderr
    (run,) = SyncRun.select()
    assert run.status == "interrupted"
    assert fleet.mailed() == []

    fleet.sim.faults.clear()
    status, stderr = run_once(fleet, db_url)
    assert status == 0, stderr
    assert sorted(fleet.mailed()) == sorted(fleet.members([connection_id]))
    assert fleet.sim.zappost.duplicates() == []


def test_missing_zappost_credentials_are_bad_usage(fleet, db_url) -> None:
    fleet.pair(1, 1, members=1)

    status, stderr = run_once(
        fleet, db_url, ZAPTUI_ZAP_API_KEY="", ZAPTUI_ZAP_API_PASSWORD=""
    )

    assert status == 2
    assert "ZAP~POST credentials are not set" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    "arguments",
    [
        ["--once"],
        ["--run-scheduler", "--log-format", "xml"],
        ["--run-scheduler", "--once", "--db", "mysql://nowhere/db"],
    ],
)
def test_bad_usage_exits_two(arguments, tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "zaptui", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
