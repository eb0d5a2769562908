"""Alerts when a data connection starts failing or recovers, once per change.

The engine sets `DataConnection.failing` after every run. The state last
alerted is kept in `ConnectionAlert`; a process that sees the two differ moves
the alerted state with a compare-and-set, and only the process whose update
lands raises the alert. So each change is alerted once, whichever process (or a
manual sync) caused it and however many schedulers are watching.

When an alert webhook is set, the same transaction puts the alert in the
outbox (`AlertDelivery`), so it is delivered even if the process raising it
ends before sending it. `deliver_pending` sends what is due, oldest first and
in order for each connection, and retries a failure with backoff (1 minute,
doubling up to an hour) for as long as the alert is under 24 hours old; then
the delivery is given up, with an ERROR log line, and kept. Each attempt is
claimed with a compare-and-set on its row, so one process makes it however
many are delivering. An attempt goes to the webhook as set when it is made;
while none is set, the deliveries still pending are given up, since the
operator asked for no webhook.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import httpx
import peewee as pw

from zaptui import settings
from zaptui.apilog import redact_text
from zaptui.clock import format_utc, utcnow
from zaptui.store.models import (
    Account,
    AlertDelivery,
    ConnectionAlert,
    DataConnection,
    database_proxy,
)

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_SECONDS = 5.0
FIRST_RETRY = timedelta(minutes=1)  # then doubling after each failure
LONGEST_RETRY = timedelta(hours=1)
GIVE_UP_AFTER = timedelta(hours=24)  # from the alert; no attempt is made later
# How long an attempt holds its delivery: one left by a process that ended
# mid-attempt is tried again after this.
CLAIM_FOR = timedelta(minutes=2)
BATCH = 100  # the most attempts one pass makes
PENDING, DELIVERED, GIVEN_UP = "pending", "delivered", "given_up"
NO_WEBHOOK = "no alert webhook is set"


@dataclass(frozen=True)
class Alert:
    """A change of a data connection's state between failing and healthy."""

    kind: str  # "alert_failing" or "alert_recovered"
    connection_id: int
    connection_name: str
    account_name: str
    source_name: str
    campaign_name: str
    error: str
    at: datetime

    @property
    def message(self) -> str:
        """One sentence for the console and the log."""
        if self.kind == "alert_failing":
            return (
                f"Data connection {self.connection_id} ({self.connection_name}) "
                f"is failing: {redact_text(self.error) or 'its last sync failed'}"
            )
        return (
            f"Data connection {self.connection_id} ({self.connection_name}) has "
            "recovered: its last sync succeeded."
        )

    def payload(self) -> dict[str, Any]:
        """The JSON summary a webhook receives."""
        return {
            "event": self.kind,
            "state": "failing" if self.kind == "alert_failing" else "recovered",
            "message": self.message,
            "data_connection": {
                "id": self.connection_id,
                "name": self.connection_name,
                "connected_data": self.source_name,
                "campaign": self.campaign_name,
                "account": self.account_name,
            },
            "error": redact_text(self.error),
            "at": self.at.isoformat(),
        }


def observe(connection_ids: Iterable[int] | None = None) -> list[Alert]:
    """Alerts for connections whose failing state changed since last alerted.

    With `connection_ids`, only those connections are looked at. While an alert
    webhook is set, each alert is queued for it in the same transaction.
    """
    query = (
        DataConnection.select(DataConnection, Account, ConnectionAlert)
        .join(Account)
        .switch(DataConnection)
        .join(ConnectionAlert, pw.JOIN.LEFT_OUTER, attr="alert_state")
    )
    if connection_ids is not None:
        ids = list(connection_ids)
        if not ids:
            return []
        query = query.where(DataConnection.id << ids)
    webhook = bool(settings.get("alert_webhook_url"))
    alerts = []
    # Read every row before writing: a write while a SQLite read is still open
    # on this connection fails at once if another process wrote meanwhile.
    for connection in list(query):
        state = getattr(connection, "alert_state", None)
        alerted = bool(state.failing) if state is not None and state.id else False
        if bool(connection.failing) == alerted:
            continue
        alert = _alert(connection)
        if _move(connection.id, alerted, alert, queue=webhook):
            alerts.append(alert)
    return alerts


def _move(connection_id: int, before: bool, alert: Alert, *, queue: bool) -> bool:
    """Compare-and-set the alerted state; True if this process made the change.

    With `queue`, the alert's delivery is written in the same transaction, so a
    change is never marked alerted without it.
    """
    after = alert.kind == "alert_failing"
    now = utcnow()
    with database_proxy.atomic():
        moved = (
            ConnectionAlert.update(failing=after, changed_at=now)
            .where(
                (ConnectionAlert.connection == connection_id)
                & (ConnectionAlert.failing == before)
            )
            .execute()
        )
        if not moved:
            if (
                ConnectionAlert.select()
                .where(ConnectionAlert.connection == connection_id)
                .exists()
            ):
                return False  # another process moved it first
            try:
                with database_proxy.atomic():
                    ConnectionAlert.insert(
                        connection=connection_id, failing=after, changed_at=now
                    ).execute()
            except pw.IntegrityError:
                return False  # another process inserted it first
        if queue:
            AlertDelivery.insert(
                connection=connection_id,
                payload=alert.payload(),
                created_at=alert.at,
                next_attempt_at=alert.at,
            ).execute()
        return True


def _alert(connection: DataConnection) -> Alert:
    return Alert(
        kind="alert_failing" if connection.failing else "alert_recovered",
        connection_id=connection.id,
        connection_name=connection.name,
        account_name=connection.account.name,
        source_name=connection.source_name,
        campaign_name=connection.campaign_name,
        error=connection.last_error or "",
        at=utcnow(),
    )


@dataclass(frozen=True)
class Deliveries:
    """What one pass of `deliver_pending` did."""

    delivered: int = 0
    retrying: int = 0
    given_up: int = 0
    # The deliveries given up because the webhook never took them (not those
    # given up for want of a webhook): their connection ids and descriptions.
    undelivered: tuple[tuple[int | None, str], ...] = ()


def deliver_pending(
    connection_ids: Iterable[int] | None = None, *, now: datetime | None = None
) -> Deliveries:
    """Send the alerts due for delivery to the alert webhook, oldest first.

    With `connection_ids`, only those connections' alerts. `now` fixes the
    time the pass takes for every attempt (tests drive retries with it). A
    failure is logged and never raised: the webhook must not stop the syncs.
    """
    clock: Callable[[], datetime] = (lambda: now) if now is not None else utcnow
    ids = list(connection_ids) if connection_ids is not None else None
    try:
        return _deliver(ids, clock)
    except Exception as error:
        log.error("alert delivery failed: %s", redact_text(str(error)))
        log.debug("alert delivery failed", exc_info=True)
        return Deliveries()


def _deliver(ids: list[int] | None, clock: Callable[[], datetime]) -> Deliveries:
    url = settings.get("alert_webhook_url")
    if not url:
        return Deliveries(given_up=_give_up_unsent(ids, clock()))
    outcomes: Counter[str] = Counter()
    undelivered: list[tuple[int | None, str]] = []
    for _ in range(BATCH):
        delivery = _claim_next(ids, clock())
        if delivery is None:
            break
        error = _post(delivery.payload, url)
        settled = _settle(delivery, error, url, clock())
        outcomes[settled] += 1
        if settled == GIVEN_UP:
            connection = delivery.payload.get("data_connection", {})
            undelivered.append((connection.get("id"), describe(delivery)))
    return Deliveries(**outcomes, undelivered=tuple(undelivered))


def describe(delivery: AlertDelivery) -> str:
    """The delivery's alert as a sentence names it."""
    connection = delivery.payload.get("data_connection", {})
    return (
        f"the {delivery.payload.get('event', 'alert')} alert of data connection "
        f"{connection.get('id')} ({connection.get('name', '')})"
    )


def _claim_next(ids: list[int] | None, now: datetime) -> AlertDelivery | None:
    """Claim the oldest delivery that is due; None when none is free.

    A delivery waits while an older one of its connection is pending, so the
    webhook hears of a connection's changes in the order they happened.
    """
    older = AlertDelivery.alias()
    ahead = older.select().where(
        (older.connection == AlertDelivery.connection)
        & (older.status == PENDING)
        & (older.id < AlertDelivery.id)
    )
    query = AlertDelivery.select().where(
        (AlertDelivery.status == PENDING)
        & (AlertDelivery.next_attempt_at <= now)
        & ~pw.fn.EXISTS(ahead)
    )
    if ids is not None:
        query = query.where(AlertDelivery.connection << ids)
    # A few, in case other processes claim the first ones meanwhile.
    for delivery in list(query.order_by(AlertDelivery.id).limit(10)):
        if _claim(delivery, now):
            return delivery
    return None


def _claim(delivery: AlertDelivery, now: datetime) -> bool:
    """Count an attempt and hold the delivery while it lasts, if no other
    process has claimed it since it was read (compare-and-set on `attempts`)."""
    with database_proxy.atomic():
        claimed = (
            AlertDelivery.update(
                attempts=AlertDelivery.attempts + 1, next_attempt_at=now + CLAIM_FOR
            )
            .where(
                (AlertDelivery.id == delivery.id)
                & (AlertDelivery.status == PENDING)
                & (AlertDelivery.attempts == delivery.attempts)
            )
            .execute()
        )
    if claimed:
        delivery.attempts += 1
    return bool(claimed)


def _post(payload: dict[str, Any], url: str) -> str | None:
    """POST one alert; None when the webhook took it, else what went wrong
    (never the URL, which may hold a token)."""
    try:
        _hide_in_http_logs(url)
        response = httpx.post(url, json=payload, timeout=WEBHOOK_TIMEOUT_SECONDS)
    except Exception as error:  # any failure to send is a failed attempt
        return f"could not be reached: {type(error).__name__}"
    if not response.is_success:
        return f"answered {response.status_code}"
    return None


def retry_delay(attempts: int) -> timedelta:
    """How long after its failed `attempts`-th attempt a delivery is tried again."""
    return min(FIRST_RETRY * 2 ** min(attempts - 1, 16), LONGEST_RETRY)


def _settle(delivery: AlertDelivery, error: str | None, url: str, now: datetime) -> str:
    """Record how an attempt went: "delivered", "retrying" or "given_up"."""
    where = _where(url)
    connection = delivery.payload.get("data_connection", {})
    about = describe(delivery)
    this = (AlertDelivery.id == delivery.id) & (AlertDelivery.status == PENDING)
    if error is None:
        AlertDelivery.update(status=DELIVERED, delivered_at=now, last_error="").where(
            this
        ).execute()
        if delivery.attempts > 1:
            log.info(
                "alert webhook at %s took %s at attempt %d",
                where,
                about,
                delivery.attempts,
                extra=_fields("alert_delivered", connection),
            )
        return DELIVERED
    # A process whose claim ran out mid-attempt leaves the row to its taker.
    this &= AlertDelivery.attempts == delivery.attempts
    retry_at = now + retry_delay(delivery.attempts)
    if retry_at > delivery.created_at + GIVE_UP_AFTER:
        AlertDelivery.update(status=GIVEN_UP, given_up_at=now, last_error=error).where(
            this
        ).execute()
        log.error(
            "alert webhook at %s %s: gave up delivering %s after %d attempts",
            where,
            error,
            about,
            delivery.attempts,
            extra=_fields("alert_given_up", connection),
        )
        return GIVEN_UP
    AlertDelivery.update(next_attempt_at=retry_at, last_error=error).where(
        this
    ).execute()
    log.warning(
        "alert webhook at %s %s for %s (attempt %d); trying again at %s",
        where,
        error,
        about,
        delivery.attempts,
        format_utc(retry_at),
        extra=_fields("alert_retrying", connection),
    )
    return "retrying"


def _fields(event: str, connection: dict[str, Any]) -> dict[str, Any]:
    """The fields of a delivery's log line for the headless JSON log."""
    return {"zaptui": {"event": event, "connection_id": connection.get("id")}}


def _give_up_unsent(ids: list[int] | None, now: datetime) -> int:
    """With no webhook set, give up the deliveries still pending."""
    query = AlertDelivery.update(
        status=GIVEN_UP, given_up_at=now, last_error=NO_WEBHOOK
    ).where(AlertDelivery.status == PENDING)
    if ids is not None:
        query = query.where(AlertDelivery.connection << ids)
    count = query.execute()
    if count:
        log.warning("%s: gave up delivering %d alert(s)", NO_WEBHOOK, count)
    return count


def _where(url: str) -> str:
    """The webhook's host (and port) for log lines: its path, query and user
    part may hold a token."""
    parsed = urlparse(url)
    try:
        port = parsed.port
    except ValueError:
        port = None
    if not parsed.hostname:
        return "the alert webhook"
    return f"{parsed.hostname}:{port}" if port else parsed.hostname


class _HiddenUrls(logging.Filter):
    """Shows a webhook URL in httpx's request lines (INFO, which the console's
    log file keeps) as its host alone."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's arguments that are webhook URLs; keep it."""
        if self.urls and isinstance(record.args, tuple):
            record.args = tuple(self._shown(arg) for arg in record.args)
        return True

    def _shown(self, arg: object) -> object:
        text = str(arg)
        if text not in self.urls:
            return arg
        return f"{urlparse(text).scheme}://{_where(text)}/…"


_HIDDEN_URLS = _HiddenUrls()


def _hide_in_http_logs(url: str) -> None:
    _HIDDEN_URLS.urls.update((url, str(httpx.URL(url))))
    http_log = logging.getLogger("httpx")
    if _HIDDEN_URLS not in http_log.filters:
        http_log.addFilter(_HIDDEN_URLS)
