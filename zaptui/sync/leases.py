"""Holds on data connections and accounts, so that one process syncs each.

A hold is a row's `lease_owner` and `lease_expires_at`. It is taken inside a
write transaction: in SQLite that transaction takes the database lock up front
(BEGIN IMMEDIATE), in PostgreSQL the row is locked with FOR UPDATE SKIP LOCKED
so a busy row is passed over instead of waited for. A hold that is not renewed
expires; a hold whose owner is a dead process on this host is taken at once.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import peewee as pw

from zaptui.clock import as_utc, utcnow
from zaptui.store.db import is_postgres
from zaptui.store.models import Account, DataConnection, database_proxy

LEASE_SECONDS = 90

Holdable = type[Account] | type[DataConnection]


def owner_is_dead(owner: str | None) -> bool:
    """Whether a lease owner is a process on this host that no longer runs."""
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def is_free(owner: str | None, expires_at, me: str) -> bool:
    """Whether a hold can be taken by `me`."""
    if not owner or owner == me:
        return True
    expires = as_utc(expires_at)
    if expires is None or expires <= utcnow():
        return True
    return owner_is_dead(owner)


def _locked_row(model: Holdable, row_id: int) -> pw.Model | None:
    query = model.select().where(model.id == row_id)
    if is_postgres():
        query = query.for_update(skip_locked=True)
    return query.first()


def acquire(
    model: Holdable, row_id: int, owner: str, seconds: int = LEASE_SECONDS
) -> bool:
    """Take the hold on one row; False when another live process has it."""
    with database_proxy.atomic():
        row = _locked_row(model, row_id)
        if row is None or not is_free(row.lease_owner, row.lease_expires_at, owner):
            return False
        model.update(
            lease_owner=owner, lease_expires_at=utcnow() + timedelta(seconds=seconds)
        ).where(model.id == row_id).execute()
        return True


def acquire_for_sync(
    connection_id: int, account_id: int, owner: str, seconds: int = LEASE_SECONDS
) -> bool:
    """Take both holds a sync needs, the connection's and its account's, or neither."""
    with database_proxy.atomic():
        connection = _locked_row(DataConnection, connection_id)
        account = _locked_row(Account, account_id)
        if connection is None or account is None:
            return False
        if not is_free(connection.lease_owner, connection.lease_expires_at, owner):
            return False
        if not is_free(account.lease_owner, account.lease_expires_at, owner):
            return False
        expires = utcnow() + timedelta(seconds=seconds)
        for model, row_id in ((DataConnection, connection_id), (Account, account_id)):
            model.update(lease_owner=owner, lease_expires_at=expires).where(
                model.id == row_id
            ).execute()
        return True


def renew(
    model: Holdable, row_id: int, owner: str, seconds: int = LEASE_SECONDS
) -> bool:
    """Extend a hold this process owns; False if it was lost."""
    with database_proxy.atomic():
        return bool(
            model.update(lease_expires_at=utcnow() + timedelta(seconds=seconds))
            .where((model.id == row_id) & (model.lease_owner == owner))
            .execute()
        )


def release(model: Holdable, row_id: int, owner: str) -> None:
    """Give a hold back (nothing happens if this process does not own it)."""
    with database_proxy.atomic():
        model.update(lease_owner=None, lease_expires_at=None).where(
            (model.id == row_id) & (model.lease_owner == owner)
        ).execute()
