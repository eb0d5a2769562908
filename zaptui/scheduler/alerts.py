"""Alerts when a data connection starts failing or recovers, once per change.

The engine sets `DataConnection.failing` after every run. The state last
alerted is kept in `ConnectionAlert`; a process that sees the two differ moves
the alerted state with a compare-and-set, and only the process whose update
lands raises the alert. So each change is alerted once, whichever process (or a
manual sync) caused it and however many schedulers are watching.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

import httpx
import peewee as pw

from zaptui import settings
from zaptui.apilog import redact_text
from zaptui.clock import utcnow
from zaptui.store.models import (
    Account,
    ConnectionAlert,
    DataConnection,
    database_proxy,
)

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_SECONDS = 5.0


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

    With `connection_ids`, only those connections are looked at.
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
    alerts = []
    # Read every row before writing: a write while a SQLite read is still open
    # on this connection fails at once if another process wrote meanwhile.
    for connection in list(query):
        state = getattr(connection, "alert_state", None)
        alerted = bool(state.failing) if state is not None and state.id else False
        if bool(connection.failing) == alerted:
            continue
        if _move(connection.id, alerted, bool(connection.failing)):
            alerts.append(_alert(connection))
    return alerts


def _move(connection_id: int, before: bool, after: bool) -> bool:
    """Compare-and-set the alerted state; True if this process made the change."""
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
        if moved:
            return True
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


def send_webhook(alert: Alert, url: str | None = None) -> bool:
    """POST the alert's JSON summary to the alert webhook, if one is set.

    A failure is logged and never raised: an unreachable webhook must not stop
    the syncs. The URL is not logged whole, since webhook URLs often carry a
    token in their path.
    """
    url = url if url is not None else settings.get("alert_webhook_url")
    if not url:
        return False
    # TODO(alerts): a webhook that fails is logged once and never retried.
    where = urlparse(url).netloc or "the alert webhook"
    try:
        response = httpx.post(
            url, json=alert.payload(), timeout=WEBHOOK_TIMEOUT_SECONDS
        )
        response.raise_for_status()
    except httpx.HTTPStatusError as error:
        log.warning(
            "alert webhook at %s answered %d for data connection %d",
            where,
            error.response.status_code,
            alert.connection_id,
        )
        return False
    except httpx.HTTPError as error:
        log.warning(
            "alert webhook at %s could not be reached for data connection %d: %s",
            where,
            alert.connection_id,
            type(error).__name__,
        )
        return False
    return True
