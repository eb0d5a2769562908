"""Versioned schema migrations.

A new database is created at the latest schema and stamped with every version.
An existing database gets the migrations it has not yet had, in order, each in
its own transaction; none of them ever drops data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import peewee as pw
from playhouse.migrate import PostgresqlMigrator, SchemaMigrator, SqliteMigrator
from playhouse.migrate import migrate as apply_operations

from zaptui.clock import utcnow
from zaptui.store.models import (
    ALL_MODELS,
    AlertDelivery,
    ApiLogEntry,
    ConnectionAlert,
    DataConnection,
    ReportedFailure,
    SchedulerHeartbeat,
    SchedulerMark,
    SchemaVersion,
    Setting,
    SyncRun,
    set_hold_back_indexes,
)

log = logging.getLogger(__name__)


def _v2_failure_tracking(migrator: SchemaMigrator) -> None:
    """Version 2: remember failing connections and failed address write-backs."""
    apply_operations(
        migrator.add_column(
            DataConnection._meta.table_name, "failing", DataConnection.failing
        ),
        migrator.add_column(
            SyncRun._meta.table_name,
            "address_updates_failed",
            SyncRun.address_updates_failed,
        ),
    )


def _v3_scheduler_tables(migrator: SchemaMigrator) -> None:
    """Version 3: scheduler heartbeats, shared chores and alert states."""
    migrator.database.create_tables(
        [SchedulerHeartbeat, SchedulerMark, ConnectionAlert], safe=True
    )


def _v4_paging_indexes(migrator: SchemaMigrator) -> None:
    """Version 4: indexes that serve the history's and the log's keyset paging."""
    apply_operations(
        migrator.add_index(SyncRun._meta.table_name, ("started_at", "id")),
        migrator.add_index(ApiLogEntry._meta.table_name, ("at", "id")),
        migrator.add_index(ApiLogEntry._meta.table_name, ("service", "at", "id")),
    )


# Indexes every staged profile, ledger row or API call had to write without any
# query needing them: each is covered by a wider index or never searched.
_V5_DROPPED = {
    "profile_outcome": ("outcome", "created_at"),
    "submitted_profile": ("connection_id", "run_id", "submitted_at"),
    "api_log_entry": ("at",),
}


def _v5_fewer_write_indexes(migrator: SchemaMigrator) -> None:
    """Version 5: drop the indexes a sync wrote for every profile in vain.

    The hold-back rule's ledger indexes stay if the rule is on.
    """
    database = migrator.database
    for table, columns in _V5_DROPPED.items():
        for column in columns:
            database.execute_sql(f'DROP INDEX IF EXISTS "{table}_{column}"')
    stored = (
        Setting.select(Setting.value).where(Setting.key == "hold_back_days").scalar()
    )
    set_hold_back_indexes(database, bool(stored))


def _v6_full_reads(migrator: SchemaMigrator) -> None:
    """Version 6: when each connection last read its whole list or segment."""
    apply_operations(
        migrator.add_column(
            DataConnection._meta.table_name,
            "full_read_at",
            DataConnection.full_read_at,
        ),
        migrator.add_column(SyncRun._meta.table_name, "full_read", SyncRun.full_read),
    )


def _v7_reported_failures(migrator: SchemaMigrator) -> None:
    """Version 7: the memberships reported as failed, from the outcomes kept.

    Newest first, so a membership failed by several runs keeps its latest
    reason.
    """
    database = migrator.database
    database.create_tables([ReportedFailure], safe=True)
    database.execute_sql(
        'INSERT INTO "reported_failure" '
        '("connection_id", "profile_id", "joined_group_at", "run_id", "reason") '
        'SELECT r."connection_id", o."profile_id", o."joined_group_at", o."run_id", '
        'o."reason" FROM "profile_outcome" o JOIN "sync_run" r ON r."id" = o."run_id" '
        'WHERE o."outcome" = \'failed\' AND r."connection_id" IS NOT NULL '
        'ORDER BY o."id" DESC ON CONFLICT DO NOTHING'
    )


def _v8_alert_outbox(migrator: SchemaMigrator) -> None:
    """Version 8: the outbox of alerts on their way to the alert webhook."""
    migrator.database.create_tables([AlertDelivery], safe=True)


MIGRATIONS: list[tuple[int, Callable[[SchemaMigrator], None]]] = [
    (2, _v2_failure_tracking),
    (3, _v3_scheduler_tables),
    (4, _v4_paging_indexes),
    (5, _v5_fewer_write_indexes),
    (6, _v6_full_reads),
    (7, _v7_reported_failures),
    (8, _v8_alert_outbox),
]
LATEST_VERSION = max(version for version, _ in MIGRATIONS)


def _migrator(db: pw.Database) -> SchemaMigrator:
    if isinstance(db, pw.PostgresqlDatabase):
        return PostgresqlMigrator(db)
    return SqliteMigrator(db)


def current_version(db: pw.Database) -> int:
    """The schema version of a database; 0 when it has no tables yet."""
    if not db.table_exists(SchemaVersion._meta.table_name):
        return 0
    row = SchemaVersion.select(pw.fn.MAX(SchemaVersion.version)).scalar()
    return int(row or 0)


def migrate(db: pw.Database) -> int:
    """Bring a database to the latest schema; returns the version it is now at."""
    with db.atomic():
        version = current_version(db)
        if version == 0:
            db.create_tables(ALL_MODELS, safe=True)
            SchemaVersion.insert_many(
                [
                    {"version": v, "applied_at": utcnow()}
                    for v in range(1, LATEST_VERSION + 1)
                ]
            ).on_conflict_ignore().execute()
            return LATEST_VERSION
    migrator = _migrator(db)
    for target, step in MIGRATIONS:
        if target <= version:
            continue
        with db.atomic():
            if current_version(db) >= target:  # another process got here first
                continue
            log.info("migrating database schema to version %d", target)
            step(migrator)
            SchemaVersion.create(version=target)
        version = target
    return version
