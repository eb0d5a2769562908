"""Holds on data connections and accounts, so that one sync at a time runs each.

A hold is a row's `lease_owner` and `lease_expires_at`. It is taken inside a
write transaction: in SQLite that transaction takes the database lock up front
(BEGIN IMMEDIATE), in PostgreSQL the row is locked with FOR UPDATE SKIP LOCKED
so a busy row is passed over instead of waited for (a hold asked for by name
waits a moment first, for a transaction that has the row locked this
instant). A hold that is not renewed expires; a hold whose owner is a dead
process on this host is taken at once.

Every thread of a process shares one owner name, so the database alone cannot
tell two syncs of one process apart: holds are also recorded per thread in
this process, and a row another live thread holds is busy even for its owner.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import peewee as pw

from zaptui.clock import as_utc, utcnow
from zaptui.store.db import is_postgres
from zaptui.store.models import Account, DataConnection, database_proxy

log = logging.getLogger(__name__)

LEASE_SECONDS = 90
LEASE_SECONDS_ENV = "ZAPTUI_LEASE_SECONDS"
# How long taking a hold asked for by name waits for a row another transaction
# has locked this instant (a renewal, a scheduler's claim: both end at once)
# before calling it busy. A scheduler's claim never waits: it takes other work.
LOCKED_ROW_WAIT_SECONDS = 0.5
_LOCKED_ROW_POLL_SECONDS = 0.02

Holdable = type[Account] | type[DataConnection]
_Key = tuple[str, int]


def lease_seconds() -> int:
    """How long a hold lasts unless renewed: ZAPTUI_LEASE_SECONDS, else 90."""
    text = os.environ.get(LEASE_SECONDS_ENV, "").strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    return LEASE_SECONDS


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


def is_free(owner: str | None, expires_at: datetime | None, me: str) -> bool:
    """Whether a hold recorded in the database can be taken by `me`."""
    if not owner or owner == me:
        return True
    expires = as_utc(expires_at)
    if expires is None or expires <= utcnow():
        return True
    return owner_is_dead(owner)


# -- holds of the threads of this process ---------------------------------------

_local_lock = threading.Lock()
_local: dict[_Key, threading.Thread] = {}


def _key(model: Holdable, row_id: int) -> _Key:
    return (model._meta.table_name, int(row_id))


def _reserve(keys: Iterable[_Key]) -> list[_Key] | None:
    """Record holds for the calling thread; None if another live thread has one.

    Returns the keys newly recorded, so a failed acquisition can undo just those.
    """
    me = threading.current_thread()
    with _local_lock:
        keys = list(keys)
        for key in keys:
            holder = _local.get(key)
            if holder is not None and holder is not me and holder.is_alive():
                return None
        added = [key for key in keys if _local.get(key) is not me]
        for key in added:
            _local[key] = me
        return added


def _unreserve(keys: Iterable[_Key]) -> None:
    """Forget holds of the calling thread (or of threads that have ended)."""
    me = threading.current_thread()
    with _local_lock:
        for key in keys:
            holder = _local.get(key)
            if holder is me or (holder is not None and not holder.is_alive()):
                del _local[key]


def held_in_this_process(model: Holdable, row_id: int) -> bool:
    """Whether a live thread of this process holds the row."""
    with _local_lock:
        holder = _local.get(_key(model, row_id))
        return holder is not None and holder.is_alive()


# -- taking and giving back -----------------------------------------------------


def _locked_row(model: Holdable, row_id: int, wait: float = 0.0) -> pw.Model | None:
    """The row, locked; None if it is gone or (PostgreSQL) another transaction
    has kept it locked for `wait` seconds, which is treated as busy."""
    query = model.select().where(model.id == row_id)
    if not is_postgres():
        return query.first()  # the transaction holds the database's write lock
    deadline = time.monotonic() + wait
    while True:
        # A fresh query each time: a query keeps the rows it read.
        row = query.clone().for_update(skip_locked=True).first()
        if row is not None or time.monotonic() >= deadline:
            return row
        if not query.clone().exists():
            return None
        time.sleep(_LOCKED_ROW_POLL_SECONDS)


def _expiry(seconds: int | None) -> datetime:
    return utcnow() + timedelta(seconds=seconds or lease_seconds())


def acquire(
    model: Holdable, row_id: int, owner: str, seconds: int | None = None
) -> bool:
    """Take the hold on one row; False when another process or thread has it."""
    added = _reserve([_key(model, row_id)])
    if added is None:
        return False
    try:
        with database_proxy.atomic():
            row = _locked_row(model, row_id, LOCKED_ROW_WAIT_SECONDS)
            if row is None or not is_free(row.lease_owner, row.lease_expires_at, owner):
                _unreserve(added)
                return False
            model.update(lease_owner=owner, lease_expires_at=_expiry(seconds)).where(
                model.id == row_id
            ).execute()
            return True
    except BaseException:
        _unreserve(added)
        raise


def _take_both(
    connection: DataConnection, account: Account, owner: str, seconds: int | None
) -> None:
    expires = _expiry(seconds)
    for model, row_id in ((DataConnection, connection.id), (Account, account.id)):
        model.update(lease_owner=owner, lease_expires_at=expires).where(
            model.id == row_id
        ).execute()


def acquire_for_sync(
    connection_id: int, account_id: int, owner: str, seconds: int | None = None
) -> bool:
    """Take both holds a sync needs, the connection's and its account's, or neither."""
    keys = [_key(DataConnection, connection_id), _key(Account, account_id)]
    added = _reserve(keys)
    if added is None:
        return False
    try:
        with database_proxy.atomic():
            # Both rows are locked before either is judged: with SKIP LOCKED a
            # row another transaction keeps locked comes back as None, and that
            # is busy, never free.
            wait = LOCKED_ROW_WAIT_SECONDS
            connection = _locked_row(DataConnection, connection_id, wait)
            account = _locked_row(Account, account_id, wait) if connection else None
            if (
                connection is None
                or account is None
                or connection.account_id != account_id
                or not is_free(
                    connection.lease_owner, connection.lease_expires_at, owner
                )
                or not is_free(account.lease_owner, account.lease_expires_at, owner)
            ):
                _unreserve(added)
                return False
            _take_both(connection, account, owner, seconds)
            return True
    except BaseException:
        _unreserve(added)
        raise


@dataclass(frozen=True)
class Candidate:
    """An active data connection as read, unlocked, for a claim: what decides
    whether it is due, and both holds it needs."""

    id: int
    account_id: int
    status: str
    created_at: datetime | None
    resumed_at: datetime | None
    last_sync_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    account_lease_owner: str | None
    account_lease_expires_at: datetime | None


def read_candidates(where: pw.Expression | None = None) -> list[Candidate]:
    """The active data connections (and `where`) as plain rows, cheap to read."""
    condition = DataConnection.status == "active"
    if where is not None:
        condition = condition & where
    query = (
        DataConnection.select(
            DataConnection.id,
            DataConnection.account.alias("account_id"),
            DataConnection.status,
            DataConnection.created_at,
            DataConnection.resumed_at,
            DataConnection.last_sync_at,
            DataConnection.lease_owner,
            DataConnection.lease_expires_at,
            Account.lease_owner.alias("account_lease_owner"),
            Account.lease_expires_at.alias("account_lease_expires_at"),
        )
        .join(Account)
        .where(condition)
        .objects(Candidate)
    )
    return list(query)


@dataclass
class Claim:
    """What a walk over due connections found: the one taken, and the busy ones."""

    connection: DataConnection | None = None
    busy: list[int] = field(default_factory=list)


def claim_due(
    candidates: Iterable[Candidate],
    owner: str,
    still_due: Callable[[DataConnection], bool],
    seconds: int | None = None,
) -> Claim:
    """Take the holds for the first candidate that is still due and free.

    Candidates come from an unlocked read, in the order they should run; each is
    read again under its lock, because another process may have synced it since
    (`still_due` decides on the fresh row). A candidate whose connection or
    account another process holds is skipped and listed as busy, and so is
    every later candidate of that account: the walk moves on to free work.
    One that a thread of this process holds is skipped without being listed.
    """
    claim = Claim()
    busy_accounts: set[int] = set()
    for candidate in candidates:
        account_id = candidate.account_id
        if account_id in busy_accounts:
            claim.busy.append(candidate.id)
            continue
        if held_in_this_process(Account, account_id) or held_in_this_process(
            DataConnection, candidate.id
        ):
            continue  # a sync of this process has it: not another's, not busy
        if not _looks_free(candidate, owner):
            claim.busy.append(candidate.id)
            busy_accounts.add(account_id)
            continue
        keys = [_key(DataConnection, candidate.id), _key(Account, account_id)]
        added = _reserve(keys)
        if added is None:
            busy_accounts.add(account_id)
            continue
        try:
            taken = _claim_one(candidate.id, account_id, owner, still_due, seconds)
        except BaseException:
            _unreserve(added)
            raise
        if taken == "taken":
            claim.connection = DataConnection.get_by_id(candidate.id)
            return claim
        _unreserve(added)
        if taken == "busy":
            claim.busy.append(candidate.id)
            busy_accounts.add(account_id)
    return claim


def _looks_free(candidate: Candidate, owner: str) -> bool:
    """From the unlocked read: whether neither hold is visibly taken."""
    return is_free(
        candidate.lease_owner, candidate.lease_expires_at, owner
    ) and is_free(
        candidate.account_lease_owner, candidate.account_lease_expires_at, owner
    )


def _claim_one(
    connection_id: int,
    account_id: int,
    owner: str,
    still_due: Callable[[DataConnection], bool],
    seconds: int | None,
) -> str:
    """ "taken", "busy", or "not due" for one candidate, in one short transaction."""
    with database_proxy.atomic():
        connection = _locked_row(DataConnection, connection_id)
        if connection is None:
            return "busy" if _exists(connection_id) else "not due"
        if connection.account_id != account_id or not still_due(connection):
            return "not due"
        if not is_free(connection.lease_owner, connection.lease_expires_at, owner):
            return "busy"
        account = _locked_row(Account, account_id)
        if account is None or not is_free(
            account.lease_owner, account.lease_expires_at, owner
        ):
            return "busy"
        _take_both(connection, account, owner, seconds)
        return "taken"


def _exists(connection_id: int) -> bool:
    return DataConnection.select().where(DataConnection.id == connection_id).exists()


def renew(model: Holdable, row_id: int, owner: str, seconds: int | None = None) -> bool:
    """Extend a hold this process owns; False if it was lost."""
    with database_proxy.atomic():
        return bool(
            model.update(lease_expires_at=_expiry(seconds))
            .where((model.id == row_id) & (model.lease_owner == owner))
            .execute()
        )


def release(model: Holdable, row_id: int, owner: str) -> None:
    """Give a hold back (nothing happens if this process does not own it)."""
    try:
        with database_proxy.atomic():
            model.update(lease_owner=None, lease_expires_at=None).where(
                (model.id == row_id) & (model.lease_owner == owner)
            ).execute()
    finally:
        _unreserve([_key(model, row_id)])
