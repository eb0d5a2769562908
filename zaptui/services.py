"""Operator services: every change an operator can make, in one place.

The console, the CLI and the scheduler all call these. They block (database
and HTTP), so the console calls them from thread workers. Each change lands in
the audit trail with its actor.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from zaptui import settings
from zaptui.clock import utcnow
from zaptui.domain.address import NotText, clean_text
from zaptui.domain.mapping import (
    campaign_fields,
    suggest_mapping,
    unmapped_required,
    validate_mapping,
)
from zaptui.klaviyo.client import KlaviyoClient
from zaptui.klaviyo.errors import (
    KlaviyoError,
    MissingScope,
    Throttled,
    Unauthorized,
    Unavailable,
)
from zaptui.runtime import Runtime
from zaptui.store.models import (
    Account,
    AuditEntry,
    DataConnection,
    FieldMapping,
    SyncRun,
    database_proxy,
    set_hold_back_indexes,
)
from zaptui.sync import leases
from zaptui.sync.engine import (
    ProgressCallback,
    RecoveryFailed,
    SyncEngine,
    is_syncing_here,
    needs_recovery,
    recover_interrupted_runs,
    recover_run,
)
from zaptui.zappost.errors import ZapPostError

log = logging.getLogger(__name__)

T = TypeVar("T")

TRIGGERS = ("manual", "scheduled")
SAMPLE_MEMBERS = 20


class ServiceError(Exception):
    """An operator request that cannot be done, with a sentence saying why."""


@dataclass(frozen=True)
class Source:
    """A Klaviyo list or segment that can be paired with a campaign."""

    type: str  # "list" or "segment"
    id: str
    name: str


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end from blocking code."""
    return asyncio.run(coro)


def _snapshot(model: Any, *fields: str) -> dict[str, Any]:
    return {name: _plain(getattr(model, name)) for name in fields}


def _plain(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, str):
        # Names from Klaviyo are stored and shown as one line of plain text.
        try:
            return clean_text(value)[0]
        except NotText:
            return ""
    return value


def _source(kind: str, item: Any) -> Source | None:
    """A list or segment resource from Klaviyo, or None when it has no id."""
    if not isinstance(item, dict) or not item.get("id"):
        return None
    attributes = item.get("attributes")
    name = attributes.get("name") if isinstance(attributes, dict) else ""
    return Source(kind, str(item["id"]), _plain(str(name or "")))


async def _read_one_member(
    client: KlaviyoClient, lists: list[dict], segments: list[dict]
) -> None:
    """Read one member of the first list or segment (proves profiles:read)."""
    for kind, items in (("list", lists), ("segment", segments)):
        for item in items:
            if not isinstance(item, dict) or not item.get("id"):
                continue
            pages = client.iter_member_pages(kind, str(item["id"]), page_size=1)
            try:
                await anext(pages, None)
            finally:
                await pages.aclose()
            return


def _save_mapping(connection_id: int, mapping: dict[str, str]) -> None:
    rows = [
        {"connection": connection_id, "campaign_field": field, "profile_field": path}
        for field, path in mapping.items()
    ]
    if rows:
        FieldMapping.insert_many(rows).execute()


CONNECTION_FIELDS = ("name", "source_type", "source_id", "campaign_id", "status")


class Services:
    """The operations behind every screen and command."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    # -- audit ---------------------------------------------------------------

    def audit(
        self,
        action: str,
        subject: str = "",
        before: Any = None,
        after: Any = None,
    ) -> None:
        """Record an operator action in the audit trail."""
        AuditEntry.create(
            actor=self.runtime.actor,
            action=action,
            subject=subject,
            before=before,
            after=after,
        )

    # -- Klaviyo accounts ------------------------------------------------------

    async def _check_key(self, api_key: str) -> tuple[dict[str, Any], str, str]:
        """Ask Klaviyo about a key: (account resource, status, reason).

        The account call proves the key; reading the lists, the segments and
        one member page proves the scopes a sync needs to read.
        """
        async with self.runtime.klaviyo(api_key) as client:
            account = await client.get_account()
            try:
                lists = await client.get_lists()
                segments = await client.get_segments()
                await _read_one_member(client, lists, segments)
            except MissingScope as error:
                return account, "missing scope", str(error)
        return account, "connected", ""

    def connect_account(self, api_key: str) -> Account:
        """Pair a Klaviyo account by its private key, validated with Klaviyo."""
        api_key = api_key.strip()
        if not api_key.startswith("pk_"):
            raise ServiceError(
                "that is not a Klaviyo private API key (they start with pk_)"
            )
        try:
            resource, status, reason = _run(self._check_key(api_key))
        except Unauthorized:
            raise ServiceError(
                "Klaviyo refused the key (unauthorised): check it is a current "
                "private key of the account"
            ) from None
        except MissingScope as error:
            raise ServiceError(
                f"the key cannot read the account (missing scope): {error}; give "
                "it the accounts:read scope"
            ) from None
        except (Unavailable, Throttled, httpx.HTTPError) as error:
            raise ServiceError(
                f"Klaviyo could not be reached (unreachable): {error}; check the "
                "network and try again"
            ) from None
        except KlaviyoError as error:
            raise ServiceError(f"Klaviyo did not answer the check: {error}") from None
        klaviyo_id = _plain(str(resource.get("id", "")))
        attributes = resource.get("attributes")
        attributes = attributes if isinstance(attributes, dict) else {}
        contact = attributes.get("contact_information")
        contact = contact if isinstance(contact, dict) else {}
        name = _plain(
            contact.get("organization_name")
            or contact.get("default_sender_name")
            or klaviyo_id
        )
        if not klaviyo_id:
            raise ServiceError("Klaviyo answered the account call without an id")
        encrypted = self.runtime.secrets.encrypt(api_key)
        now = utcnow()
        with database_proxy.atomic():
            account = Account.get_or_none(Account.klaviyo_id == klaviyo_id)
            before = _snapshot(account, "name", "status") if account else None
            values = {
                "name": str(name)[:255],
                "api_key_encrypted": encrypted,
                "key_hint": api_key[-4:],
                "status": status,
                "status_reason": reason,
                "checked_at": now,
            }
            if account is None:
                account = Account.create(
                    klaviyo_id=klaviyo_id, connected_at=now, **values
                )
            else:
                Account.update(values).where(Account.id == account.id).execute()
                account = Account.get_by_id(account.id)
            self.audit(
                "account.connect",
                f"account {account.id} ({klaviyo_id})",
                before,
                _snapshot(account, "name", "status"),
            )
        return account

    def recheck_account(self, account_id: int) -> Account:
        """Ask Klaviyo again whether an account's key works; record the answer."""
        account = self._account(account_id)
        api_key = self.runtime.secrets.decrypt(account.api_key_encrypted)
        try:
            _, status, reason = _run(self._check_key(api_key))
        except Unauthorized as error:
            status, reason = "unauthorised", str(error)
        except MissingScope as error:
            status, reason = "missing scope", str(error)
        except (KlaviyoError, httpx.HTTPError) as error:
            status, reason = "unreachable", str(error) or type(error).__name__
        before = _snapshot(account, "status", "status_reason")
        Account.update(status=status, status_reason=reason, checked_at=utcnow()).where(
            Account.id == account.id
        ).execute()
        account = Account.get_by_id(account.id)
        self.audit(
            "account.recheck",
            f"account {account.id}",
            before,
            _snapshot(account, "status", "status_reason"),
        )
        return account

    def disconnect_account(self, account_id: int) -> int:
        """Unpair an account and remove its data connections; returns how many."""
        account = self._account(account_id)
        for connection in list(account.connections):
            self._settle(connection)
        with database_proxy.atomic():
            count = account.connections.count()
            before = _snapshot(account, "klaviyo_id", "name", "status") | {
                "data_connections": count
            }
            DataConnection.delete().where(
                DataConnection.account == account.id
            ).execute()
            account.delete_instance()
            self.audit("account.disconnect", f"account {account_id}", before, None)
        return count

    def accounts(self) -> list[Account]:
        """Every paired account, oldest first."""
        return list(Account.select().order_by(Account.id))

    def sources(self, account_id: int) -> list[Source]:
        """The account's lists and segments, from Klaviyo."""
        account = self._account(account_id)
        api_key = self.runtime.secrets.decrypt(account.api_key_encrypted)

        async def fetch() -> list[Source]:
            async with self.runtime.klaviyo(api_key) as client:
                lists = await client.get_lists()
                try:
                    segments = await client.get_segments()
                except MissingScope as error:
                    # A key without segments:read can still sync its lists.
                    log.info("no segments for account %s: %s", account.id, error)
                    segments = []
            return [
                source
                for kind, items in (("list", lists), ("segment", segments))
                for source in (_source(kind, item) for item in items)
                if source is not None
            ]

        try:
            return _run(fetch())
        except KlaviyoError as error:
            raise ServiceError(f"cannot read lists and segments: {error}") from None

    def campaigns(self) -> list[dict[str, Any]]:
        """The ZAP~POST account's campaigns."""

        async def fetch() -> list[dict[str, Any]]:
            async with self.runtime.zappost() as client:
                return await client.get_campaigns()

        try:
            return _run(fetch())
        except ZapPostError as error:
            raise ServiceError(f"cannot read ZAP~POST campaigns: {error}") from None

    def campaign(self, campaign_id: str) -> dict[str, Any]:
        """One campaign with its fields."""

        async def fetch() -> dict[str, Any]:
            async with self.runtime.zappost() as client:
                return await client.get_campaign(campaign_id)

        try:
            return _run(fetch())
        except ZapPostError as error:
            raise ServiceError(f"cannot read campaign {campaign_id}: {error}") from None

    # -- data connections -----------------------------------------------------

    def create_connection(
        self,
        account_id: int,
        source_type: str,
        source_id: str,
        campaign_id: str,
        name: str | None = None,
        new_joiners_only: bool = False,
    ) -> DataConnection:
        """Pair a list or segment with a campaign, with a suggested mapping."""
        if source_type not in ("list", "segment"):
            raise ServiceError("the connected data must be a list or a segment")
        account = self._account(account_id)
        source = next(
            (
                s
                for s in self.sources(account.id)
                if s.type == source_type and s.id == source_id
            ),
            None,
        )
        if source is None:
            raise ServiceError(
                f"Klaviyo account {account.name!r} has no {source_type} {source_id!r}"
            )
        campaign = self.campaign(campaign_id)
        fields = campaign_fields(campaign)
        mapping = suggest_mapping(fields, self._sample_properties(account, source))
        now = utcnow()
        with database_proxy.atomic():
            exists = DataConnection.get_or_none(
                (DataConnection.account == account.id)
                & (DataConnection.source_type == source_type)
                & (DataConnection.source_id == source_id)
                & (DataConnection.campaign_id == campaign_id)
            )
            if exists is not None:
                raise ServiceError(
                    f"{source.name!r} is already paired with this campaign "
                    f"(data connection {exists.id})"
                )
            connection = DataConnection.create(
                account=account,
                source_type=source_type,
                source_id=source_id,
                source_name=source.name[:255],
                name=(name or f"{source.name} → {campaign.get('name', '')}")[:255],
                campaign_id=campaign_id,
                campaign_name=str(campaign.get("name", ""))[:255],
                new_joiners_only=new_joiners_only,
                created_at=now,
                next_sync_at=now,
            )
            _save_mapping(connection.id, mapping)
            self.audit(
                "connection.create",
                f"data connection {connection.id}",
                None,
                _snapshot(connection, *CONNECTION_FIELDS)
                | {"new_joiners_only": new_joiners_only, "mapping": mapping},
            )
        return connection

    def _sample_properties(self, account: Account, source: Source) -> list[str]:
        """Custom property names on the first members of a list or segment."""
        api_key = self.runtime.secrets.decrypt(account.api_key_encrypted)

        async def fetch() -> list[str]:
            names: dict[str, None] = {}
            async with self.runtime.klaviyo(api_key) as client:
                pages = client.iter_member_pages(
                    source.type, source.id, page_size=SAMPLE_MEMBERS
                )
                try:
                    async for page in pages:
                        for resource in page:
                            attributes = (
                                resource.get("attributes")
                                if isinstance(resource, dict)
                                else None
                            )
                            properties = (attributes or {}).get("properties")
                            if isinstance(properties, dict):
                                names.update(dict.fromkeys(map(str, properties)))
                        break
                finally:
                    await pages.aclose()
            return list(names)

        try:
            return _run(fetch())
        except (KlaviyoError, httpx.HTTPError) as error:
            log.info("no sample of member properties for the mapping: %s", error)
            return []

    def connections(self) -> list[DataConnection]:
        """Every data connection, oldest first."""
        return list(
            DataConnection.select(DataConnection, Account)
            .join(Account)
            .order_by(DataConnection.id)
        )

    def mapping(self, connection_id: int) -> dict[str, str]:
        """A connection's mapping: campaign field -> profile field."""
        self._connection(connection_id)
        return {
            row.campaign_field: row.profile_field
            for row in FieldMapping.select().where(
                FieldMapping.connection == connection_id
            )
        }

    def update_mapping(
        self, connection_id: int, mapping: dict[str, str], campaign: dict | None = None
    ) -> dict[str, str]:
        """Replace a mapping; refused while a required campaign field is unmapped."""
        connection = self._connection(connection_id)
        fields = campaign_fields(campaign or self.campaign(connection.campaign_id))
        mapping = {k: v for k, v in mapping.items() if v}
        missing = unmapped_required(mapping, fields)
        if missing:
            raise ServiceError(
                "map every required campaign field first: " + ", ".join(missing)
            )
        problems = validate_mapping(mapping, fields)
        if problems:
            raise ServiceError("; ".join(problems))
        before = self.mapping(connection_id)
        with database_proxy.atomic():
            FieldMapping.delete().where(
                FieldMapping.connection == connection_id
            ).execute()
            _save_mapping(connection_id, mapping)
            self.audit(
                "connection.map", f"data connection {connection_id}", before, mapping
            )
        return mapping

    def pause(self, connection_id: int) -> DataConnection:
        """Pause a connection: it is not synced, and nothing queues up meanwhile.

        A sync already running stops at its next safe point, before submitting.
        """
        self._set_status(connection_id, "paused", "connection.pause")
        DataConnection.update(next_sync_at=None).where(
            DataConnection.id == connection_id
        ).execute()
        return DataConnection.get_by_id(connection_id)

    def resume(self, connection_id: int) -> DataConnection:
        """Resume a connection: the next sync takes its members as they are now."""
        connection = self._set_status(connection_id, "active", "connection.resume")
        DataConnection.update(resumed_at=utcnow(), next_sync_at=utcnow()).where(
            DataConnection.id == connection_id
        ).execute()
        return DataConnection.get_by_id(connection.id)

    def _set_status(
        self, connection_id: int, status: str, action: str
    ) -> DataConnection:
        connection = self._connection(connection_id)
        if connection.status == status:
            raise ServiceError(f"data connection {connection_id} is already {status}")
        before = _snapshot(connection, "status")
        DataConnection.update(status=status).where(
            DataConnection.id == connection_id
        ).execute()
        self.audit(
            action, f"data connection {connection_id}", before, {"status": status}
        )
        return DataConnection.get_by_id(connection_id)

    def remove(self, connection_id: int) -> None:
        """Unpair a list or segment; its sync history stays."""
        connection = self._connection(connection_id)
        self._settle(connection)
        before = _snapshot(connection, *CONNECTION_FIELDS)
        with database_proxy.atomic():
            connection.delete_instance()
            self.audit("connection.remove", f"data connection {connection_id}", before)

    def sync_now(
        self,
        connection_id: int,
        progress: ProgressCallback | None = None,
        stop: threading.Event | None = None,
        trigger: str = "manual",
    ) -> SyncRun:
        """Run a sync of one connection now and return the finished run.

        Raises SyncRefused (paused, or an earlier submission still unconfirmed)
        or SyncBusy (another process is syncing it or its account).
        """
        if trigger not in TRIGGERS:
            raise ServiceError(
                f"a sync is triggered manual or scheduled, not {trigger}"
            )
        self._connection(connection_id)
        if trigger == "manual":
            self.audit("connection.sync", f"data connection {connection_id}")
        engine = SyncEngine(self.runtime, progress=progress, stop=stop)
        return engine.sync(connection_id, trigger)

    def recover(self) -> list[SyncRun]:
        """Recover runs left unfinished by a process that ended."""
        return _run(recover_interrupted_runs(self.runtime))

    def _settle(self, connection: DataConnection) -> None:
        """Before unpairing: refuse while it syncs, finish what a dead run left.

        A removed connection takes its de-duplication ledger with it, so a run
        that may have submitted must be confirmed and recorded first.
        """
        owner = self.runtime.owner
        if is_syncing_here(connection.id) or not leases.acquire_for_sync(
            connection.id, connection.account_id, owner
        ):
            raise ServiceError(
                f"data connection {connection.id} is being synced right now: pause "
                "it or wait for the sync to finish, then try again"
            )
        try:
            for run in list(
                SyncRun.select().where(
                    (SyncRun.connection == connection.id) & needs_recovery()
                )
            ):
                _run(recover_run(self.runtime, run))
        except RecoveryFailed as error:
            raise ServiceError(str(error)) from None
        finally:
            leases.release(DataConnection, connection.id, owner)
            leases.release(Account, connection.account_id, owner)

    # -- settings --------------------------------------------------------------

    def set_setting(self, key: str, value: Any) -> Any:
        """Change a setting (validated) and audit it."""
        with database_proxy.atomic():  # no change without its audit entry
            before = settings.get(key)
            stored = settings.put(key, value)
            if key == "hold_back_days":
                set_hold_back_indexes(database_proxy.obj, bool(stored))
            self.audit(f"settings.{key}", key, {"value": before}, {"value": stored})
        return stored

    def save_zap_credentials(self, api_key: str, password: str, name: str = "") -> None:
        """Store ZAP~POST credentials, the password encrypted."""
        if not api_key or not password:
            raise ServiceError("both the ZAP~POST API key and password are needed")
        settings.put("zap_api_key", api_key)
        settings.put(
            "zap_api_password_encrypted", self.runtime.secrets.encrypt(password)
        )
        if name:
            settings.put("zap_account_name", name)
        self.audit("settings.zap_credentials", "ZAP~POST", None, {"api_key": api_key})

    # -- lookups --------------------------------------------------------------

    def _account(self, account_id: int) -> Account:
        account = Account.get_or_none(Account.id == account_id)
        if account is None:
            raise ServiceError(f"there is no Klaviyo account {account_id}")
        return account

    def _connection(self, connection_id: int) -> DataConnection:
        connection = DataConnection.get_or_none(DataConnection.id == connection_id)
        if connection is None:
            raise ServiceError(f"there is no data connection {connection_id}")
        return connection
