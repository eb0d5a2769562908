"""The Klaviyo client against the simulator over real loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from zaptui.apilog import MAX_BODY_CHARS, ApiCall, DatabaseApiLog
from zaptui.clock import utcnow
from zaptui.klaviyo.client import KlaviyoClient, RetryPolicy
from zaptui.klaviyo.errors import (
    InvalidRequest,
    KlaviyoError,
    MissingScope,
    NotFound,
    Throttled,
    Unauthorized,
    Unavailable,
)
from zaptui.klaviyo.limiter import TIERS, RateLimiter, Tier
from zaptui.sim.asgi import ASGIApp, Receive, Scope, Send
from zaptui.sim.seed import SeedProfile, uk_profile
from zaptui.sim.serve import ServerHandle, serve_in_thread
from zaptui.sim.server import SimWorld
from zaptui.store.models import ApiLogEntry

SEGMENT = "All UK customers"
WIDE = {name: Tier(name, 10**9, 10**9) for name in TIERS}


class Sleeps:
    """Records the waits the client asks for instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@dataclass
class Exchange:
    """One request as the server received it and the body it answered with."""

    method: str
    url: str
    body: bytes = b""


@dataclass
class Front:
    """An ASGI app in front of the current world that records every exchange.

    `rewrite` may change a response body on its way out (a next link, say).
    """

    app: ASGIApp | None = None
    exchanges: list[Exchange] = field(default_factory=list)
    rewrite: Callable[[bytes], bytes] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"").decode("latin-1")
        path = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        host = dict(scope["headers"])[b"host"].decode("latin-1")
        exchange = Exchange(
            scope["method"], f"http://{host}{path}" + (f"?{query}" if query else "")
        )
        self.exchanges.append(exchange)
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            if self.rewrite is not None:
                body = self.rewrite(body)
            exchange.body = body
            headers = [(k, v) for k, v in start["headers"] if k != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)


@pytest.fixture(scope="module")
def front() -> Iterator[tuple[Front, ServerHandle]]:
    front = Front()
    handle = serve_in_thread(front)
    yield front, handle
    handle.stop()


@pytest.fixture
def world(front: tuple[Front, ServerHandle]) -> SimWorld:
    """A fresh seeded world behind the loopback server, rate limits off."""
    world = SimWorld.seeded(seed=11, profiles=450, rate_limits=False)
    front[0].app = world.app
    front[0].exchanges.clear()
    front[0].rewrite = None
    return world


@pytest.fixture
def exchanges(front: tuple[Front, ServerHandle]) -> list[Exchange]:
    return front[0].exchanges


@pytest.fixture
def base_url(front: tuple[Front, ServerHandle]) -> str:
    return SimWorld.klaviyo_url(front[1].url)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def make_client(db, base_url: str, sleeps: Sleeps) -> AsyncIterator[Any]:
    """Clients with their own wide limiter, quick retries and the SQLite API log."""
    clients: list[KlaviyoClient] = []

    def make(key: str, **options: Any) -> KlaviyoClient:
        settings: dict[str, Any] = {
            "base_url": base_url,
            "api_log": DatabaseApiLog(),
            "retry": RetryPolicy(base_delay=0.01),
            "limiter": RateLimiter(WIDE),
            "timeout": 5.0,
            "sleep": sleeps,
        }
        settings.update(options)
        client = KlaviyoClient(key, **settings)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def acme(world: SimWorld, make_client: Any) -> KlaviyoClient:
    return make_client(world.klaviyo.account("Acme Outdoor").private_key)


async def all_members(
    client: KlaviyoClient, source_id: str, kind: str = "segment", **options: Any
) -> list[dict[str, Any]]:
    return [
        profile
        async for page in client.iter_member_pages(kind, source_id, **options)
        for profile in page
    ]


def segment_id(world: SimWorld, name: str = SEGMENT) -> str:
    return world.klaviyo.source("Acme Outdoor", name).id


def member_ids(world: SimWorld, name: str = SEGMENT) -> list[str]:
    return [pid for pid, _ in world.klaviyo.members("Acme Outdoor", name)]


def stored_text() -> str:
    """Every column of every API log row, as one text."""
    return "\n".join(str(row) for row in ApiLogEntry.select().dicts())


# -- reading -------------------------------------------------------------------


async def test_reads_the_account_its_key_belongs_to(world, acme):
    account = await acme.get_account()

    assert account["id"] == world.klaviyo.account("Acme Outdoor").id
    contact = account["attributes"]["contact_information"]
    assert contact["organization_name"] == "Acme Outdoor"


async def test_reads_every_list_and_segment_across_pages(world, acme, exchanges):
    for number in range(13):
        world.klaviyo.add_source("Acme Outdoor", "list", f"Catalogue {number:02d}")

    lists = await acme.get_lists()
    segments = await acme.get_segments()

    names = [item["attributes"]["name"] for item in lists]
    assert names == ["Newsletter", "VIP Customers"] + [
        f"Catalogue {n:02d}" for n in range(13)
    ]
    assert [item["attributes"]["name"] for item in segments] == [
        "Lapsed 90 days",
        SEGMENT,
    ]
    list_calls = [e for e in exchanges if "/api/lists/" in e.url]
    assert len(list_calls) == 2
    assert all("page[size]=10" in call.url for call in list_calls)


async def test_pages_members_oldest_joiner_first_a_hundred_at_a_time(world, acme):
    pages = [
        page async for page in acme.iter_member_pages("segment", segment_id(world))
    ]

    assert [len(page) for page in pages] == [100, 100, 100, 100, 50]
    profiles = [profile for page in pages for profile in page]
    assert [p["id"] for p in profiles] == member_ids(world)
    joined = [p["attributes"]["joined_group_at"] for p in profiles]
    assert joined == sorted(joined)


async def test_reads_list_members_too(world, acme):
    newsletter = world.klaviyo.source("Acme Outdoor", "Newsletter")

    profiles = await all_members(acme, newsletter.id, "list", page_size=30)

    assert [p["id"] for p in profiles] == member_ids(world, "Newsletter")


async def test_follows_links_next_exactly_as_given(world, acme, front, exchanges):
    # A next link the client could never rebuild itself: an extra parameter
    # with an encoded slash, and the filter encoded differently.
    def add_trace(body: bytes) -> bytes:
        document = json.loads(body)
        if document.get("links", {}).get("next"):
            document["links"]["next"] += "&trace=a%2Fb%20c"
        return json.dumps(document).encode()

    front[0].rewrite = add_trace
    joined_after = world.klaviyo.members("Acme Outdoor", SEGMENT)[49][1]

    profiles = await all_members(
        acme, segment_id(world), joined_after=joined_after, page_size=60
    )

    assert len(profiles) == 400
    assert len(exchanges) == 7
    for previous, following in zip(exchanges, exchanges[1:], strict=False):
        assert following.url == json.loads(previous.body)["links"]["next"]
    assert "trace=a%2Fb%20c" in exchanges[-1].url


async def test_watermark_returns_only_later_joiners(world, acme, exchanges):
    members = world.klaviyo.members("Acme Outdoor", SEGMENT)
    watermark = members[299][1]

    profiles = await all_members(acme, segment_id(world), joined_after=watermark)

    assert [p["id"] for p in profiles] == [pid for pid, _ in members[300:]]
    sent = parse_qs(urlsplit(exchanges[0].url).query)
    assert sent["filter"] == [
        f"greater-than(joined_group_at,{watermark.strftime('%Y-%m-%dT%H:%M:%S.%fZ')})"
    ]
    assert sent["sort"] == ["joined_group_at"]


async def test_a_rejoin_moves_a_profile_past_the_watermark(world, acme):
    members = world.klaviyo.members("Acme Outdoor", SEGMENT)
    watermark = members[-1][1]
    returning = members[10][0]
    assert await all_members(acme, segment_id(world), joined_after=watermark) == []

    world.klaviyo.leave("Acme Outdoor", SEGMENT, [returning])
    world.klaviyo.join("Acme Outdoor", SEGMENT, [returning])
    profiles = await all_members(acme, segment_id(world), joined_after=watermark)

    assert [p["id"] for p in profiles] == [returning]
    assert profiles[0]["attributes"]["joined_group_at"] > watermark.isoformat()


async def test_a_late_joiner_is_missed_past_the_watermark_but_found_looking_back(
    world, acme
):
    watermark = world.klaviyo.members("Acme Outdoor", SEGMENT)[-1][1]
    late = world.klaviyo.join(
        "Acme Outdoor", SEGMENT, count=1, at=watermark - timedelta(minutes=10)
    )

    strict = await all_members(acme, segment_id(world), joined_after=watermark)
    looking_back = await all_members(
        acme, segment_id(world), joined_after=watermark - timedelta(hours=1)
    )

    assert late[0] not in [p["id"] for p in strict]
    assert late[0] in [p["id"] for p in looking_back]


async def test_page_size_outside_what_klaviyo_allows_is_refused_before_sending(
    world, acme, exchanges
):
    with pytest.raises(ValueError, match="1 to 100"):
        await all_members(acme, segment_id(world), page_size=101)
    with pytest.raises(ValueError, match="list or segment"):
        await all_members(acme, segment_id(world), kind="tag")

    assert exchanges == []


# -- retries -------------------------------------------------------------------


async def test_a_429_waits_as_long_as_retry_after_says(world, acme, sleeps):
    world.faults.add("klaviyo", "segment_profiles", "429", 1, retry_after=7, wait=2)

    profiles = await all_members(acme, segment_id(world))

    assert len(profiles) == 450
    assert sleeps.delays == [7.0]


async def test_a_429_without_retry_after_waits_the_seconds_in_its_detail(
    world, acme, sleeps
):
    world.faults.add("klaviyo", "segment_profiles", "429", 1, retry_after=None, wait=3)

    profiles = await all_members(acme, segment_id(world))

    assert len(profiles) == 450
    assert sleeps.delays == [3.0]


async def test_a_429_announcing_nothing_backs_off_exponentially_with_jitter(
    world, make_client, sleeps
):
    world.faults.add(
        "klaviyo", "segment_profiles", "429", 3, retry_after=None, wait=None
    )
    client = make_client(
        world.klaviyo.account("Acme Outdoor").private_key,
        retry=RetryPolicy(base_delay=2.0, factor=2.0),
    )

    profiles = await all_members(client, segment_id(world))

    assert len(profiles) == 450
    assert len(sleeps.delays) == 3
    for attempt, delay in enumerate(sleeps.delays):
        assert 0.75 * 2.0 * 2**attempt <= delay <= 1.25 * 2.0 * 2**attempt


async def test_a_wait_longer_than_max_wait_fails_at_once(world, acme, sleeps):
    rule = world.faults.add("klaviyo", "segment_profiles", "429", None, retry_after=900)

    with pytest.raises(Throttled) as caught:
        await all_members(acme, segment_id(world))

    assert sleeps.delays == []
    assert world.faults.fired(rule) == 1
    assert "wait 900 s, longer than the 600 s allowed" in str(caught.value)
    assert caught.value.status == 429


async def test_endless_throttling_gives_up_after_the_throttle_attempts(
    world, make_client, sleeps
):
    rule = world.faults.add("klaviyo", "segment_profiles", "429", None, retry_after=1)
    client = make_client(
        world.klaviyo.account("Acme Outdoor").private_key,
        retry=RetryPolicy(throttle_attempts=5),
    )

    with pytest.raises(Throttled, match="throttled 5 attempts in a row"):
        await all_members(client, segment_id(world))

    assert world.faults.fired(rule) == 5
    assert sleeps.delays == [1.0] * 4


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_retried_with_growing_backoff(
    world, acme, sleeps, status
):
    world.faults.add("klaviyo", "segment_profiles", "5xx", 2, skip=1, status=status)

    profiles = await all_members(acme, segment_id(world))

    assert [p["id"] for p in profiles] == member_ids(world)
    assert len(sleeps.delays) == 2
    for failure, delay in enumerate(sleeps.delays):  # 0.01 s growing by 1.5x
        assert 0.75 * 0.01 * 1.5**failure <= delay <= 1.25 * 0.01 * 1.5**failure


async def test_server_errors_that_persist_are_reported_unavailable(world, acme, sleeps):
    rule = world.faults.add("klaviyo", "segment_profiles", "5xx", None, status=503)

    with pytest.raises(Unavailable) as caught:
        await all_members(acme, segment_id(world))

    assert world.faults.fired(rule) == 4
    assert len(sleeps.delays) == 3
    assert str(caught.value) == (
        "Klaviyo answered HTTP 503 4 times; could not read the members of "
        f"segment {segment_id(world)}."
    )


async def test_a_timeout_is_retried(world, make_client, sleeps):
    world.faults.add("klaviyo", "segment_profiles", "slow", 1, skip=2, delay=1.5)
    client = make_client(world.klaviyo.account("Acme Outdoor").private_key, timeout=0.5)

    profiles = await all_members(client, segment_id(world))

    assert [p["id"] for p in profiles] == member_ids(world)
    assert len(sleeps.delays) == 1
    rows = list(ApiLogEntry.select().order_by(ApiLogEntry.id))
    assert [row.status for row in rows].count(None) == 1
    assert "ReadTimeout" in next(row.error for row in rows if row.status is None)


async def test_a_connection_dropped_mid_page_is_retried_without_gaps(
    world, acme, sleeps
):
    world.faults.add("klaviyo", "segment_profiles", "drop", 1, skip=3)

    profiles = await all_members(acme, segment_id(world))

    assert [p["id"] for p in profiles] == member_ids(world)
    assert len(sleeps.delays) == 1


async def test_a_garbled_page_is_retried_then_reported(world, acme, sleeps):
    world.faults.add("klaviyo", "segment_profiles", "malformed", 1, skip=1)
    assert len(await all_members(acme, segment_id(world))) == 450

    world.faults.add("klaviyo", "segment_profiles", "malformed", None)
    with pytest.raises(Unavailable, match="with a body that is not JSON 4 times"):
        await all_members(acme, segment_id(world))


async def test_an_html_403_is_retried_then_reported_clearly(world, acme, sleeps):
    world.faults.add("klaviyo", "segment_profiles", "html403", 2)
    assert len(await all_members(acme, segment_id(world))) == 450
    assert len(sleeps.delays) == 2

    rule = world.faults.add("klaviyo", "segment_profiles", "html403", None)
    with pytest.raises(Unavailable) as caught:
        await all_members(acme, segment_id(world))

    assert world.faults.fired(rule) == 4
    assert caught.value.status == 403
    assert str(caught.value) == (
        "Klaviyo sent an HTML 403 page (its CDN refused the request) 4 times; "
        f"could not read the members of segment {segment_id(world)}."
    )


# -- typed errors --------------------------------------------------------------


async def test_a_key_without_the_segments_scope_is_told_which_scope(world, make_client):
    books = make_client(world.klaviyo.account("Borough Books").private_key)

    lists = await books.get_lists()
    with pytest.raises(MissingScope) as caught:
        await books.get_segments()

    assert [item["attributes"]["name"] for item in lists] == ["Book Club"]
    assert caught.value.code == "permission_denied"
    assert "segments:read" in str(caught.value)


async def test_a_revoked_key_is_unauthorised(world, make_client):
    key = world.klaviyo.account("Closed Shop Ltd").private_key
    closed = make_client(key)

    with pytest.raises(Unauthorized) as caught:
        await closed.get_account()

    assert caught.value.code == "not_authenticated"
    assert str(caught.value) == (
        "Klaviyo refused the private key (HTTP 401): The API key specified is invalid."
    )


async def test_an_unknown_segment_is_not_found(world, acme):
    with pytest.raises(NotFound, match="HTTP 404"):
        await all_members(acme, "NoSuch")


async def test_an_invalid_request_carries_klaviyos_detail(world, acme):
    with pytest.raises(InvalidRequest) as caught:
        await acme.update_profile_location(
            member_ids(world)[0], {"address1": "1 High St", "postcode": "N1 1AA"}
        )

    assert caught.value.code == "invalid"
    assert "'postcode' is not a valid location field" in str(caught.value)


# -- writing -------------------------------------------------------------------


async def test_update_profile_location_replaces_the_location(world, acme):
    profile_id = member_ids(world)[3]
    location = {
        "address1": "12 Station Road",
        "address2": None,
        "city": "York",
        "country": "United Kingdom",
        "region": "North Yorkshire",
        "zip": "YO1 7HH",
    }

    answer = await acme.update_profile_location(profile_id, location)

    stored = world.klaviyo.profiles[profile_id].attributes["location"]
    assert {name: stored[name] for name in location} == location
    assert answer["attributes"]["location"]["zip"] == "YO1 7HH"
    assert world.klaviyo.location_updates[-1].location == location


async def test_two_events_in_one_second_are_both_recorded(world, acme):
    profile_id = member_ids(world)[5]

    await acme.create_event(profile_id, "Address Updated", {"field": "zip"})
    await acme.create_event(profile_id, "Address Updated", {"field": "city"})

    events = [e for e in world.klaviyo.events if e.profile_id == profile_id]
    assert [e.properties["field"] for e in events] == ["zip", "city"]
    assert events[0].unique_id != events[1].unique_id


async def test_a_retried_event_is_recorded_once(world, make_client):
    profile_id = member_ids(world)[6]
    world.faults.add("klaviyo", "create_event", "slow", 1, delay=0.6)
    client = make_client(world.klaviyo.account("Acme Outdoor").private_key, timeout=0.2)

    await client.create_event(profile_id, "Address Updated", {"field": "zip"})
    attempts = ApiLogEntry.select().count()
    deadline = time.monotonic() + 5
    while world.klaviyo.requests < attempts and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # the timed-out first attempt lands late
    await asyncio.sleep(0.1)

    sent = [
        json.loads(row.request_body)["data"]["attributes"]["unique_id"]
        for row in ApiLogEntry.select().order_by(ApiLogEntry.id)
    ]
    assert len(sent) >= 2 and len(set(sent)) == 1
    assert world.klaviyo.requests == len(sent)
    events = [e for e in world.klaviyo.events if e.profile_id == profile_id]
    assert len(events) == 1


# -- the API log and secrets ---------------------------------------------------


async def test_every_call_is_in_the_api_log_with_secrets_redacted(
    world, acme, base_url
):
    await acme.get_account()
    await all_members(acme, segment_id(world))
    await acme.update_profile_location(member_ids(world)[0], {"city": "Leeds"})

    rows = list(ApiLogEntry.select().order_by(ApiLogEntry.id))
    assert [(row.method, row.status) for row in rows] == [("GET", 200)] * 6 + [
        ("PATCH", 200)
    ]
    first = rows[1]
    assert first.service == "klaviyo"
    assert first.url == (
        f"{base_url}/api/segments/{segment_id(world)}/profiles/"
        "?page[size]=100&sort=joined_group_at"
    )
    assert first.request_headers["authorization"] == "[redacted]"
    assert first.request_headers["revision"] == "2026-07-15"
    assert first.response_headers["content-type"] == "application/vnd.api+json"
    assert first.duration_ms > 0
    assert first.at.tzinfo is not None
    assert json.loads(rows[-1].request_body)["data"]["attributes"] == {
        "location": {"city": "Leeds"}
    }
    assert world.klaviyo.account("Acme Outdoor").private_key not in stored_text()


async def test_a_page_over_the_size_limit_is_stored_cut_with_the_marker(
    world, acme, exchanges
):
    await all_members(acme, segment_id(world))

    row = ApiLogEntry.select().order_by(ApiLogEntry.id).get()
    received = exchanges[0].body.decode()
    assert len(received) > MAX_BODY_CHARS
    assert row.response_body == (
        received[:MAX_BODY_CHARS]
        + f"\n… [truncated: {len(received) - MAX_BODY_CHARS} more characters]"
    )


async def test_the_private_key_is_in_no_log_row_and_no_error_message(
    world, make_client, caplog
):
    caplog.set_level(logging.DEBUG)
    acme_account = world.klaviyo.account("Acme Outdoor")
    key = acme_account.private_key
    # A customer whose name is the key, a segment id that is the key, and
    # faults on the way: the key must be scrubbed wherever it turns up.
    carrier = uk_profile(random.Random(5), 99_999, utcnow())
    carrier.attributes["first_name"] = key
    carrier_id = f"01KEY{key}"
    world.klaviyo.add_profiles(
        acme_account, [SeedProfile(carrier_id, carrier.attributes)]
    )
    world.klaviyo.join(acme_account, SEGMENT, [carrier_id])
    world.faults.add("klaviyo", "segment_profiles", "5xx", 1, skip=1)
    world.faults.add("klaviyo", "segment_profiles", "drop", 1, skip=2)
    client = make_client(key)
    messages: list[str] = []

    profiles = await all_members(client, segment_id(world))
    for attempt in (
        all_members(client, key),
        client.update_profile_location(key, {"city": "Leeds"}),
        client.create_event(key, "Address Updated", {"key": key}),
    ):
        with pytest.raises(KlaviyoError) as caught:
            await attempt
        messages.append(str(caught.value))

    assert any(p["attributes"]["first_name"] == key for p in profiles)
    assert len(messages) == 3
    for text in (*messages, stored_text(), caplog.text):
        assert key not in text
        assert key[3:] not in text


async def test_a_server_echoing_the_key_back_does_not_leak_it(db, sleeps):
    key = "pk_" + "ab12" * 8 + "cd"

    async def echo(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        authorization = dict(scope["headers"])[b"authorization"].decode()
        body = json.dumps(
            {
                "errors": [
                    {
                        "id": "1",
                        "code": "invalid",
                        "title": "Bad.",
                        "detail": f"You sent {authorization} to {scope['path']}",
                    }
                ]
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", b"application/vnd.api+json"),
                    (b"x-echo", authorization.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    with serve_in_thread(echo) as handle:
        async with KlaviyoClient(
            key,
            base_url=handle.url,
            api_log=DatabaseApiLog(),
            limiter=RateLimiter(WIDE),
            sleep=sleeps,
        ) as client:
            with pytest.raises(InvalidRequest) as caught:
                await client.get_lists()

    assert "You sent Klaviyo-API-Key [redacted]" in str(caught.value)
    row = ApiLogEntry.get()
    assert row.response_headers["x-echo"] == "Klaviyo-API-Key [redacted]"
    assert key not in stored_text()
    assert key not in str(caught.value)


async def test_a_failing_api_log_never_breaks_paging(world, make_client, caplog):
    class BrokenLog:
        def record(self, call: ApiCall, secrets: Any = ()) -> None:
            raise RuntimeError("disk full")

    client = make_client(
        world.klaviyo.account("Acme Outdoor").private_key, api_log=BrokenLog()
    )
    profiles = await all_members(client, segment_id(world))

    assert len(profiles) == 450
    assert "the API log refused a Klaviyo call" in caplog.text


async def test_a_lost_api_log_table_never_breaks_paging(world, acme, db, caplog):
    db.drop_tables([ApiLogEntry])

    profiles = await all_members(acme, segment_id(world))

    assert len(profiles) == 450
    assert "could not store an API log entry for klaviyo" in caplog.text


async def test_a_next_link_to_another_origin_is_refused(world, acme, front, exchanges):
    def point_away(body: bytes) -> bytes:
        document = json.loads(body)
        if document.get("links", {}).get("next"):
            parts = urlsplit(document["links"]["next"])
            document["links"]["next"] = parts._replace(
                netloc="collector.example:8443"
            ).geturl()
        return json.dumps(document).encode()

    front[0].rewrite = point_away

    with pytest.raises(KlaviyoError, match="refusing to send the private key"):
        await all_members(acme, segment_id(world))

    assert len(exchanges) == 1
    assert ApiLogEntry.select().count() == 1


# -- rate limits ---------------------------------------------------------------


async def test_a_long_paging_run_stays_inside_the_sims_rate_windows(db, sleeps):
    tiers = {
        name: Tier(name, 3, 8, burst_seconds=0.1, steady_seconds=0.5) for name in TIERS
    }
    world = SimWorld.seeded(seed=3, profiles=240, tiers=tiers)
    source = world.klaviyo.source("Acme Outdoor", SEGMENT).id
    key = world.klaviyo.account("Acme Outdoor").private_key

    with serve_in_thread(world.app) as handle:
        # Without the limiter the simulator's windows bite at once.
        async with httpx.AsyncClient(
            base_url=SimWorld.klaviyo_url(handle.url),
            headers={
                "Authorization": f"Klaviyo-API-Key {key}",
                "revision": "2026-07-15",
            },
        ) as bare:
            answers = await asyncio.gather(
                *(bare.get(f"/api/segments/{source}/profiles/") for _ in range(12))
            )
        statuses = [answer.status_code for answer in answers]
        assert statuses.count(429) >= 4
        await asyncio.sleep(0.6)
        world.klaviyo.throttled = 0
        requests_before = world.klaviyo.requests

        started = time.monotonic()
        async with KlaviyoClient(
            key,
            base_url=SimWorld.klaviyo_url(handle.url),
            api_log=DatabaseApiLog(),
            limiter=RateLimiter(tiers),
            sleep=sleeps,
        ) as client:
            pages = [
                page
                async for page in client.iter_member_pages(
                    "segment", source, page_size=10
                )
            ]
        elapsed = time.monotonic() - started

    assert sum(len(page) for page in pages) == 240
    assert world.klaviyo.throttled == 0
    assert sleeps.delays == []  # no 429 ever made the client back off
    assert world.klaviyo.requests - requests_before == 24
    # 24 calls at 8 per half second cannot take less than a second.
    assert elapsed >= 1.0


async def test_next_links_on_the_same_origin_are_recognised_however_spelt():
    body = {"links": {"next": "https://A.Klaviyo.com:443/api/lists/?page[cursor]=x"}}

    async with KlaviyoClient("pk_" + "1" * 34, limiter=RateLimiter(WIDE)) as client:
        assert client._next_link(body, "read the lists") == body["links"]["next"]
        for away in (
            "http://a.klaviyo.com/api/lists/",
            "https://a.klaviyo.com:8443/api/lists/",
            "https://a.klaviyo.com.example/api/lists/",
            "https://a.klaviyo.com:port/api/lists/",
        ):
            with pytest.raises(KlaviyoError, match="refusing"):
                client._next_link({"links": {"next": away}}, "read the lists")
