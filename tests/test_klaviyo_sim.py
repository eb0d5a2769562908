"""The Klaviyo simulator as a client sees it: over real loopback HTTP, bare httpx."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

from zaptui.klaviyo.client import REVISION
from zaptui.klaviyo.limiter import TIERS, Tier
from zaptui.sim.faults import FaultInjector
from zaptui.sim.klaviyo import KlaviyoSim
from zaptui.sim.seed import FAULT_KINDS
from zaptui.sim.serve import ServerHandle, serve_in_thread
from zaptui.sim.server import SimWorld

SEGMENT = "All UK customers"


class Switch:
    """One loopback server in front of whichever world the test made."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Switch, ServerHandle]]:
    switch = Switch()
    handle = serve_in_thread(switch)
    yield switch, handle
    handle.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def world(server: tuple[Switch, ServerHandle], clock: Clock) -> SimWorld:
    world = SimWorld.seeded(seed=21, profiles=300, monotonic=clock)
    server[0].app = world.app
    return world


@pytest.fixture
def base(server: tuple[Switch, ServerHandle]) -> str:
    return server[1].url


def key_of(world: SimWorld, name: str = "Acme Outdoor") -> str:
    return world.klaviyo.account(name).private_key


def signed_in(base: str, key: str, **options: Any) -> httpx.AsyncClient:
    """A plain HTTP client to the simulated Klaviyo with a key and the revision."""
    return httpx.AsyncClient(
        base_url=SimWorld.klaviyo_url(base),
        headers={"Authorization": f"Klaviyo-API-Key {key}", "revision": REVISION},
        **options,
    )


@pytest.fixture
async def http(world: SimWorld, base: str) -> AsyncIterator[httpx.AsyncClient]:
    async with signed_in(base, key_of(world), timeout=5) as client:
        client.headers["Accept"] = "application/vnd.api+json"
        yield client


@pytest.fixture
async def control(base: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{base}/_sim/klaviyo", timeout=5) as client:
        yield client


def members_url(world: SimWorld, name: str = SEGMENT) -> str:
    source = world.klaviyo.source("Acme Outdoor", name)
    plural = "lists" if source.kind == "list" else "segments"
    return f"/api/{plural}/{source.id}/profiles/"


def error_of(answer: httpx.Response) -> dict[str, Any]:
    return answer.json()["errors"][0]


async def walk(http: httpx.AsyncClient, url: str) -> list[dict[str, Any]]:
    """Every item, following links.next as given."""
    items: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        answer = await http.get(next_url)
        assert answer.status_code == 200, answer.text
        items += answer.json()["data"]
        next_url = answer.json()["links"]["next"]
    return items


def joined(items: list[dict[str, Any]]) -> list[str]:
    return [item["attributes"]["joined_group_at"] for item in items]


# -- the seeded world -----------------------------------------------------------


def test_a_seed_always_builds_the_same_world():
    first = KlaviyoSim.seeded(seed=8, profiles=120)
    second = KlaviyoSim.seeded(seed=8, profiles=120)
    other = KlaviyoSim.seeded(seed=9, profiles=120)

    assert first.describe_accounts() == second.describe_accounts()
    assert list(first.profiles) == list(second.profiles)
    assert first.describe_accounts() != other.describe_accounts()


def test_the_seeded_world_has_the_stated_accounts_sources_and_faulty_share():
    sim = KlaviyoSim.seeded(seed=8, profiles=240, faulty_share=0.25)
    accounts = {account["name"]: account for account in sim.describe_accounts()}

    assert set(accounts) == {"Acme Outdoor", "Borough Books", "Closed Shop Ltd"}
    acme = accounts["Acme Outdoor"]
    assert [s["name"] for s in acme["lists"]] == ["Newsletter", "VIP Customers"]
    assert [s["name"] for s in acme["segments"]] == ["Lapsed 90 days", SEGMENT]
    assert acme["segments"][1]["members"] == 240
    assert "segments:read" not in accounts["Borough Books"]["scopes"]
    assert accounts["Closed Shop Ltd"]["revoked"] is True
    assert all(a["private_key"].startswith("pk_") for a in accounts.values())
    acme_faults = [
        p.fault for p in sim.profiles.values() if p.account_id == acme["id"] and p.fault
    ]
    assert len(acme_faults) == 60
    assert set(acme_faults) == set(FAULT_KINDS)


# -- paging, sorting, filtering ------------------------------------------------


async def test_members_come_twenty_a_page_by_default_oldest_first(http, world):
    answer = await http.get(members_url(world))

    body = answer.json()
    assert len(body["data"]) == 20
    assert body["links"]["prev"] is None
    assert body["links"]["next"].startswith(f"{http.base_url}api/segments/")
    assert joined(body["data"]) == sorted(joined(body["data"]))
    assert body["data"][0]["links"]["self"].endswith(
        f"/api/profiles/{body['data'][0]['id']}/"
    )


async def test_following_next_visits_every_member_once_in_order(http, world):
    items = await walk(http, members_url(world) + "?page[size]=100")

    expected = world.klaviyo.members("Acme Outdoor", SEGMENT)
    assert [item["id"] for item in items] == [pid for pid, _ in expected]
    assert joined(items) == [at.isoformat() for _, at in expected]


async def test_prev_leads_back_to_the_page_before(http, world):
    first = (await http.get(members_url(world) + "?page[size]=7")).json()
    second = (await http.get(first["links"]["next"])).json()

    back = (await http.get(second["links"]["prev"])).json()

    assert [item["id"] for item in back["data"]] == [
        item["id"] for item in first["data"]
    ]


async def test_next_links_keep_the_query_and_carry_an_opaque_cursor(http, world):
    url = members_url(world) + "?page[size]=50&sort=joined_group_at"

    body = (await http.get(url)).json()

    query = parse_qs(urlsplit(body["links"]["next"]).query)
    assert query["page[size]"] == ["50"]
    assert query["sort"] == ["joined_group_at"]
    cursor = query["page[cursor]"][0]
    assert all(ch.isalnum() or ch in "-_" for ch in cursor)


async def test_a_tampered_cursor_gets_a_400(http, world):
    body = (await http.get(members_url(world))).json()
    cursor = parse_qs(urlsplit(body["links"]["next"]).query)["page[cursor]"][0]
    forged = base64.urlsafe_b64encode(b'["z", 1]').decode().rstrip("=")

    for bad in (cursor[:-3], forged, "%%%"):
        answer = await http.get(members_url(world), params={"page[cursor]": bad})
        assert answer.status_code == 400
        assert error_of(answer)["source"] == {"parameter": "page[cursor]"}


async def test_page_size_over_the_maximum_gets_a_400(http, world):
    members = await http.get(members_url(world) + "?page[size]=101")
    lists = await http.get("/api/lists/?page[size]=11")
    hundred = await http.get(members_url(world) + "?page[size]=100")

    assert members.status_code == 400
    assert error_of(members)["code"] == "invalid"
    assert error_of(members)["source"] == {"parameter": "page[size]"}
    assert "between 1 and 100" in error_of(members)["detail"]
    assert lists.status_code == 400
    assert "between 1 and 10" in error_of(lists)["detail"]
    assert len(hundred.json()["data"]) == 100


@pytest.mark.parametrize(
    ("operator", "keeps"),
    [
        ("greater-than", lambda i, n: i > n),
        ("greater-or-equal", lambda i, n: i >= n),
        ("less-than", lambda i, n: i < n),
        ("less-or-equal", lambda i, n: i <= n),
    ],
)
async def test_joined_group_at_filters_compare_as_klaviyo_does(
    http, world, operator, keeps
):
    members = world.klaviyo.members("Acme Outdoor", SEGMENT)
    pivot = 120
    moment = members[pivot][1].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    query = quote(f"{operator}(joined_group_at,{moment})", safe="")

    items = await walk(http, members_url(world) + f"?page[size]=100&filter={query}")

    assert [item["id"] for item in items] == [
        pid for index, (pid, _) in enumerate(members) if keeps(index, pivot)
    ]


async def test_filters_combine_with_and_and_sort_newest_first(http, world):
    members = world.klaviyo.members("Acme Outdoor", SEGMENT)
    low, high = members[50][1].isoformat(), members[60][1].isoformat()
    query = quote(
        f"and(greater-than(joined_group_at,{low}),less-or-equal(joined_group_at,{high}))",
        safe="",
    )

    items = await walk(
        http, members_url(world) + f"?sort=-joined_group_at&page[size]=3&filter={query}"
    )

    assert [item["id"] for item in items] == [pid for pid, _ in members[51:61]][::-1]


async def test_a_filter_klaviyo_would_not_accept_gets_a_400(http, world):
    for text in (
        "greater-than(joined_group_at,'2026-05-01')",
        "greater-than(email,2026-05-01T00:00:00Z)",
        "equals(joined_group_at,2026-05-01T00:00:00Z)",
    ):
        answer = await http.get(members_url(world), params={"filter": text})
        assert answer.status_code == 400
        assert error_of(answer)["source"] == {"parameter": "filter"}


# -- authentication, revision, scopes ------------------------------------------


async def test_a_missing_revision_header_gets_a_400(world, base):
    async with httpx.AsyncClient(base_url=SimWorld.klaviyo_url(base)) as bare:
        missing = await bare.get(
            "/api/lists/", headers={"Authorization": f"Klaviyo-API-Key {key_of(world)}"}
        )
        malformed = await bare.get(
            "/api/lists/",
            headers={
                "Authorization": f"Klaviyo-API-Key {key_of(world)}",
                "revision": "July 2026",
            },
        )

    assert missing.status_code == 400
    assert error_of(missing)["detail"] == "Missing required header: revision."
    assert error_of(missing)["source"] == {"parameter": "revision"}
    assert malformed.status_code == 400


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer pk_abc", "Klaviyo-API-Key", "Klaviyo-API-Key pk_" + "0" * 34],
)
async def test_a_missing_malformed_or_unknown_key_gets_a_401(
    world, base, authorization
):
    headers = {"revision": REVISION}
    if authorization is not None:
        headers["Authorization"] = authorization
    async with httpx.AsyncClient(base_url=SimWorld.klaviyo_url(base)) as bare:
        answer = await bare.get("/api/accounts/", headers=headers)

    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/vnd.api+json"
    assert error_of(answer)["code"] == "not_authenticated"


async def test_a_revoked_key_gets_a_401(world, base):
    async with httpx.AsyncClient(base_url=SimWorld.klaviyo_url(base)) as bare:
        answer = await bare.get(
            "/api/lists/",
            headers={
                "Authorization": f"Klaviyo-API-Key {key_of(world, 'Closed Shop Ltd')}",
                "revision": REVISION,
            },
        )

    assert answer.status_code == 401
    assert error_of(answer)["detail"] == "The API key specified is invalid."


async def test_a_key_without_a_scope_gets_a_403_naming_it(world, base):
    async with signed_in(base, key_of(world, "Borough Books")) as books:
        lists = await books.get("/api/lists/")
        segments = await books.get("/api/segments/")

    assert lists.status_code == 200
    assert segments.status_code == 403
    assert error_of(segments)["code"] == "permission_denied"
    assert error_of(segments)["detail"] == (
        "This API key is missing required scopes: segments:read."
    )


async def test_an_account_sees_only_its_own_sources(world, base):
    acme_segment = members_url(world)
    async with signed_in(base, key_of(world, "Borough Books")) as books:
        lists = (await books.get("/api/lists/")).json()
        other = await books.get(acme_segment.replace("segments", "lists"))

    assert [item["attributes"]["name"] for item in lists["data"]] == ["Book Club"]
    assert other.status_code == 404


# -- rate limits ---------------------------------------------------------------


async def test_each_tier_has_its_burst_window_and_says_when_to_come_back(
    http, world, clock
):
    accounts = [await http.get("/api/accounts/") for _ in range(2)]
    lists = [await http.get("/api/lists/") for _ in range(3)]

    assert accounts[0].status_code == 200
    assert accounts[0].headers["RateLimit-Limit"] == "15"
    assert accounts[0].headers["RateLimit-Remaining"] == "14"
    assert accounts[1].status_code == 429
    assert accounts[1].headers["Retry-After"] == "1"
    assert error_of(accounts[1])["detail"] == (
        "Request was throttled. Expected available in 1 second."
    )
    assert [answer.status_code for answer in lists] == [200, 200, 200]

    clock.now += 1.0
    assert (await http.get("/api/accounts/")).status_code == 200


async def test_the_steady_window_refuses_until_the_minute_is_over(http, world, clock):
    statuses = []
    for _ in range(16):
        statuses.append((await http.get("/api/accounts/")).status_code)
        clock.now += 1.0

    answer = await http.get("/api/accounts/")

    assert statuses == [200] * 15 + [429]
    assert answer.status_code == 429
    # 16 s into the minute that began when the simulator did
    assert int(answer.headers["Retry-After"]) == 44
    clock.now += 44
    assert (await http.get("/api/accounts/")).status_code == 200


async def test_asking_for_predictive_analytics_drops_to_a_stricter_tier(
    http, world, clock
):
    url = members_url(world) + "?additional-fields[profile]=predictive_analytics"

    statuses = [(await http.get(url)).status_code for _ in range(11)]

    assert statuses == [200] * 10 + [429]
    assert (await http.get(members_url(world))).status_code == 200


async def test_rate_limits_can_be_switched_off_through_the_control_api(
    http, control, world
):
    await control.post("/rate-limits", json={"enabled": False})

    statuses = [(await http.get("/api/accounts/")).status_code for _ in range(5)]

    assert statuses == [200] * 5
    assert "RateLimit-Limit" not in (await http.get("/api/accounts/")).headers


# -- membership through the control API and over time -------------------------


async def test_joins_and_leaves_through_the_control_api_change_the_members(
    http, control, world
):
    acme = world.klaviyo.account("Acme Outdoor")
    before = await walk(http, members_url(world, "VIP Customers"))

    joined_ids = (
        await control.post(
            "/join", json={"account": acme.id, "source": "VIP Customers", "count": 3}
        )
    ).json()["joined"]
    left = await control.post(
        "/leave",
        json={
            "account": acme.name,
            "source": "VIP Customers",
            "profile_ids": [before[0]["id"]],
        },
    )
    after = await walk(http, members_url(world, "VIP Customers"))

    assert left.json() == {"removed": 1}
    # Members who joined in the same moment come in id order.
    assert [item["id"] for item in after] == [
        item["id"] for item in before[1:]
    ] + sorted(joined_ids)
    accounts = (await control.get("/accounts")).json()["accounts"]
    vip = next(s for s in accounts[0]["lists"] if s["name"] == "VIP Customers")
    assert vip["members"] == len(before) + 2


async def test_a_rejoin_gets_a_new_joined_group_at(http, control, world):
    first = (await http.get(members_url(world) + "?page[size]=1")).json()["data"][0]

    await control.post(
        "/join",
        json={
            "account": "Acme Outdoor",
            "source": SEGMENT,
            "profile_ids": [first["id"]],
        },
    )
    items = await walk(http, members_url(world) + "?page[size]=100")

    assert items[-1]["id"] == first["id"]
    assert (
        items[-1]["attributes"]["joined_group_at"]
        > (first["attributes"]["joined_group_at"])
    )
    assert [item["id"] for item in items].count(first["id"]) == 1


async def test_held_back_members_appear_on_reveal_with_their_old_time(
    http, control, world
):
    at = world.klaviyo.members("Acme Outdoor", "Lapsed 90 days")[-1][1] - timedelta(
        hours=2
    )
    joined_ids = (
        await control.post(
            "/join",
            json={
                "account": "Acme Outdoor",
                "source": "Lapsed 90 days",
                "count": 2,
                "at": at.isoformat(),
                "visible": False,
            },
        )
    ).json()["joined"]
    hidden = await walk(http, members_url(world, "Lapsed 90 days"))

    revealed = await control.post(
        "/reveal", json={"account": "Acme Outdoor", "source": "Lapsed 90 days"}
    )
    shown = {
        item["id"]: item["attributes"]["joined_group_at"]
        for item in await walk(http, members_url(world, "Lapsed 90 days"))
    }

    assert not set(joined_ids) & {item["id"] for item in hidden}
    assert revealed.json() == {"revealed": 2}
    assert [shown[pid] for pid in joined_ids] == [at.isoformat()] * 2


async def test_a_tick_adds_customers_and_a_late_joiner(control, world):
    sizes = {
        name: len(world.klaviyo.members("Acme Outdoor", name))
        for name in (SEGMENT, "Newsletter", "Lapsed 90 days")
    }

    answer = await control.post("/tick")

    # New customers join the all-customers segment whatever else they join.
    assert answer.json() == {"joined": 6}
    assert len(world.klaviyo.members("Acme Outdoor", SEGMENT)) == sizes[SEGMENT] + 6
    assert len(world.klaviyo.members("Acme Outdoor", "Newsletter")) == (
        sizes["Newsletter"] + 2
    )
    lapsed = world.klaviyo.members("Acme Outdoor", "Lapsed 90 days")
    assert len(lapsed) == sizes["Lapsed 90 days"] + 1


async def test_membership_changes_over_time_once_churn_is_on(
    http, control, world, clock
):
    size = len(world.klaviyo.members("Acme Outdoor", SEGMENT))
    answer = await control.post("/churn", json={"interval_seconds": 30})
    await http.get("/api/lists/")
    unchanged = len(world.klaviyo.members("Acme Outdoor", SEGMENT))

    clock.now += 65
    await http.get("/api/lists/")
    grown = len(world.klaviyo.members("Acme Outdoor", SEGMENT))
    await control.post("/churn", json={"interval_seconds": None})
    clock.now += 600
    await http.get("/api/lists/")

    assert answer.json() == {"interval_seconds": 30}
    assert unchanged == size
    assert grown == size + 2 * 6  # two intervals of 6 new customers
    assert len(world.klaviyo.members("Acme Outdoor", SEGMENT)) == grown
    bad = await control.post("/churn", json={"interval_seconds": -1})
    assert bad.status_code == 400


# -- write-back ----------------------------------------------------------------


async def test_a_location_patch_changes_the_profile_and_is_kept(http, control, world):
    profile_id = world.klaviyo.members("Acme Outdoor", SEGMENT)[0][0]
    document = {
        "data": {
            "type": "profile",
            "id": profile_id,
            "attributes": {"location": {"zip": "EC1A 1BB", "address2": None}},
        }
    }

    answer = await http.patch(f"/api/profiles/{profile_id}/", json=document)
    first_joined = world.klaviyo.members("Acme Outdoor", SEGMENT)[0][1].isoformat()
    query = quote(f"less-or-equal(joined_group_at,{first_joined})", safe="")
    page = await walk(http, members_url(world) + f"?page[size]=1&filter={query}")
    updates = (await control.get("/location-updates")).json()["location_updates"]

    assert answer.status_code == 200
    assert page[0]["attributes"]["location"]["zip"] == "EC1A 1BB"
    assert page[0]["attributes"]["location"]["city"]  # the rest is kept
    assert updates[-1]["profile_id"] == profile_id
    assert updates[-1]["location"] == {"zip": "EC1A 1BB", "address2": None}


async def test_a_patch_over_100_kb_gets_a_400(http, world):
    profile_id = world.klaviyo.members("Acme Outdoor", SEGMENT)[0][0]
    document = {
        "data": {
            "type": "profile",
            "id": profile_id,
            "attributes": {"location": {"address1": "x" * (101 * 1024)}},
        }
    }

    answer = await http.patch(f"/api/profiles/{profile_id}/", json=document)

    assert answer.status_code == 400
    assert "larger than 100 KB" in error_of(answer)["detail"]


def event(profile_id: str, unique_id: str | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "properties": {"field": "zip"},
        "metric": {
            "data": {"type": "metric", "attributes": {"name": "Address Updated"}}
        },
        "profile": {"data": {"type": "profile", "id": profile_id, "attributes": {}}},
    }
    if unique_id is not None:
        attributes["unique_id"] = unique_id
    return {"data": {"type": "event", "attributes": attributes}}


async def test_events_are_kept_once_per_unique_id(http, control, world):
    profile_id = world.klaviyo.members("Acme Outdoor", SEGMENT)[1][0]

    statuses = [
        (await http.post("/api/events/", json=event(profile_id, unique))).status_code
        for unique in ("a", "a", "b")
    ]
    events = (await control.get("/events")).json()["events"]

    assert statuses == [202, 202, 202]
    assert [e["profile_id"] for e in events] == [profile_id, profile_id]


async def test_events_without_a_unique_id_are_kept_once_per_second(http, world):
    profile_id = world.klaviyo.members("Acme Outdoor", SEGMENT)[2][0]

    for _ in range(3):
        await http.post("/api/events/", json=event(profile_id, None))

    kept = [e for e in world.klaviyo.events if e.profile_id == profile_id]
    assert 1 <= len(kept) <= 2  # the three may straddle a second boundary


# -- fault injection -----------------------------------------------------------


async def test_a_429_storm_with_and_without_retry_after(http, control, world):
    added = await control.post(
        "/faults",
        json={"endpoint": "lists", "kind": "429", "count": 2, "options": {}},
    )
    await control.post(
        "/faults",
        json={
            "endpoint": "GET /api/lists",
            "kind": "429",
            "count": 1,
            "options": {"retry_after": None, "wait": 4},
        },
    )

    answers = [await http.get("/api/lists/") for _ in range(4)]

    assert added.status_code == 201
    assert [a.status_code for a in answers] == [429, 429, 429, 200]
    assert answers[0].headers["Retry-After"] == "1"
    assert "retry-after" not in answers[2].headers
    assert error_of(answers[2])["detail"] == (
        "Request was throttled. Expected available in 4 seconds."
    )
    assert (await control.get("/faults")).json() == {"faults": []}


async def test_server_errors_slowness_and_skips(http, world):
    world.faults.add("klaviyo", "segment_profiles", "5xx", 1, skip=1, status=502)
    world.faults.add("klaviyo", "/api/lists*", "slow", 1, delay=0.3)

    first = await http.get(members_url(world))
    second = await http.get(members_url(world))
    started = time.monotonic()
    slow = await http.get("/api/lists/")
    took = time.monotonic() - started

    assert first.status_code == 200
    assert second.status_code == 502
    assert error_of(second)["code"] == "error"
    assert slow.status_code == 200
    assert took >= 0.3


async def test_a_dropped_connection_cuts_the_answer_off(http, world):
    world.faults.add("klaviyo", "segment_profiles", "drop", 1)

    with pytest.raises(httpx.RemoteProtocolError):
        await http.get(members_url(world))
    assert (await http.get(members_url(world))).status_code == 200


async def test_malformed_json_and_an_html_403(http, world):
    world.faults.add("klaviyo", "segment_profiles", "malformed", 1)
    world.faults.add("klaviyo", "segment_profiles", "html403", 1)

    garbled = await http.get(members_url(world))
    blocked = await http.get(members_url(world))

    assert garbled.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        garbled.json()
    assert blocked.status_code == 403
    assert blocked.headers["content-type"].startswith("text/html")
    assert b"<html>" in blocked.content


async def test_faults_for_one_service_leave_the_other_alone(world, base):
    faults = world.faults
    faults.add("zappost", "*", "5xx", None)

    async with signed_in(base, key_of(world)) as http:
        answer = await http.get("/api/lists/")

    assert answer.status_code == 200
    faults.clear("zappost")
    assert faults.rules() == []


def test_a_fault_of_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown fault kind"):
        FaultInjector().add("klaviyo", "*", "teapot")


async def test_the_simulator_can_run_with_custom_tiers(base, server):
    tiers = {name: Tier(name, 1, 2) for name in TIERS}
    world = SimWorld.seeded(seed=2, profiles=10, tiers=tiers)
    server[0].app = world.app
    async with signed_in(base, key_of(world)) as http:
        first = await http.get("/api/lists/")
        second = await http.get("/api/lists/")

    assert first.headers["RateLimit-Limit"] == "2"
    assert second.status_code == 429
    assert world.klaviyo.throttled == 1
