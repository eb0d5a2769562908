"""The one source of "now" in UTC, replaceable in tests and the demo."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

_now: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return _now()


def set_clock(now: Callable[[], datetime] | None) -> None:
    """Replace the clock (None restores the system clock)."""
    global _now
    _now = now or (lambda: datetime.now(UTC))


def as_utc(value: datetime | None) -> datetime | None:
    """Make a datetime aware in UTC; a naive one is taken to be UTC already."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_utc(value: datetime | None, empty: str = "—") -> str:
    """Format a datetime for display, always in UTC."""
    value = as_utc(value)
    if value is None:
        return empty
    return value.strftime("%Y-%m-%d %H:%M UTC")


def parse_iso(text: str | None) -> datetime | None:
    """Parse an ISO 8601 timestamp as Klaviyo sends it (a trailing Z allowed)."""
    if not text:
        return None
    return as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def iso_z(value: datetime) -> str:
    """Format a datetime the way Klaviyo filters expect: 2026-05-01T00:00:00Z."""
    value = as_utc(value)
    assert value is not None
    return value.strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{value.microsecond:06d}Z" if value.microsecond else "Z"
    )
