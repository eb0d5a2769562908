"""Every fault the simulators inject, on Klaviyo's member pages and on ZAP~POST's
submission call: the run ends in the right status after bounded retries, and
once the fault passes everyone mailable is mailed exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sync_world import World, build_world

from zaptui.sim.zappost import COMMITTED_SERVICE
from zaptui.store.models import ProfileOutcome, SyncRun
from zaptui.sync.engine import RecoveryFailed

ATTEMPTS = 3  # sync_world's fast retry policies make three attempts
TIMEOUT = 0.3  # seconds; a "slow" fault waits longer than this
SLOW = {"delay": 0.6}

# (kind, options) of every fault the simulators can inject.
KLAVIYO_FAULTS = [
    ("429", {"retry_after": 1}),
    ("429", {"retry_after": None}),
    ("5xx", {"status": 503}),
    ("5xx", {"status": 502}),
    ("slow", SLOW),
    ("drop", {}),
    ("malformed", {}),
    ("html403", {}),
]
# What the ZAP~POST client retries on its own; the others end the attempt.
ZAP_RETRIED = {"429", "5xx", "slow", "drop"}
ZAP_FAULTS = [
    ("429", {"retry_after": 1}),
    ("429", {"retry_after": None}),
    ("5xx", {"status": 500}),
    ("slow", SLOW),
    ("drop", {}),
    ("malformed", {}),
    ("html403", {}),
]


def fault_id(value: Any) -> str:
    if isinstance(value, dict):
        return "-".join(f"{k}={v}" for k, v in value.items()) or "plain"
    return str(value)


@pytest.fixture
def world(db) -> Iterator[World]:
    yield from build_world(
        seed=11, clean=150, klaviyo_timeout=TIMEOUT, zap_timeout=TIMEOUT
    )


def sync_until_settled(world: World, connection_id: int, tries: int = 3) -> SyncRun:
    """Sync again until a run starts; an unconfirmed submission may refuse one."""
    for _ in range(tries):
        try:
            return world.services.sync_now(connection_id)
        except RecoveryFailed:
            continue
    raise AssertionError("the connection never settled")


def assert_everyone_mailed_once(world: World) -> None:
    assert sorted(world.mailed()) == sorted(world.members.mailable)
    assert world.sim.zappost.duplicates() == []
    assert (
        not ProfileOutcome.select().where(ProfileOutcome.outcome == "staged").exists()
    )


@pytest.mark.parametrize(("kind", "options"), KLAVIYO_FAULTS, ids=fault_id)
def test_passing_klaviyo_fault_on_member_pages_is_retried(
    world: World, kind: str, options: dict[str, Any]
) -> None:
    connection = world.connect()
    rule = world.sim.faults.add(
        "klaviyo", "segment_profiles", kind, ATTEMPTS - 1, skip=1, **options
    )

    run = world.services.sync_now(connection.id)

    assert world.sim.faults.fired(rule) == ATTEMPTS - 1
    assert run.status == "partial"
    assert (run.fetched, run.imported, run.failed) == (154, 150, 4)
    assert_everyone_mailed_once(world)
    if kind == "429":
        # Retry-After, else the wait the error detail names.
        assert world.sleeps.delays.count(1.0) >= ATTEMPTS - 1


@pytest.mark.parametrize(("kind", "options"), KLAVIYO_FAULTS, ids=fault_id)
def test_lasting_klaviyo_fault_fails_the_run_and_the_next_sync_catches_up(
    world: World, kind: str, options: dict[str, Any]
) -> None:
    connection = world.connect()
    rule = world.sim.faults.add(
        "klaviyo", "segment_profiles", kind, None, skip=1, **options
    )

    failed = world.services.sync_now(connection.id)
    fired = world.sim.faults.fired(rule)
    world.sim.faults.clear()
    caught_up = world.services.sync_now(connection.id)

    assert fired == ATTEMPTS
    assert failed.status == "failed"
    assert failed.error
    assert "pk_" not in failed.error
    assert world.mailed().count(world.members.mailable[0]) == 1
    assert caught_up.status == "partial"
    assert caught_up.imported == 150
    assert_everyone_mailed_once(world)


@pytest.mark.parametrize(("kind", "options"), ZAP_FAULTS, ids=fault_id)
def test_passing_zappost_fault_on_the_submission(
    world: World, kind: str, options: dict[str, Any]
) -> None:
    connection = world.connect()
    count = ATTEMPTS - 1 if kind in ZAP_RETRIED else 1
    rule = world.sim.faults.add("zappost", "submit", kind, count, **options)

    run = world.services.sync_now(connection.id)
    final = sync_until_settled(world, connection.id)

    assert world.sim.faults.fired(rule) == count
    first = SyncRun.get_by_id(run.id)
    if kind in ZAP_RETRIED:
        assert run.status == "partial"
        assert final.imported == 0
    else:
        # Not retried by the client: the submission stays unconfirmed until
        # the next sync checks with ZAP~POST and resends it.
        assert run.status == "failed"
        assert "has not confirmed the submission" in run.error
        assert first.status == "partial"
        assert first.submission_id
    assert first.imported == 150
    assert_everyone_mailed_once(world)


@pytest.mark.parametrize(("kind", "options"), ZAP_FAULTS, ids=fault_id)
def test_lasting_zappost_fault_leaves_the_submission_to_the_next_sync(
    world: World, kind: str, options: dict[str, Any]
) -> None:
    connection = world.connect()
    rule = world.sim.faults.add("zappost", "submit", kind, None, **options)

    run = world.services.sync_now(connection.id)
    fired = world.sim.faults.fired(rule)
    world.sim.faults.clear()
    next_run = sync_until_settled(world, connection.id)

    assert fired == (ATTEMPTS if kind in ZAP_RETRIED else 1)
    assert run.status == "failed"
    assert run.phase == "submitting"
    assert "has not confirmed the submission" in run.error
    assert SyncRun.get_by_id(run.id).status == "partial"
    assert next_run.imported == 0
    assert len(world.sim.zappost.submissions()) == 1
    assert_everyone_mailed_once(world)


@pytest.mark.parametrize(("kind", "options"), ZAP_FAULTS, ids=fault_id)
def test_lost_answer_after_zappost_stored_the_submission(
    world: World, kind: str, options: dict[str, Any]
) -> None:
    connection = world.connect()
    world.sim.faults.add(COMMITTED_SERVICE, "submit", kind, 1, **options)

    run = world.services.sync_now(connection.id)
    sync_until_settled(world, connection.id)

    first = SyncRun.get_by_id(run.id)
    assert first.status == "partial"
    assert first.submission_id == world.sim.zappost.submissions()[0].id
    assert len(world.sim.zappost.submissions()) == 1
    assert_everyone_mailed_once(world)


def test_zappost_refusing_the_campaign_fails_before_anything_is_read(
    world: World,
) -> None:
    connection = world.connect()
    world.sim.faults.add("zappost", "campaign", "5xx", None, status=503)

    run = world.services.sync_now(connection.id)
    world.sim.faults.clear()
    world.services.sync_now(connection.id)

    assert run.status == "failed"
    assert run.fetched == 0
    assert "ZAP~POST" in run.error
    assert_everyone_mailed_once(world)
