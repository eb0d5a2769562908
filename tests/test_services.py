"""Operator services against the simulators: accounts, data connections,
mappings, pause and resume, settings, recovery, and the audit trail."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from sync_world import World, build_world

from zaptui import settings
from zaptui.clock import utcnow
from zaptui.runtime import default_actor
from zaptui.services import ServiceError, Services
from zaptui.sim.zappost import COMMITTED_SERVICE, field_definition
from zaptui.store.models import (
    Account,
    AuditEntry,
    DataConnection,
    FieldMapping,
    ProfileOutcome,
    Setting,
    SyncRun,
)
from zaptui.sync.engine import SyncRefused


@pytest.fixture
def world(db) -> Iterator[World]:
    yield from build_world(seed=7, clean=30)


def audit_actions() -> list[tuple[str, str]]:
    return [(e.actor, e.action) for e in AuditEntry.select().order_by(AuditEntry.id)]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- Klaviyo accounts ----------------------------------------------------------


def test_connecting_an_account_validates_the_key_with_klaviyo(world: World) -> None:
    account = world.services.connect_account(world.acme.private_key)

    assert (account.name, account.status, account.status_reason) == (
        "Acme Outdoor",
        "connected",
        "",
    )
    assert account.klaviyo_id == world.acme.id
    assert account.key_hint == world.acme.private_key[-4:]
    assert world.acme.private_key not in account.api_key_encrypted
    assert audit_actions() == [("test-operator", "account.connect")]


def test_a_key_without_a_scope_connects_as_missing_scope(world: World) -> None:
    books = world.sim.klaviyo.account("Borough Books")

    account = world.services.connect_account(books.private_key)

    assert account.status == "missing scope"
    assert "segments" in account.status_reason


def test_a_key_without_segments_read_still_lists_its_lists(world: World) -> None:
    books = world.sim.klaviyo.account("Borough Books")
    account = world.services.connect_account(books.private_key)

    sources = world.services.sources(account.id)

    assert [(s.type, s.name) for s in sources] == [("list", "Book Club")]


def test_a_revoked_key_is_refused_as_unauthorised(world: World) -> None:
    closed = world.sim.klaviyo.account("Closed Shop Ltd")

    with pytest.raises(ServiceError, match="unauthorised") as refused:
        world.services.connect_account(closed.private_key)

    assert closed.private_key not in str(refused.value)
    assert Account.select().count() == 0


def test_something_that_is_not_a_private_key_is_refused(world: World) -> None:
    with pytest.raises(ServiceError, match="start with pk_"):
        world.services.connect_account("sk_live_123")


def test_an_unreachable_klaviyo_is_reported_as_unreachable(world: World) -> None:
    runtime = replace(world.runtime, klaviyo_url=f"http://127.0.0.1:{closed_port()}")

    with pytest.raises(ServiceError, match="unreachable"):
        Services(runtime).connect_account(world.acme.private_key)


def test_recheck_reports_a_key_revoked_since_it_was_connected(world: World) -> None:
    account = world.services.connect_account(world.acme.private_key)
    world.acme.revoked = True

    checked = world.services.recheck_account(account.id)

    assert checked.status == "unauthorised"
    assert "401" in checked.status_reason
    assert world.acme.private_key not in checked.status_reason
    assert audit_actions()[-1] == ("test-operator", "account.recheck")


def test_recheck_reports_klaviyo_unreachable(world: World) -> None:
    account = world.services.connect_account(world.acme.private_key)
    offline = replace(world.runtime, klaviyo_url=f"http://127.0.0.1:{closed_port()}")

    checked = Services(offline).recheck_account(account.id)

    assert checked.status == "unreachable"
    assert checked.status_reason


def test_disconnecting_an_account_removes_its_data_connections(world: World) -> None:
    connection = world.connect()
    world.services.sync_now(connection.id)
    account_id = connection.account_id

    removed = world.services.disconnect_account(account_id)

    assert removed == 1
    assert Account.select().count() == 0
    assert DataConnection.select().count() == 0
    assert SyncRun.get().connection_name == connection.name  # history stays
    assert audit_actions()[-1] == ("test-operator", "account.disconnect")


def test_sources_list_the_accounts_lists_and_segments(world: World) -> None:
    account = world.services.connect_account(world.acme.private_key)

    sources = world.services.sources(account.id)

    assert {(s.type, s.name) for s in sources} >= {
        ("list", "Newsletter"),
        ("segment", "Lapsed 90 days"),
        ("segment", "Test customers"),
    }


# -- data connections -------------------------------------------------------------


def test_a_new_connection_gets_a_mapping_suggested_from_field_names(
    world: World,
) -> None:
    connection = world.connect("Spring Sale A5 Postcard", name="Spring offer")

    mapping = world.services.mapping(connection.id)

    assert connection.name == "Spring offer"
    assert connection.campaign_name == "Spring Sale A5 Postcard"
    assert mapping["firstname"] == "first_name"
    assert mapping["surname"] == "last_name"
    assert mapping["email"] == "email"
    assert mapping["tier"] == "properties.tier"  # from the members' properties
    assert "offer_code" not in mapping  # nothing fits: left to the operator
    assert audit_actions()[-1] == ("test-operator", "connection.create")


def test_pairing_the_same_segment_and_campaign_twice_is_refused(world: World) -> None:
    world.connect()

    with pytest.raises(ServiceError, match="already paired"):
        world.connect()


def test_a_source_the_account_does_not_have_is_refused(world: World) -> None:
    account = world.services.connect_account(world.acme.private_key)

    with pytest.raises(ServiceError, match="has no segment"):
        world.services.create_connection(
            account.id, "segment", "nope", world.campaign_id()
        )


def test_mapping_is_refused_while_a_required_field_is_unmapped(world: World) -> None:
    campaign = world.sim.zappost.campaign_named("Welcome Letter")
    world.sim.zappost.add_campaign(
        replace(
            campaign,
            fields=[field_definition("store", "Nearest store", required=True)],
        )
    )
    connection = world.connect()
    before = world.services.mapping(connection.id)

    with pytest.raises(ServiceError, match="required campaign field first: store"):
        world.services.update_mapping(connection.id, {"firstname": "first_name"})
    with pytest.raises(ServiceError, match="unknown profile path"):
        world.services.update_mapping(
            connection.id, {"store": "properties.store", "email": "password"}
        )

    assert world.services.mapping(connection.id) == before
    saved = world.services.update_mapping(
        connection.id, {"store": "properties.favourite_category"}
    )
    assert saved == {"store": "properties.favourite_category"}
    assert FieldMapping.select().count() == 1
    assert audit_actions()[-1] == ("test-operator", "connection.map")


def test_pause_and_resume_are_audited_with_their_actor(world: World) -> None:
    connection = world.connect()

    world.services.pause(connection.id)
    with pytest.raises(ServiceError, match="already paused"):
        world.services.pause(connection.id)
    with pytest.raises(SyncRefused, match="resume it first"):
        world.services.sync_now(connection.id)
    resumed = world.services.resume(connection.id)

    assert resumed.status == "active"
    assert resumed.next_sync_at is not None
    pause, resume = AuditEntry.select().where(
        AuditEntry.action << ("connection.pause", "connection.resume")
    )
    assert (pause.action, pause.before, pause.after) == (
        "connection.pause",
        {"status": "active"},
        {"status": "paused"},
    )
    assert (resume.actor, resume.action) == ("test-operator", "connection.resume")


def test_removing_a_connection_keeps_its_sync_history(world: World) -> None:
    connection = world.connect()
    run = world.services.sync_now(connection.id)

    world.services.remove(connection.id)

    assert DataConnection.select().count() == 0
    kept = SyncRun.get_by_id(run.id)
    assert kept.connection_id is None
    assert (kept.connection_name, kept.imported) == (connection.name, 30)
    assert audit_actions()[-1] == ("test-operator", "connection.remove")


def test_a_connection_being_synced_elsewhere_cannot_be_removed(world: World) -> None:
    connection = world.connect()
    host = world.runtime.owner.split(":")[0]
    DataConnection.update(
        lease_owner=f"{host}:1:elsewhere",
        lease_expires_at=utcnow() + timedelta(minutes=1),
    ).where(DataConnection.id == connection.id).execute()

    with pytest.raises(ServiceError, match="being synced right now"):
        world.services.remove(connection.id)

    assert DataConnection.select().count() == 1


def test_removing_first_settles_an_unconfirmed_submission(world: World) -> None:
    connection = world.connect()
    world.sim.faults.add(COMMITTED_SERVICE, "submit", "html403", 1)
    unconfirmed = world.services.sync_now(connection.id)
    assert (unconfirmed.status, unconfirmed.phase) == ("failed", "submitting")

    world.services.remove(connection.id)

    settled = SyncRun.get_by_id(unconfirmed.id)
    assert (settled.status, settled.phase, settled.imported) == ("partial", "done", 30)
    assert settled.submission_id == world.sim.zappost.submissions()[0].id


def test_sync_now_is_audited_and_takes_only_known_triggers(world: World) -> None:
    connection = world.connect()

    with pytest.raises(ServiceError, match="manual or scheduled"):
        world.services.sync_now(connection.id, trigger="cron")
    world.services.sync_now(connection.id)

    assert audit_actions()[-1] == ("test-operator", "connection.sync")


# -- recovery at start-up --------------------------------------------------------------


def test_start_up_recovery_ends_a_run_a_dead_process_left_fetching(
    world: World,
) -> None:
    connection = world.connect()
    dead = "somewhere:999999:gone"
    run = SyncRun.create(
        connection=connection,
        connection_name=connection.name,
        reference="zaptui-dead-run",
        trigger="scheduled",
        owner=dead,
        fetched=1,
    )
    ProfileOutcome.create(
        run=run, profile_id=world.members.mailable[0], outcome="staged", record={}
    )
    DataConnection.update(
        lease_owner=dead, lease_expires_at=utcnow() - timedelta(seconds=1)
    ).where(DataConnection.id == connection.id).execute()

    recovered = world.services.recover()

    assert [r.id for r in recovered] == [run.id]
    ended = SyncRun.get_by_id(run.id)
    assert (ended.status, ended.phase) == ("interrupted", "done")
    assert "picked up by the next sync" in ended.error
    assert ProfileOutcome.get().outcome == "not_sent"
    assert world.mailed() == []
    assert world.services.sync_now(connection.id).imported == 30


def test_start_up_recovery_confirms_an_unconfirmed_submission(world: World) -> None:
    connection = world.connect()
    world.sim.faults.add(COMMITTED_SERVICE, "submit", "malformed", 1)
    unconfirmed = world.services.sync_now(connection.id)

    recovered = world.services.recover()

    assert [r.id for r in recovered] == [unconfirmed.id]
    assert recovered[0].status == "partial"
    assert "confirmed submission" in recovered[0].error
    assert len(world.sim.zappost.submissions()) == 1
    assert sorted(world.mailed()) == sorted(world.members.mailable)


# -- settings and the actor ---------------------------------------------------------


def test_settings_changes_are_validated_and_audited(world: World) -> None:
    world.services.set_setting("sync_frequency_hours", 6)
    with pytest.raises(settings.SettingError, match="1, 6, 12 or 24"):
        world.services.set_setting("sync_frequency_hours", 5)

    entry = AuditEntry.get(AuditEntry.action == "settings.sync_frequency_hours")
    assert (entry.actor, entry.before, entry.after) == (
        "test-operator",
        {"value": 24},
        {"value": 6},
    )
    assert settings.get("sync_frequency_hours") == 6


def test_zappost_password_is_stored_encrypted_and_never_audited(world: World) -> None:
    world.services.save_zap_credentials("key-123", "s3cret-password", "Acme Mail")

    stored = " ".join(str(row.value) for row in Setting.select())
    audited = " ".join(f"{e.before} {e.after}" for e in AuditEntry.select())
    assert "s3cret-password" not in stored
    assert "s3cret-password" not in audited
    runtime = replace(world.runtime, zap_api_key=None, zap_api_password=None)
    assert runtime.zap_credentials() == ("key-123", "s3cret-password")


def test_actor_is_the_ssh_login_when_served_over_ssh() -> None:
    over_ssh = {"SSH_CONNECTION": "203.0.113.9 52100 10.0.0.2 22", "USER": "alice"}

    assert default_actor(over_ssh) == "alice (ssh from 203.0.113.9)"
    assert default_actor({**over_ssh, "ZAPTUI_ACTOR": "bob"}) == "bob"
    assert default_actor({"USER": "carol"}) not in ("", "carol (ssh from )")
