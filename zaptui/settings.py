"""Typed access to the settings table, with validation an operator can read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zaptui.store.models import Setting

SYNC_FREQUENCIES = (1, 6, 12, 24)


class SettingError(ValueError):
    """A setting name or value that cannot be accepted."""


@dataclass(frozen=True)
class SettingSpec:
    """One setting: its key, default, and how a value given as text is parsed."""

    key: str
    label: str
    default: Any
    help: str


SPECS: dict[str, SettingSpec] = {
    spec.key: spec
    for spec in (
        SettingSpec(
            "sync_frequency_hours",
            "Sync frequency",
            24,
            "How often each active data connection is synced: 1, 6, 12 or 24 hours.",
        ),
        SettingSpec(
            "fix_address_data",
            "Fix address data",
            False,
            "Write corrected addresses back to the Klaviyo profiles after cleansing.",
        ),
        SettingSpec(
            "hold_back_days",
            "Hold back recently mailed",
            0,
            "Skip anyone mailed by any data connection within this many days (0: off).",
        ),
        SettingSpec(
            "lookback_hours",
            "Look-back window",
            6,
            "Hours before the last join seen that each sync looks again, because "
            "segment membership is computed late.",
        ),
        SettingSpec(
            "retention_days",
            "Retention",
            30,
            "Days to keep API log bodies and per-profile outcomes.",
        ),
        SettingSpec(
            "alert_webhook_url",
            "Alert webhook",
            "",
            "A URL that receives a JSON summary when a connection starts failing "
            "or recovers.",
        ),
        SettingSpec(
            "zap_account_name",
            "ZAP~POST account",
            "",
            "The ZAP~POST account name shown in the header.",
        ),
        SettingSpec("zap_api_key", "ZAP~POST API key", "", "The ZAP~POST API key."),
        SettingSpec(
            "zap_api_password_encrypted",
            "ZAP~POST API password",
            "",
            "The ZAP~POST API password, encrypted at rest.",
        ),
    )
}


def get(key: str) -> Any:
    """The value of a setting, or its default."""
    spec = SPECS[key]
    row = Setting.get_or_none(Setting.key == key)
    return spec.default if row is None else row.value


def put(key: str, value: Any) -> Any:
    """Store a validated setting value; returns the value stored."""
    value = validate(key, value)
    Setting.insert(key=key, value=value).on_conflict(
        conflict_target=[Setting.key], update={Setting.value: value}
    ).execute()
    return value


def validate(key: str, value: Any) -> Any:
    """Check a value for a setting, raising SettingError with what is allowed."""
    if key not in SPECS:
        raise SettingError(f"unknown setting {key!r}")
    if key == "sync_frequency_hours":
        if value not in SYNC_FREQUENCIES:
            raise SettingError("sync frequency must be 1, 6, 12 or 24 hours")
        return int(value)
    if key == "fix_address_data":
        if not isinstance(value, bool):
            raise SettingError("fix address data must be on or off")
        return value
    if key in ("hold_back_days", "lookback_hours", "retention_days"):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise SettingError(f"{SPECS[key].label.lower()} must be a whole number ≥ 0")
        if key == "retention_days" and value < 1:
            raise SettingError("retention must be at least 1 day")
        return value
    if key == "alert_webhook_url":
        if value and not str(value).startswith(("http://", "https://")):
            raise SettingError("the alert webhook must be an http:// or https:// URL")
        return str(value)
    return str(value)


def parse_frequency(text: str) -> int:
    """Read "1h", "6h", "12h", "24h" (or the bare number) as hours."""
    cleaned = text.strip().lower().removesuffix("hours").removesuffix("h").strip()
    try:
        hours = int(cleaned)
    except ValueError:
        raise SettingError("sync frequency must be one of 1h, 6h, 12h, 24h") from None
    if hours not in SYNC_FREQUENCIES:
        raise SettingError("sync frequency must be one of 1h, 6h, 12h, 24h")
    return hours


def parse_switch(text: str) -> bool:
    """Read on/off (also true/false, yes/no, 1/0)."""
    lowered = text.strip().lower()
    if lowered in ("on", "true", "yes", "1"):
        return True
    if lowered in ("off", "false", "no", "0"):
        return False
    raise SettingError("expected on or off")
