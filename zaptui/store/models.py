"""The peewee models: everything zaptui remembers lives in these tables."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import peewee as pw

from zaptui.clock import as_utc, utcnow

database_proxy = pw.DatabaseProxy()


class UtcDateTimeField(pw.DateTimeField):
    """A timestamp stored as naive UTC and read back as an aware UTC datetime."""

    def db_value(self, value: Any) -> Any:
        if isinstance(value, datetime):
            value = as_utc(value).replace(tzinfo=None)  # type: ignore[union-attr]
        return super().db_value(value)

    def python_value(self, value: Any) -> Any:
        value = super().python_value(value)
        if isinstance(value, datetime):
            return as_utc(value)
        return value


class JsonField(pw.TextField):
    """A JSON document kept as text, so SQLite and PostgreSQL agree."""

    def db_value(self, value: Any) -> Any:
        if value is None:
            return None
        return json.dumps(value, separators=(",", ":"), sort_keys=True)

    def python_value(self, value: Any) -> Any:
        if value is None:
            return None
        return json.loads(value)


class BaseModel(pw.Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False


class SchemaVersion(BaseModel):
    """One row per applied migration."""

    version = pw.IntegerField(primary_key=True)
    applied_at = UtcDateTimeField(default=utcnow)


class Account(BaseModel):
    """A Klaviyo account paired with this ZAP~POST account."""

    klaviyo_id = pw.CharField(unique=True)
    name = pw.CharField()
    api_key_encrypted = pw.TextField()
    key_hint = pw.CharField(default="")  # last four characters, for display
    status = pw.CharField(default="connected")
    status_reason = pw.TextField(default="")
    connected_at = UtcDateTimeField(default=utcnow)
    checked_at = UtcDateTimeField(null=True)
    # The account-wide hold: one process syncs an account at a time.
    lease_owner = pw.CharField(null=True)
    lease_expires_at = UtcDateTimeField(null=True)


class DataConnection(BaseModel):
    """A Klaviyo list or segment paired with a ZAP~POST campaign."""

    account = pw.ForeignKeyField(Account, backref="connections", on_delete="CASCADE")
    source_type = pw.CharField()  # "list" or "segment"
    source_id = pw.CharField()
    source_name = pw.CharField()
    name = pw.CharField()
    campaign_id = pw.CharField()
    campaign_name = pw.CharField(default="")
    status = pw.CharField(default="active")  # active, paused, error
    new_joiners_only = pw.BooleanField(default=False)
    # Highest joined_group_at already ingested; the next fetch starts a
    # look-back window before it because segments are computed late.
    watermark = UtcDateTimeField(null=True)
    # When a sync last read the whole list or segment, which catches members
    # Klaviyo added later than the look-back window allows for.
    full_read_at = UtcDateTimeField(null=True)
    created_at = UtcDateTimeField(default=utcnow)
    resumed_at = UtcDateTimeField(null=True)
    last_sync_at = UtcDateTimeField(null=True)
    last_submission_at = UtcDateTimeField(null=True)
    next_sync_at = UtcDateTimeField(null=True)
    last_error = pw.TextField(default="")
    failing = pw.BooleanField(default=False)
    lease_owner = pw.CharField(null=True)
    lease_expires_at = UtcDateTimeField(null=True)

    class Meta:
        indexes = ((("account", "source_type", "source_id", "campaign_id"), True),)


class FieldMapping(BaseModel):
    """Which profile field fills which campaign field for one data connection."""

    connection = pw.ForeignKeyField(
        DataConnection, backref="mappings", on_delete="CASCADE"
    )
    campaign_field = pw.CharField()
    profile_field = pw.CharField()  # e.g. "first_name", "location.zip", ""

    class Meta:
        indexes = ((("connection", "campaign_field"), True),)


class SyncRun(BaseModel):
    """One ingestion of a data connection's members into one submission."""

    connection = pw.ForeignKeyField(
        DataConnection, backref="runs", null=True, on_delete="SET NULL"
    )
    # Kept on the run so the history survives the connection's removal.
    connection_name = pw.CharField(default="")
    source_name = pw.CharField(default="")
    source_type = pw.CharField(default="")
    campaign_name = pw.CharField(default="")
    reference = pw.CharField(unique=True)  # ours, carried by every record sent
    trigger = pw.CharField()  # scheduled, manual
    # running -> submitting -> succeeded | partial | failed; interrupted if lost
    status = pw.CharField(default="running", index=True)
    phase = pw.CharField(default="fetching")
    owner = pw.CharField(default="")
    started_at = UtcDateTimeField(default=utcnow, index=True)
    finished_at = UtcDateTimeField(null=True)
    heartbeat_at = UtcDateTimeField(null=True)
    fetched = pw.IntegerField(default=0)
    imported = pw.IntegerField(default=0)
    failed = pw.IntegerField(default=0)
    skipped_duplicate = pw.IntegerField(default=0)
    pages = pw.IntegerField(default=0)
    watermark_to = UtcDateTimeField(null=True)
    full_read = pw.BooleanField(default=False)  # read the whole list or segment
    error = pw.TextField(default="")
    submission_id = pw.CharField(null=True)
    submission_url = pw.CharField(null=True)
    rejected_records = JsonField(null=True)
    address_updates_failed = pw.IntegerField(default=0)

    class Meta:
        # The history pages newest first by (started_at, id): keyset paging
        # needs both in one index, on PostgreSQL as on SQLite.
        indexes = ((("started_at", "id"), False),)


class ProfileOutcome(BaseModel):
    """What happened to one profile in one sync run.

    Rows are written as "staged" while fetching; the record sent to ZAP~POST is
    kept here so an interrupted run can resend exactly the same records.
    """

    run = pw.ForeignKeyField(SyncRun, backref="outcomes", on_delete="CASCADE")
    profile_id = pw.CharField()
    joined_group_at = UtcDateTimeField(null=True)
    display_name = pw.CharField(default="")
    email = pw.CharField(default="")
    # staged, imported, failed, duplicate, held_back, rejected. Not indexed:
    # a run's rows are found by run, and an index here would be rewritten for
    # every profile when its run's staged rows become imported.
    outcome = pw.CharField()
    reason = pw.TextField(default="")
    record = JsonField(null=True)
    correction = JsonField(null=True)  # original and corrected address
    created_at = UtcDateTimeField(default=utcnow)

    class Meta:
        indexes = ((("run", "profile_id"), True),)


class Submission(BaseModel):
    """A ZAP~POST submission made by a sync run."""

    run = pw.ForeignKeyField(SyncRun, backref="submissions", on_delete="CASCADE")
    reference = pw.CharField(unique=True)
    campaign_id = pw.CharField()
    zap_submission_id = pw.CharField(null=True)
    record_count = pw.IntegerField(default=0)
    accepted = pw.IntegerField(default=0)
    rejected = pw.IntegerField(default=0)
    created_at = UtcDateTimeField(default=utcnow)


class SubmittedProfile(BaseModel):
    """The de-duplication ledger: a profile mailed for one membership of a list
    or segment. Written in the same transaction as the run's outcome."""

    # Every index here is written for every profile mailed. The unique one
    # serves de-duplication (and the connection's cascade); the hold-back rule's
    # two exist only while the rule is on (`set_hold_back_indexes`). Runs are
    # never deleted.
    connection = pw.ForeignKeyField(
        DataConnection, backref="ledger", on_delete="CASCADE", index=False
    )
    profile_id = pw.CharField()
    joined_group_at = UtcDateTimeField(null=True)
    email = pw.CharField(default="")
    run = pw.ForeignKeyField(SyncRun, null=True, on_delete="SET NULL", index=False)
    submitted_at = UtcDateTimeField(default=utcnow)

    class Meta:
        indexes = ((("connection", "profile_id", "joined_group_at"), True),)


class ReportedFailure(BaseModel):
    """A membership a run reported as failed, with the reason it gave.

    A later run that fetches the membership again (the look-back window, the
    daily full read) and fails it for the same reason skips it quietly rather
    than reporting it again. Kept, like the ledger, when outcomes are pruned.
    """

    connection = pw.ForeignKeyField(
        DataConnection, backref="reported_failures", on_delete="CASCADE", index=False
    )
    profile_id = pw.CharField()
    joined_group_at = UtcDateTimeField(null=True)
    run = pw.ForeignKeyField(SyncRun, null=True, on_delete="SET NULL", index=False)
    reason = pw.TextField(default="")

    class Meta:
        indexes = ((("connection", "profile_id", "joined_group_at"), True),)


# The ledger's indexes for "mailed by any connection within N days": by profile
# id and by email. Together they cost a sync about 10 µs per profile mailed,
# so they are kept only while the rule is on; without them its look-ups would
# still be right, only slow.
_HOLD_BACK_INDEXES = {
    "submitted_profile_profile_id_submitted_at": ("profile_id", "submitted_at"),
    "submitted_profile_email": ("email",),
}


def set_hold_back_indexes(database: pw.Database, on: bool) -> None:
    """Create the hold-back rule's ledger indexes, or drop them."""
    table = SubmittedProfile._meta.table_name
    for name, columns in _HOLD_BACK_INDEXES.items():
        if on:
            listed = ", ".join(f'"{column}"' for column in columns)
            database.execute_sql(
                f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" ({listed})'
            )
        else:
            database.execute_sql(f'DROP INDEX IF EXISTS "{name}"')


class ApiLogEntry(BaseModel):
    """One HTTP call to Klaviyo or ZAP~POST, secrets already redacted."""

    service = pw.CharField()  # klaviyo, zappost
    at = UtcDateTimeField(default=utcnow)  # indexed with id, below
    method = pw.CharField()
    url = pw.TextField()
    status = pw.IntegerField(null=True)
    duration_ms = pw.FloatField(default=0)
    request_headers = JsonField(null=True)
    request_body = pw.TextField(null=True)
    response_headers = JsonField(null=True)
    response_body = pw.TextField(null=True)
    error = pw.TextField(default="")

    class Meta:
        # The Logs tab pages newest first, for every service or for one.
        indexes = ((("at", "id"), False), (("service", "at", "id"), False))


class Setting(BaseModel):
    """A key-value setting (values are JSON)."""

    key = pw.CharField(primary_key=True)
    value = JsonField()


class AuditEntry(BaseModel):
    """An operator action: who did what, when, with the state before and after."""

    at = UtcDateTimeField(default=utcnow, index=True)
    actor = pw.CharField()
    action = pw.CharField()
    subject = pw.CharField(default="")
    before = JsonField(null=True)
    after = JsonField(null=True)


class SchedulerHeartbeat(BaseModel):
    """One row per running scheduler process, renewed while it runs."""

    owner = pw.CharField(primary_key=True)  # Runtime.owner: host:pid:random
    mode = pw.CharField()  # console, headless
    started_at = UtcDateTimeField(default=utcnow)
    beat_at = UtcDateTimeField(default=utcnow, index=True)


class SchedulerMark(BaseModel):
    """When a shared scheduler chore (pruning) last ran, and by which process."""

    name = pw.CharField(primary_key=True)
    at = UtcDateTimeField()
    owner = pw.CharField(default="")


class ConnectionAlert(BaseModel):
    """The failing state last alerted for a data connection, so each change of
    state is alerted once, whichever process notices it."""

    connection = pw.ForeignKeyField(
        DataConnection, backref="alert", unique=True, on_delete="CASCADE"
    )
    failing = pw.BooleanField(default=False)
    changed_at = UtcDateTimeField(default=utcnow)


class AlertDelivery(BaseModel):
    """An alert on its way to the alert webhook: the outbox.

    Written in the transaction that decides the alert is raised, so an alert
    is delivered even when the process raising it ends before sending it;
    retried with backoff until delivered or given up. Kept afterwards, with
    the connection's names in the payload, so a removed connection's alerts
    still read whole.
    """

    connection = pw.ForeignKeyField(
        DataConnection, backref="alert_deliveries", null=True, on_delete="SET NULL"
    )
    payload = JsonField()  # what the webhook receives
    status = pw.CharField(default="pending")  # pending, delivered, given_up
    created_at = UtcDateTimeField(default=utcnow)
    attempts = pw.IntegerField(default=0)
    # The next try; while an attempt is in flight, when it counts as lost.
    next_attempt_at = UtcDateTimeField(default=utcnow)
    last_error = pw.TextField(default="")  # never the URL: it may hold a token
    delivered_at = UtcDateTimeField(null=True)
    given_up_at = UtcDateTimeField(null=True)

    class Meta:
        # Each pass looks for the pending deliveries that are due.
        indexes = ((("status", "next_attempt_at"), False),)


ALL_MODELS: list[type[BaseModel]] = [
    SchemaVersion,
    Account,
    DataConnection,
    FieldMapping,
    SyncRun,
    ProfileOutcome,
    Submission,
    SubmittedProfile,
    ReportedFailure,
    ApiLogEntry,
    Setting,
    AuditEntry,
    SchedulerHeartbeat,
    SchedulerMark,
    ConnectionAlert,
    AlertDelivery,
]
