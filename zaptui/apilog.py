"""The API log: every call to Klaviyo and ZAP~POST, with secrets redacted.

Clients hand each finished call to an `ApiLog`; redaction and truncation happen
here, before anything is stored, so no caller can forget them.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from zaptui.clock import utcnow

log = logging.getLogger(__name__)

REDACTED = "[redacted]"
MAX_BODY_CHARS = 64 * 1024
SECRET_HEADERS = {"authorization", "cookie", "set-cookie", "proxy-authorization"}
_SECRET_KEY_PATTERN = re.compile(r"(key|password|secret|token)", re.IGNORECASE)
# Klaviyo private keys look like pk_ followed by hex; scrub any that slip into
# a body or URL even when the caller did not name them.
_PRIVATE_KEY_PATTERN = re.compile(r"\bpk_[A-Za-z0-9]{6,}")


@dataclass
class ApiCall:
    """One finished HTTP call, before redaction."""

    service: str
    method: str
    url: str
    status: int | None
    duration_ms: float
    request_headers: Mapping[str, str] = field(default_factory=dict)
    request_body: str | bytes | None = None
    response_headers: Mapping[str, str] = field(default_factory=dict)
    response_body: str | bytes | None = None
    error: str = ""
    at: datetime = field(default_factory=utcnow)


class ApiLog(Protocol):
    """Somewhere API calls are recorded."""

    def record(self, call: ApiCall, secrets: Iterable[str] = ()) -> None:
        """Record one call; `secrets` are literal values to scrub everywhere."""


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Replace known secret values and anything shaped like a private key."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    return _PRIVATE_KEY_PATTERN.sub(REDACTED, text)


def redact_headers(
    headers: Mapping[str, str], secrets: Iterable[str] = ()
) -> dict[str, str]:
    """Headers with credentials replaced by a marker."""
    secrets = list(secrets)
    clean: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in SECRET_HEADERS or (
            _SECRET_KEY_PATTERN.search(lowered) and not lowered.startswith("ratelimit")
        ):
            clean[name] = REDACTED
        else:
            clean[name] = redact_text(str(value), secrets)
    return clean


def _redact_json(value: object, secrets: list[str]) -> object:
    if isinstance(value, dict):
        return {
            key: REDACTED
            if isinstance(key, str) and _SECRET_KEY_PATTERN.search(key)
            else _redact_json(item, secrets)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_redact_json(item, secrets) for item in value]
    if isinstance(value, str):
        return redact_text(value, secrets)
    return value


def redact_body(
    body: str | bytes | None,
    secrets: Iterable[str] = (),
    limit: int = MAX_BODY_CHARS,
) -> str | None:
    """A body ready to store: secrets redacted, cut at `limit` with a marker."""
    if body is None:
        return None
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    secrets = list(secrets)
    if len(body) <= 4 * limit:
        try:
            parsed = json.loads(body)
        except ValueError:
            pass
        else:
            body = json.dumps(_redact_json(parsed, secrets), ensure_ascii=False)
    body = redact_text(body, secrets)
    if len(body) > limit:
        omitted = len(body) - limit
        body = body[:limit] + f"\n… [truncated: {omitted} more characters]"
    return body


class DatabaseApiLog:
    """Writes API calls to the `ApiLogEntry` table."""

    def __init__(self, body_limit: int = MAX_BODY_CHARS) -> None:
        self.body_limit = body_limit

    def record(self, call: ApiCall, secrets: Iterable[str] = ()) -> None:
        """Store one call; a failure to store is logged, never raised."""
        from zaptui.store.models import ApiLogEntry

        secrets = list(secrets)
        try:
            ApiLogEntry.create(
                service=call.service,
                at=call.at,
                method=call.method,
                url=redact_text(call.url, secrets),
                status=call.status,
                duration_ms=round(call.duration_ms, 2),
                request_headers=redact_headers(call.request_headers, secrets),
                request_body=redact_body(call.request_body, secrets, self.body_limit),
                response_headers=redact_headers(call.response_headers, secrets),
                response_body=redact_body(call.response_body, secrets, self.body_limit),
                error=redact_text(call.error, secrets),
            )
        except Exception:  # the log must never break a sync
            log.exception("could not store an API log entry for %s", call.service)


class NullApiLog:
    """Records nothing (for benchmarks that measure the bare client)."""

    def record(self, call: ApiCall, secrets: Iterable[str] = ()) -> None:
        """Discard the call."""
