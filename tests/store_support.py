"""Rows written straight to the store, for tests below the services."""

from __future__ import annotations

from typing import Any

from zaptui.store.models import Account, DataConnection


def stored_account(name: str = "Acme", klaviyo_id: str = "K1") -> Account:
    """A paired Klaviyo account (its key is never used)."""
    return Account.create(klaviyo_id=klaviyo_id, name=name, api_key_encrypted="x")


def stored_connection(account: Account, source: str, **fields: Any) -> DataConnection:
    """A data connection of `account` to the segment `source` (also its name,
    unless `fields` say otherwise) and campaign C1."""
    values: dict[str, Any] = {
        "source_type": "segment",
        "source_id": source,
        "source_name": source,
        "name": source,
        "campaign_id": "C1",
    }
    values.update(fields)
    return DataConnection.create(account=account, **values)
