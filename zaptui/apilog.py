"""The API log: every call to Klaviyo and ZAP~POST, with secrets redacted.

Clients hand each finished call to an `ApiLog`; redaction and truncation happen
here, before anything is stored, so no caller can forget them.

Redaction scrubs the secrets a caller names (as written and as JSON would
escape them), anything shaped like a Klaviyo private key, credential headers,
and the values of JSON fields whose names say key, password, secret or token.
A body is parsed as JSON only when one of its field names could say so: a
member page of 100 profiles is otherwise scrubbed as text, which is what keeps
the API log cheap enough to record every page of a long sync.

Bodies are kept to their first `MAX_BODY_CHARS` (16 KiB) characters, then a
marker saying how many more there were: about twenty profiles of a member
page, any error body whole, and 16 MB of log for a 100,000-profile sync.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import httpx

from zaptui.clock import utcnow

log = logging.getLogger(__name__)

REDACTED = "[redacted]"
SERVICE_NAMES = {"klaviyo": "Klaviyo", "zappost": "ZAP~POST"}
MAX_BODY_CHARS = 16 * 1024  # characters of a body kept in the API log
SECRET_HEADERS = {"authorization", "cookie", "set-cookie", "proxy-authorization"}
_SECRET_WORDS = ("key", "password", "secret", "token")
_SECRET_KEY_PATTERN = re.compile("(" + "|".join(_SECRET_WORDS) + ")", re.IGNORECASE)
# From just after a word to the end of the JSON string holding it, when that
# string is an object key (the closing quote is followed by a colon).
_REST_OF_KEY = re.compile(r'(?:[^"\\]|\\.)*"\s*:')
# Klaviyo private keys look like pk_ followed by hex; scrub any that slip into
# a body or URL even when the caller did not name them.
_PRIVATE_KEY_PATTERN = re.compile(r"\bpk_[A-Za-z0-9]{6,}")
TRUNCATION_MARKER = "\n… [truncated: {omitted} more characters]"


class BodyHead(str):
    """The first characters of a body read as a stream, and its whole length.

    A client that reads a long answer as it arrives keeps only its beginning;
    the API log stores that part as it would store the whole body's.
    """

    length: int

    def __new__(cls, head: str, length: int) -> BodyHead:
        text = super().__new__(cls, head)
        text.length = length
        return text


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
        if secret and len(secret) >= 4 and secret in text:
            text = text.replace(secret, REDACTED)
    if "pk_" in text:
        text = _PRIVATE_KEY_PATTERN.sub(REDACTED, text)
    return text


def _json_forms(secrets: Iterable[str]) -> list[str]:
    """Each secret as written and as it reads inside a JSON string."""
    forms: list[str] = []
    for secret in secrets:
        if not secret or len(secret) < 4:
            continue
        for form in (
            secret,
            json.dumps(secret)[1:-1],
            json.dumps(secret, ensure_ascii=False)[1:-1],
        ):
            if form not in forms:
                forms.append(form)
    # Longest first, so a secret containing another is replaced whole.
    return sorted(forms, key=len, reverse=True)


def _names_secret_field(text: str) -> bool:
    """Whether a JSON text may have a field named like a key, password or token."""
    return _secret_field_start(text) is not None


def _secret_field_start(text: str) -> int | None:
    """Where the first field named like a key, password or token begins."""
    lowered = text.lower()
    first: int | None = None
    for word in _SECRET_WORDS:
        start = lowered.find(word)
        while start != -1 and (first is None or start < first):
            if _REST_OF_KEY.match(lowered, start + len(word)):
                first = start
                break
            start = lowered.find(word, start + 1)
    if first is None:
        return None
    quote = text.rfind('"', 0, first)
    return quote if quote != -1 else first


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
    forms = _json_forms(secrets)
    if isinstance(body, BodyHead) and body.length > len(body):
        return _redact_head(body, body.length, forms, limit)
    if isinstance(body, bytes):
        keep = limit + _slack(forms)
        if len(body) > keep and body.isascii():
            return _redact_long_ascii(body, forms, limit, keep)
        body = body.decode("utf-8", errors="replace")
    return _redact_text_body(body, forms, limit)


def _redact_long_ascii(body: bytes, forms: list[str], limit: int, keep: int) -> str:
    """`_redact_text_body` of a long ASCII body, decoding only what is stored.

    An ASCII body has as many characters as bytes, so the marker's count needs
    no decoding: a member page is 80 KB, a submission's answer megabytes. The
    whole body is decoded only when a redaction needs it.
    """
    head = body[:keep].decode("ascii")
    if _names_secret_field(head) or redact_text(head, forms) != head:
        return _redact_text_body(body.decode("ascii"), forms, limit)
    return head[:limit] + TRUNCATION_MARKER.format(omitted=len(body) - limit)


def _redact_head(head: str, length: int, forms: list[str], limit: int) -> str:
    """What is stored of a body of which only `head` was kept.

    Without the whole body a field named like a secret cannot be parsed out,
    so the text stops where the first one starts. Every secret wholly inside
    the head is scrubbed; the head's last characters, where its end may cut
    one short, are dropped.
    """
    cleaned = redact_text(head, forms)
    longest = max((len(form) for form in forms), default=0)
    if longest:
        cleaned = cleaned[: max(0, len(cleaned) - longest + 1)]
    start = _secret_field_start(cleaned)
    if start is not None:
        cleaned = cleaned[:start]
    stored = cleaned[:limit]
    return stored + TRUNCATION_MARKER.format(omitted=length - len(stored))


def _redact_text_body(body: str, forms: list[str], limit: int) -> str:
    """redact_body's work on a body that is text."""
    # Parsing costs time in proportion to the whole body, so it happens only
    # when a field named like a secret lies within what will be stored.
    if _names_secret_field(_stored_part(body, forms, limit)):
        try:
            parsed = json.loads(body)
        except ValueError:
            pass
        else:
            body = json.dumps(_redact_json(parsed, forms), ensure_ascii=False)
    head = _stored_part(body, forms, limit)
    cleaned = redact_text(head, forms)
    if cleaned != head and len(head) < len(body):
        # A redaction shifted the text: what lay past the slack could move
        # into the stored part, so scrub the whole body instead.
        cleaned = redact_text(body, forms)
    if len(body) > limit:
        return cleaned[:limit] + TRUNCATION_MARKER.format(omitted=len(body) - limit)
    return cleaned


def _slack(forms: list[str]) -> int:
    """Characters scrubbed past the cut, so a secret straddling it goes whole."""
    return max((len(form) for form in forms), default=0) + 256


def _stored_part(body: str, forms: list[str], limit: int) -> str:
    """The part of a body that can end up stored, with slack past the cut.

    Only the first `limit` characters are kept, so only they need scrubbing;
    the slack makes a secret that straddles the cut whole, to be replaced
    rather than half kept.
    """
    keep = limit + _slack(forms)
    return body if len(body) <= keep else body[:keep]


_COLUMNS = (
    "service",
    "at",
    "method",
    "url",
    "status",
    "duration_ms",
    "request_headers",
    "request_body",
    "response_headers",
    "response_body",
    "error",
)


class DatabaseApiLog:
    """Writes API calls to the `ApiLogEntry` table."""

    def __init__(self, body_limit: int = MAX_BODY_CHARS) -> None:
        self.body_limit = body_limit
        self._statement: tuple[object, str, list[Any]] | None = None

    def record(self, call: ApiCall, secrets: Iterable[str] = ()) -> None:
        """Store one call; a failure to store is logged, never raised."""
        secrets = list(secrets)
        try:
            self._insert(
                (
                    call.service,
                    call.at,
                    call.method,
                    redact_text(call.url, secrets),
                    call.status,
                    round(call.duration_ms, 2),
                    redact_headers(call.request_headers, secrets),
                    redact_body(call.request_body, secrets, self.body_limit),
                    redact_headers(call.response_headers, secrets),
                    redact_body(call.response_body, secrets, self.body_limit),
                    redact_text(call.error, secrets),
                )
            )
        except Exception:  # the log must never break a sync
            log.exception("could not store an API log entry for %s", call.service)

    def _insert(self, values: tuple[Any, ...]) -> None:
        """One INSERT, its SQL built once per database rather than once per call.

        Each value still goes through its field's `db_value`, so rows are
        exactly what `ApiLogEntry.insert(...)` would store.
        """
        from zaptui.store.models import ApiLogEntry, database_proxy

        database = database_proxy.obj
        if database is None:
            raise RuntimeError("no database is open for the API log")
        if self._statement is None or self._statement[0] is not database:
            fields = [ApiLogEntry._meta.fields[name] for name in _COLUMNS]
            sql, _ = ApiLogEntry.insert({field: None for field in fields}).sql()
            self._statement = (database, sql, fields)
        _, sql, fields = self._statement
        params = [
            field.db_value(value) for field, value in zip(fields, values, strict=True)
        ]
        database.execute_sql(sql, params)


# httpx logs every request line at INFO and httpcore traces answers at DEBUG;
# a URL or an echoed header there could carry a private key.
HTTP_LIBRARY_LOGGERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)


class RedactingFilter(logging.Filter):
    """Scrubs private-key-shaped text from the records of loggers we do not own."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message when it holds a private key; keep it."""
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's to report
            return True
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_REDACTING_FILTER = RedactingFilter()


def scrub_http_library_logs() -> None:
    """Put the redacting filter on httpx's and httpcore's loggers (idempotent)."""
    for name in HTTP_LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if _REDACTING_FILTER not in logger.filters:
            logger.addFilter(_REDACTING_FILTER)


class NullApiLog:
    """Records nothing (for benchmarks that measure the bare client)."""

    def record(self, call: ApiCall, secrets: Iterable[str] = ()) -> None:
        """Discard the call."""


async def send_recorded(
    http: httpx.AsyncClient,
    request: httpx.Request,
    *,
    service: str,
    api_log: ApiLog,
    secrets: Sequence[str],
    request_body: Callable[[], str | bytes | None] | None = None,
    read: Callable[[httpx.Response], Awaitable[str | None]] | None = None,
) -> tuple[httpx.Response | None, httpx.TransportError | None]:
    """Send a request once and record the call in the API log.

    A transport failure is returned, not raised, so the caller decides whether
    to retry. `request_body` is read after the send, so a streamed body can
    report what it sent. With `read`, the answer's body is left to it as a
    stream: it returns what of the body to log (a `BodyHead`), or None once
    it has read the body whole. A failing API log is logged and never fails
    the call.
    """
    started = time.perf_counter()
    response: httpx.Response | None = None
    error: httpx.TransportError | None = None
    logged: str | bytes | None = None
    try:
        if read is None:
            response = await http.send(request)
            logged = response.content
        else:
            response = await http.send(request, stream=True)
            try:
                logged = await read(response)
                if logged is None:
                    logged = response.content
            finally:
                await response.aclose()
    except httpx.TransportError as exc:
        error = exc
    call = ApiCall(
        service=service,
        method=request.method,
        url=str(request.url),
        status=response.status_code if response is not None else None,
        duration_ms=(time.perf_counter() - started) * 1000,
        request_headers=dict(request.headers),
        request_body=request_body() if request_body else None,
        response_headers=dict(response.headers) if response is not None else {},
        response_body=logged,
        error=redact_text(f"{type(error).__name__}: {error}", secrets) if error else "",
    )
    try:
        api_log.record(call, secrets=secrets)
    except Exception:
        name = SERVICE_NAMES.get(service, service)
        log.exception("the API log refused a %s call; carrying on", name)
    return response, error
