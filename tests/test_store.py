"""The store: SQLite set-up, migrations, secrets at rest, PostgreSQL."""

from __future__ import annotations

import sqlite3
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from store_support import stored_account, stored_connection

from zaptui.runtime import Runtime
from zaptui.services import Services
from zaptui.store.db import DatabaseUrlError, connect, open_database
from zaptui.store.migrations import LATEST_VERSION, current_version, migrate
from zaptui.store.models import (
    Account,
    AlertDelivery,
    DataConnection,
    ProfileOutcome,
    ReportedFailure,
    SchemaVersion,
    Setting,
    SyncRun,
)
from zaptui.store.secrets import SecretBox, SecretKeyError, new_key

V1_SCHEMA = Path(__file__).parent / "data" / "schema_v1.sql"


def _path(url: str) -> Path:
    return Path(url[len("sqlite:///") :])


def test_sqlite_file_is_private_and_in_wal_mode(db, db_url):
    mode = stat.S_IMODE(_path(db_url).stat().st_mode)
    assert mode == 0o600
    assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] == 30_000


def test_new_database_is_at_latest_schema(db):
    assert current_version(db) == LATEST_VERSION


def test_write_transactions_take_the_lock_up_front(db, db_url):
    other = sqlite3.connect(_path(db_url), timeout=0.05)
    with db.atomic():
        Setting.create(key="probe", value=1)
        # A second writer cannot even begin while the first holds the lock.
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")
    other.rollback()
    other.close()


def test_concurrent_writers_all_land(db):
    def write(prefix: str) -> None:
        for i in range(50):
            with db.atomic():
                Setting.create(key=f"{prefix}-{i}", value=i)

    threads = [threading.Thread(target=write, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Setting.select().count() == 200


def test_first_schema_database_migrates_without_losing_data(tmp_path):
    path = tmp_path / "old.db"
    raw = sqlite3.connect(path)
    raw.executescript(V1_SCHEMA.read_text())
    raw.execute("INSERT INTO schema_version VALUES (1, '2026-01-01 00:00:00')")
    raw.execute(
        "INSERT INTO account (klaviyo_id, name, api_key_encrypted, key_hint, status,"
        " status_reason, connected_at) VALUES ('K1', 'Acme', 'x', 'abcd', 'connected',"
        " '', '2026-01-01 00:00:00')"
    )
    raw.execute(
        "INSERT INTO data_connection (account_id, source_type, source_id, source_name,"
        " name, campaign_id, campaign_name, status, new_joiners_only, created_at,"
        " last_error) VALUES (1, 'segment', 'S1', 'VIP', 'VIP postcards', 'C1',"
        " 'Spring', 'paused', 0, '2026-01-01 00:00:00', '')"
    )
    raw.commit()
    raw.close()

    db = open_database(f"sqlite:///{path}")

    assert current_version(db) == LATEST_VERSION
    connection = DataConnection.get()
    assert (connection.name, connection.status, connection.failing) == (
        "VIP postcards",
        "paused",
        False,
    )
    assert connection.account.name == "Acme"
    assert SyncRun.select().count() == 0
    paging = {
        tuple(index.columns)
        for table in ("sync_run", "api_log_entry")
        for index in db.get_indexes(table)
    }
    assert {("started_at", "id"), ("at", "id"), ("service", "at", "id")} <= paging
    migrated = _indexes(db)
    db.close()

    fresh = open_database(f"sqlite:///{tmp_path / 'new.db'}")
    assert migrated == _indexes(fresh)
    fresh.close()


def test_the_hold_back_indexes_exist_while_the_rule_is_on(db):
    services = Services(Runtime(actor="test"))

    def ledger_indexes() -> set[tuple[str, ...]]:
        return {tuple(index.columns) for index in db.get_indexes("submitted_profile")}

    assert ledger_indexes() == {("connection_id", "profile_id", "joined_group_at")}
    services.set_setting("hold_back_days", 30)
    assert {("profile_id", "submitted_at"), ("email",)} <= ledger_indexes()
    services.set_setting("hold_back_days", 0)
    assert ledger_indexes() == {("connection_id", "profile_id", "joined_group_at")}


def _vip_postcards() -> DataConnection:
    """Acme's "VIP postcards" connection, in whichever database is open."""
    return stored_connection(
        stored_account(), "VIP", source_id="S1", name="VIP postcards"
    )


def test_version_7_remembers_the_failures_outcomes_hold(db):
    connection = _vip_postcards()
    runs = [
        SyncRun.create(connection=connection, reference=f"r{n}", trigger="manual")
        for n in (1, 2)
    ]
    for run, reason in zip(
        runs, ("postcode is missing", "town is missing"), strict=True
    ):
        ProfileOutcome.create(
            run=run,
            profile_id="P1",
            joined_group_at=datetime(2026, 11, 1, tzinfo=UTC),
            outcome="failed",
            reason=reason,
        )
    ProfileOutcome.create(run=runs[0], profile_id="P2", outcome="imported")
    ReportedFailure.delete().execute()
    SchemaVersion.delete().where(SchemaVersion.version >= 7).execute()

    migrate(db)

    remembered = [
        (row.profile_id, row.run_id, row.reason) for row in ReportedFailure.select()
    ]
    assert remembered == [("P1", runs[1].id, "town is missing")]


def _indexes(db) -> dict[str, set[tuple[str, ...]]]:
    """Each table's indexes as their column lists."""
    return {
        table: {tuple(index.columns) for index in db.get_indexes(table)}
        for table in db.get_tables()
    }


def test_opening_twice_is_harmless(db_url):
    open_database(db_url).close()
    db = open_database(db_url)
    assert current_version(db) == LATEST_VERSION
    db.close()


def test_bad_database_url_says_what_to_use():
    with pytest.raises(DatabaseUrlError, match="sqlite:///PATH"):
        connect("mysql://somewhere/db")


def test_secrets_are_encrypted_at_rest(db, db_url, tmp_path):
    box = SecretBox()
    key = "pk_" + "a1b2c3d4" * 4
    Account.create(klaviyo_id="K1", name="Acme", api_key_encrypted=box.encrypt(key))
    db.close()
    assert key.encode() not in _path(db_url).read_bytes()
    for leftover in _path(db_url).parent.glob("zaptui.db*"):
        assert key.encode() not in leftover.read_bytes()
    stored = Account.get().api_key_encrypted
    assert box.decrypt(stored) == key
    key_file = tmp_path / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_a_different_key_cannot_read_secrets():
    token = SecretBox().encrypt("pk_secret_value_1234")
    # A second box reads the same key file, so it can decrypt.
    assert SecretBox().decrypt(token) == "pk_secret_value_1234"
    with pytest.raises(SecretKeyError, match="ZAPTUI_SECRET_KEY"):
        SecretBox(new_key()).decrypt(token)


def test_malformed_key_is_refused_clearly():
    with pytest.raises(SecretKeyError, match="not a valid"):
        SecretBox("not-a-key")


@pytest.mark.postgres
def test_postgres_store_round_trip(pg_db, pg_url):
    assert current_version(pg_db) == LATEST_VERSION
    _vip_postcards()
    assert DataConnection.get().account.klaviyo_id == "K1"
    assert DataConnection.get().created_at.tzinfo is not None
    # Opening again migrates nothing and keeps the rows.
    open_database(pg_url)
    assert DataConnection.select().count() == 1


@pytest.mark.postgres
def test_postgres_migrates_a_version_7_database_to_the_alert_outbox(pg_db):
    pg_db.drop_tables([AlertDelivery])
    SchemaVersion.delete().where(SchemaVersion.version == 8).execute()

    assert migrate(pg_db) == LATEST_VERSION
    connection = _vip_postcards()
    AlertDelivery.create(connection=connection, payload={"event": "alert_failing"})
    connection.delete_instance()
    # The alert outlives its connection, which its payload names.
    assert AlertDelivery.get().connection_id is None
