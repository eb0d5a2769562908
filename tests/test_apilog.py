"""The API log: redaction, truncation and storage in SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest

from zaptui.apilog import (
    MAX_BODY_CHARS,
    REDACTED,
    ApiCall,
    BodyHead,
    DatabaseApiLog,
    redact_body,
    redact_headers,
    redact_text,
)
from zaptui.store.models import ApiLogEntry, database_proxy

KEY = "pk_3f9a0c1b2d4e5f60718293a4b5c6d7e8f9"
PASSWORD = 'zp-"quoted"\\slash-pässwörd'
COLUMNS = (
    "service",
    "method",
    "url",
    "request_headers",
    "request_body",
    "response_headers",
    "response_body",
    "error",
)


def stored_text(entry: ApiLogEntry) -> str:
    """Every column of a log row as one text, the way a reader could see it."""
    return " ".join(str(getattr(entry, column)) for column in COLUMNS)


@contextmanager
def bound(database: object) -> Iterator[None]:
    """Bind the models to another database for a moment."""
    previous = database_proxy.obj
    database_proxy.initialize(database)
    try:
        yield
    finally:
        database_proxy.initialize(previous)


def call(**overrides: object) -> ApiCall:
    """A Klaviyo call carrying the key in the places a careless client would."""
    values: dict[str, object] = {
        "service": "klaviyo",
        "method": "GET",
        "url": f"https://a.klaviyo.com/api/lists/?api_key={KEY}",
        "status": 200,
        "duration_ms": 12.3456,
        "request_headers": {"Authorization": f"Klaviyo-API-Key {KEY}", "revision": "x"},
        "request_body": None,
        "response_headers": {"RateLimit-Remaining": "74", "X-Echo": KEY},
        "response_body": json.dumps({"data": [], "links": {"self": f"?k={KEY}"}}),
        "error": "",
    }
    values.update(overrides)
    return ApiCall(**values)  # type: ignore[arg-type]


def test_credential_headers_are_redacted_and_rate_limit_headers_kept():
    headers = redact_headers(
        {
            "Authorization": f"Klaviyo-API-Key {KEY}",
            "Cookie": "session=abc",
            "X-Api-Key": "anything",
            "ZAP-Password": "anything",
            "RateLimit-Remaining": "12",
            "Location": f"https://example.com/?next={PASSWORD}",
            "Content-Type": "application/vnd.api+json",
        },
        [PASSWORD],
    )

    assert headers["Authorization"] == REDACTED
    assert headers["Cookie"] == REDACTED
    assert headers["X-Api-Key"] == REDACTED
    assert headers["ZAP-Password"] == REDACTED
    assert headers["RateLimit-Remaining"] == "12"
    assert headers["Location"] == f"https://example.com/?next={REDACTED}"
    assert headers["Content-Type"] == "application/vnd.api+json"


def test_private_key_shaped_text_is_redacted_without_being_named():
    assert redact_text(f"GET /api?key={KEY}&x=1") == f"GET /api?key={REDACTED}&x=1"
    assert redact_text("pk_ is a prefix, pk_abc too short") == (
        "pk_ is a prefix, pk_abc too short"
    )


def test_named_secret_is_redacted_as_written_and_as_json_escapes_it():
    for ensure_ascii in (True, False):
        body = json.dumps({"note": f"it is {PASSWORD}"}, ensure_ascii=ensure_ascii)
        assert PASSWORD not in body  # JSON escapes its quotes and backslash

        stored = redact_body(body, [PASSWORD])

        assert stored is not None
        assert PASSWORD not in json.loads(stored)["note"]
        assert REDACTED in stored


def test_fields_named_like_secrets_have_their_values_redacted():
    body = json.dumps(
        {
            "api_key": "k-123",
            "nested": {"accessToken": "t-456", "name": "Ada"},
            "items": [{"client_secret": {"deep": "s-789"}}, {"Password": 7}],
        }
    )

    stored = json.loads(redact_body(body) or "")

    assert stored == {
        "api_key": REDACTED,
        "nested": {"accessToken": REDACTED, "name": "Ada"},
        "items": [{"client_secret": REDACTED}, {"Password": REDACTED}],
    }


def test_a_body_that_only_mentions_secret_words_in_values_is_stored_as_received():
    body = '{"data": [{"note": "a \\"key\\": not a field", "title": "Token Ring"}]}'

    assert redact_body(body) == body


def test_a_field_named_like_a_secret_is_found_after_escaped_characters():
    body = '{"caf\\u00e9_key": "k-123", "name": "Ada"}'

    assert json.loads(redact_body(body) or "") == {"café_key": REDACTED, "name": "Ada"}


def test_body_over_the_limit_is_cut_with_the_marker():
    body = "x" * 250

    stored = redact_body(body, limit=100)

    assert stored == "x" * 100 + "\n… [truncated: 150 more characters]"


def test_body_at_the_limit_is_kept_whole():
    body = "y" * 100

    assert redact_body(body, limit=100) == body


def test_a_secret_straddling_the_cut_is_not_half_kept():
    body = "a" * 95 + KEY + "b" * 400

    stored = redact_body(body, [KEY], limit=100) or ""

    assert stored.startswith("a" * 95 + REDACTED[:5])
    assert KEY[:4] not in stored
    assert stored.endswith(f"[truncated: {len(body) - 100} more characters]")


def test_redactions_cannot_pull_a_cut_off_secret_into_the_stored_part():
    long_secret = "s3cr3t-" + "q" * 300
    limit = 3400
    slack = len(long_secret) + 256
    # Ten secrets before the cut shrink the text by ~3,000 characters once
    # redacted; the eleventh starts 10 characters before the end of the slack,
    # so only its first 10 characters are in the part scrubbed as text.
    before = (long_secret + ",") * 10
    filler = "z" * (limit + slack - 10 - len(before))
    body = before + filler + long_secret + "tail" * 1000

    stored = redact_body(body, [long_secret], limit=limit) or ""

    assert "s3cr3t-" not in stored
    assert "q" * 20 not in stored
    assert stored.count(REDACTED) == 11


def test_secret_named_field_in_a_large_body_is_still_redacted():
    records = [{"n": n, "text": "w" * 100} for n in range(2000)]
    body = json.dumps({"password": "hunter2", "records": records})
    assert len(body) > 4 * MAX_BODY_CHARS

    stored = redact_body(body) or ""

    assert "hunter2" not in stored
    assert stored.startswith('{"password": "[redacted]"')


def test_bytes_bodies_are_decoded_and_invalid_bytes_replaced():
    assert redact_body(b'{"name": "Zo\xc3\xab"} \xff') == '{"name": "Zoë"} \ufffd'


def test_api_call_lands_in_sqlite_redacted_with_utc_time(db):
    at = datetime(2026, 5, 1, 12, 30, tzinfo=UTC)
    error = f"ConnectError: could not reach ?key={KEY}"

    DatabaseApiLog().record(call(at=at, error=error), secrets=[KEY])

    entry = ApiLogEntry.get()
    assert entry.service == "klaviyo"
    assert entry.method == "GET"
    assert entry.status == 200
    assert entry.at == at
    assert entry.at.tzinfo is not None
    assert entry.duration_ms == 12.35
    assert entry.url == f"https://a.klaviyo.com/api/lists/?api_key={REDACTED}"
    assert entry.request_headers["Authorization"] == REDACTED
    assert entry.request_headers["revision"] == "x"
    assert entry.response_headers == {
        "RateLimit-Remaining": "74",
        "X-Echo": REDACTED,
    }
    assert json.loads(entry.response_body)["links"]["self"] == f"?k={REDACTED}"
    assert entry.error == f"ConnectError: could not reach ?key={REDACTED}"
    assert KEY not in stored_text(entry)


def test_a_failure_to_store_is_logged_and_not_raised(db, caplog):
    db.drop_tables([ApiLogEntry])
    caplog.set_level(logging.ERROR, logger="zaptui.apilog")

    DatabaseApiLog().record(call(), secrets=[KEY])

    assert "could not store an API log entry for klaviyo" in caplog.text
    assert KEY not in caplog.text


def test_api_log_follows_the_database_it_is_bound_to(tmp_path):
    from zaptui.store.db import open_database

    api_log = DatabaseApiLog()
    first = open_database(f"sqlite:///{tmp_path / 'one.db'}")
    api_log.record(call(service="klaviyo"))
    second = open_database(f"sqlite:///{tmp_path / 'two.db'}")
    api_log.record(call(service="zappost"))
    api_log.record(call(service="zappost"))

    assert [e.service for e in ApiLogEntry.select()] == ["zappost", "zappost"]
    with bound(first):
        assert [e.service for e in ApiLogEntry.select()] == ["klaviyo"]
    first.close()
    second.close()


@pytest.mark.postgres
def test_api_call_lands_in_postgresql_redacted(pg_db):
    body = "p" * (MAX_BODY_CHARS + 10)

    DatabaseApiLog().record(call(response_body=body), secrets=[KEY])

    entry = ApiLogEntry.get()
    assert entry.at.tzinfo is not None
    assert entry.request_headers["Authorization"] == REDACTED
    assert entry.response_body == (
        "p" * MAX_BODY_CHARS + "\n… [truncated: 10 more characters]"
    )
    assert KEY not in stored_text(entry)


@pytest.mark.parametrize(
    "body",
    [
        "x" * 20_000,
        "a" * 3_395 + KEY + "b" * 4_000,
        "c" * 1_000 + KEY + "d" * 9_000,
        ("s3cr3t-" + "q" * 300 + ",") * 10 + "z" * 3_000 + "tail" * 1_000,
        json.dumps({"password": "hunter2", "records": ["w" * 100] * 300}),
        json.dumps({"records": ["w" * 100] * 300, "token": "late"}),
    ],
)
def test_a_long_ascii_body_is_stored_as_its_text_would_be(body: str) -> None:
    secrets = [KEY, "s3cr3t-" + "q" * 300]

    assert redact_body(body.encode(), secrets, limit=3_400) == redact_body(
        body, secrets, limit=3_400
    )


def test_a_streamed_body_is_stored_from_its_head() -> None:
    head = BodyHead('{"submissionId": "S1", "validRecords": [' + "x" * 200, 10_000)

    stored = redact_body(head, limit=100) or ""

    assert stored == head[:100] + f"\n… [truncated: {10_000 - 100} more characters]"


def test_a_streamed_body_stops_before_a_field_named_like_a_secret() -> None:
    text = '{"submissionId": "S1", "records": [{"voucher_token": "T-123"}' + "x" * 500
    head = BodyHead(text, 50_000)

    stored = redact_body(head, limit=200) or ""

    assert "T-123" not in stored
    assert stored.startswith('{"submissionId": "S1", "records": [{')
    assert stored.endswith("more characters]")


def test_a_streamed_body_cut_through_a_secret_keeps_none_of_it() -> None:
    secret = "correct-horse-battery-staple"
    text = "z" * 90 + secret + "," + secret[:-4]  # the head ends inside it
    head = BodyHead(text, 50_000)

    stored = redact_body(head, [secret], limit=200) or ""

    assert "correct" not in stored
    assert stored.startswith("z" * 90)
