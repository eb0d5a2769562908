"""Every Klaviyo simulator answer, checked against Klaviyo's own OpenAPI slices.

The slices (tests/data/klaviyo-openapi, or $ZAPTUI_KLAVIYO_OPENAPI)
are OpenAPI 3.0 documents. Their schemas become JSON Schema here: `nullable`
turns into a null alternative, `$ref`s resolve against the document itself, and
`date-time` and `uri` formats are checked. One relaxation, on purpose: the
reference notes say `links.next` and `links.prev` are null on the first and
last pages, which the spec's CollectionLinks leaves out, so those two may be
null. Beyond validation, the simulator may send no field the spec does not
document, apart from the `status`, `links` and `meta` that Klaviyo's real
error objects carry.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from jsonschema import Draft7Validator, FormatChecker

from zaptui.apilog import DatabaseApiLog
from zaptui.klaviyo.client import REVISION, KlaviyoClient
from zaptui.klaviyo.limiter import TIERS, RateLimiter, Tier
from zaptui.sim.klaviyo import MAX_PATCH_BYTES
from zaptui.sim.server import SimWorld
from zaptui.store.models import ApiLogEntry

SLICES = Path(
    os.environ.get(
        "ZAPTUI_KLAVIYO_OPENAPI", Path(__file__).parent / "data" / "klaviyo-openapi"
    )
)
OPERATIONS = (
    "get_accounts",
    "get_lists",
    "get_segments",
    "get_profiles_for_list",
    "get_profiles_for_segment",
    "update_profile",
    "create_event",
)
# Klaviyo's error objects carry these too (see the 429 body in the reference).
ERROR_EXTRAS = {"status", "links", "meta"}
pytestmark = pytest.mark.skipif(
    not SLICES.is_dir(), reason=f"Klaviyo's OpenAPI slices are not at {SLICES}"
)

formats = FormatChecker()
_DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
)


@formats.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    if isinstance(value, str):
        if not _DATE_TIME.match(value):
            raise ValueError(f"not an RFC 3339 date-time: {value!r}")
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


@formats.checks("uri", raises=ValueError)
def _is_uri(value: object) -> bool:
    if isinstance(value, str):
        parts = urlsplit(value)
        if not parts.scheme or not parts.netloc:
            raise ValueError(f"not an absolute URI: {value!r}")
    return True


def as_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 schema objects turned into JSON Schema (draft 7)."""
    if isinstance(node, list):
        return [as_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {
        key: as_json_schema(value)
        for key, value in node.items()
        if key not in ("nullable", "example", "description")
    }
    if node.get("nullable") is True:
        if "type" in out and not {"$ref", "oneOf", "anyOf", "allOf", "enum"} & set(out):
            out["type"] = [out["type"], "null"]
        else:
            return {"anyOf": [out, {"type": "null"}]}
    return out


def load_operations() -> dict[str, dict[str, Any]]:
    """operationId -> {"document", "path", "method", "operation"}."""
    found: dict[str, dict[str, Any]] = {}
    for name in OPERATIONS:
        document = as_json_schema(json.loads((SLICES / f"{name}.json").read_text()))
        links = document["components"]["schemas"].get("CollectionLinks")
        if links:
            for direction in ("next", "prev"):
                links["properties"][direction] = {
                    "anyOf": [links["properties"][direction], {"type": "null"}]
                }
        for path, methods in document["paths"].items():
            for method, operation in methods.items():
                found[operation["operationId"]] = {
                    "document": document,
                    "path": path,
                    "method": method.upper(),
                    "operation": operation,
                }
    return found


OPENAPI = load_operations() if SLICES.is_dir() else {}


def resolve(document: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = document
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def response_schema(operation_id: str, status: int) -> dict[str, Any] | None:
    """The JSON schema of an operation's answer with this status, if it has one."""
    entry = OPENAPI[operation_id]
    document, responses = entry["document"], entry["operation"]["responses"]
    key = str(status) if str(status) in responses else f"{str(status)[0]}XX"
    assert key in responses, f"{operation_id} documents no {status} answer"
    response = responses[key]
    response = resolve(document, response)
    content = response.get("content")
    if not content:
        return None
    return content["application/vnd.api+json"]["schema"]


def request_schema(operation_id: str) -> dict[str, Any]:
    body = OPENAPI[operation_id]["operation"]["requestBody"]
    return body["content"]["application/vnd.api+json"]["schema"]


def validate(operation_id: str, schema: dict[str, Any], instance: Any) -> None:
    """Fail with every schema violation, each with where it is."""
    document = OPENAPI[operation_id]["document"]
    validator = Draft7Validator(
        {**document, "$ref": "#/x-checked", "x-checked": schema},
        format_checker=formats,
    )
    problems = [
        f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in validator.iter_errors(instance)
    ]
    problems += undocumented(document, schema, instance)
    assert not problems, f"{operation_id}:\n  " + "\n  ".join(problems[:20])


def properties_of(document: dict[str, Any], schema: Any) -> dict[str, Any] | None:
    """The documented properties of an object schema, across allOf/anyOf/oneOf."""
    schema = resolve(document, schema)
    if not isinstance(schema, dict):
        return None
    found: dict[str, Any] | None = None
    if "properties" in schema:
        found = dict(schema["properties"])
    for key in ("allOf", "anyOf", "oneOf"):
        for part in schema.get(key, []):
            more = properties_of(document, part)
            if more is not None:
                found = {**(found or {}), **more}
    return found


def undocumented(
    document: dict[str, Any], schema: Any, instance: Any, where: str = ""
) -> list[str]:
    """Fields the answer has that its schema does not mention."""
    schema = resolve(document, schema)
    if isinstance(instance, list):
        items = schema.get("items") if isinstance(schema, dict) else None
        if items is None:
            for key in ("anyOf", "oneOf", "allOf"):
                for part in schema.get(key, []) if isinstance(schema, dict) else []:
                    part = resolve(document, part)
                    if isinstance(part, dict) and "items" in part:
                        items = part["items"]
        if items is None:
            return []
        return [
            problem
            for index, item in enumerate(instance)
            for problem in undocumented(document, items, item, f"{where}/{index}")
        ]
    if not isinstance(instance, dict):
        return []
    known = properties_of(document, schema)
    if known is None:
        return []  # a free-form object, such as a profile's properties
    problems = []
    for key, value in instance.items():
        if key not in known:
            if not (where.startswith("/errors/") and key in ERROR_EXTRAS):
                problems.append(f"{where}/{key}: not in the spec")
            continue
        problems += undocumented(document, known[key], value, f"{where}/{key}")
    return problems


@pytest.fixture
def world() -> SimWorld:
    world = SimWorld.seeded(seed=5, profiles=450, faulty_share=0.2, rate_limits=False)
    for number in range(12):
        world.klaviyo.add_source("Acme Outdoor", "list", f"Catalogue {number:02d}")
    return world


def headers_for(key: str | None, **extra: str) -> dict[str, str]:
    headers = {"revision": REVISION, "Accept": "application/vnd.api+json"}
    if key is not None:
        headers["Authorization"] = f"Klaviyo-API-Key {key}"
    headers.update(extra)
    return headers


@pytest.fixture
async def http(world: SimWorld) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=world.transport(),
        base_url="http://klaviyo.sim/klaviyo",
        headers=headers_for(world.klaviyo.account("Acme Outdoor").private_key),
    ) as client:
        yield client


def check(operation_id: str, answer: httpx.Response, status: int) -> Any:
    """Assert the status and media type, validate the body; the body."""
    assert answer.status_code == status, answer.text[:500]
    schema = response_schema(operation_id, status)
    if schema is None:
        assert answer.content == b""
        return None
    assert answer.headers["content-type"].startswith("application/vnd.api+json")
    body = answer.json()
    validate(operation_id, schema, body)
    return body


async def every_page(
    http: httpx.AsyncClient, operation_id: str, url: str
) -> list[dict[str, Any]]:
    bodies = []
    next_url: str | None = url
    while next_url:
        body = check(operation_id, await http.get(next_url), 200)
        bodies.append(body)
        next_url = body["links"].get("next")
    return bodies


def ids(world: SimWorld, kind: str, name: str) -> str:
    return world.klaviyo.source("Acme Outdoor", name).id


# -- answers that succeed -------------------------------------------------------


async def test_account_answer_matches_the_spec(http):
    body = check("get_accounts", await http.get("/api/accounts/"), 200)

    assert body["data"][0]["type"] == "account"


async def test_every_page_of_lists_and_segments_matches_the_spec(http):
    lists = await every_page(http, "get_lists", "/api/lists/?page[size]=5")
    segments = await every_page(http, "get_segments", "/api/segments/")

    assert [len(body["data"]) for body in lists] == [5, 5, 4]
    assert len(segments) == 1 and len(segments[0]["data"]) == 2


async def test_every_member_page_of_a_segment_matches_the_spec(http, world):
    # All 450 profiles, a fifth of them faulty (nulls, empty and odd names).
    url = f"/api/segments/{ids(world, 'segment', 'All UK customers')}/profiles/"
    pages = await every_page(http, "get_profiles_for_segment", url + "?page[size]=100")

    assert sum(len(body["data"]) for body in pages) == 450
    assert pages[0]["links"]["prev"] is None and pages[-1]["links"]["next"] is None


async def test_member_pages_of_a_list_match_the_spec_sorted_and_filtered(http, world):
    newsletter = ids(world, "list", "Newsletter")
    since = world.klaviyo.members("Acme Outdoor", "Newsletter")[20][1]
    query = (
        "?page[size]=30&sort=-joined_group_at&filter="
        + f"greater-or-equal(joined_group_at,{since.isoformat()})".replace("+", "%2B")
    )

    pages = await every_page(
        http, "get_profiles_for_list", f"/api/lists/{newsletter}/profiles/{query}"
    )

    joined = [p["attributes"]["joined_group_at"] for b in pages for p in b["data"]]
    assert joined == sorted(joined, reverse=True)
    assert joined[-1] == since.isoformat()


async def test_profile_update_answer_matches_the_spec(http, world):
    profile_id = world.klaviyo.members("Acme Outdoor", "Newsletter")[0][0]
    document = {
        "data": {
            "type": "profile",
            "id": profile_id,
            "attributes": {"location": {"zip": "N1 9GU", "city": "London"}},
        }
    }
    validate("update_profile", request_schema("update_profile"), document)

    body = check(
        "update_profile",
        await http.patch(
            f"/api/profiles/{profile_id}/",
            json=document,
            headers={"Content-Type": "application/vnd.api+json"},
        ),
        200,
    )

    assert body["data"]["attributes"]["location"]["zip"] == "N1 9GU"


async def test_event_creation_answers_202_with_no_body(http, world):
    profile_id = world.klaviyo.members("Acme Outdoor", "Newsletter")[0][0]
    document = {
        "data": {
            "type": "event",
            "attributes": {
                "properties": {"field": "zip"},
                "metric": {
                    "data": {
                        "type": "metric",
                        "attributes": {"name": "Address Updated"},
                    }
                },
                "profile": {
                    "data": {"type": "profile", "id": profile_id, "attributes": {}}
                },
            },
        }
    }
    validate("create_event", request_schema("create_event"), document)

    check("create_event", await http.post("/api/events/", json=document), 202)


# -- error answers --------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation_id", "method", "url_of"),
    [
        ("get_accounts", "GET", lambda w: "/api/accounts/"),
        ("get_lists", "GET", lambda w: "/api/lists/"),
        ("get_segments", "GET", lambda w: "/api/segments/"),
        (
            "get_profiles_for_list",
            "GET",
            lambda w: f"/api/lists/{ids(w, 'list', 'Newsletter')}/profiles/",
        ),
        (
            "get_profiles_for_segment",
            "GET",
            lambda w: f"/api/segments/{ids(w, 'segment', 'Lapsed 90 days')}/profiles/",
        ),
        ("update_profile", "PATCH", lambda w: "/api/profiles/01NOSUCH/"),
        ("create_event", "POST", lambda w: "/api/events/"),
    ],
)
@pytest.mark.parametrize(
    "credentials",
    ["none", "wrong scheme", "unknown key", "revoked key", "no revision"],
)
async def test_refusals_of_every_endpoint_match_the_spec(
    http, world, operation_id, method, url_of, credentials
):
    revoked = world.klaviyo.account("Closed Shop Ltd").private_key
    headers = {
        "none": headers_for(None),
        "wrong scheme": {**headers_for(None), "Authorization": f"Bearer {revoked}"},
        "unknown key": headers_for("pk_" + "0" * 34),
        "revoked key": headers_for(revoked),
        "no revision": {
            "Authorization": http.headers["Authorization"],
            "Accept": "application/vnd.api+json",
        },
    }[credentials]
    expected = 400 if credentials == "no revision" else 401

    answer = await httpx.AsyncClient(
        transport=world.transport(), base_url="http://klaviyo.sim/klaviyo"
    ).request(method, url_of(world), headers=headers, json={})

    body = check(operation_id, answer, expected)
    error = body["errors"][0]
    assert error["code"] == ("invalid" if expected == 400 else "not_authenticated")


async def test_missing_scope_answers_match_the_spec(world):
    books = world.klaviyo.account("Borough Books")
    recent = world.klaviyo.source(books, "Recent buyers").id
    async with httpx.AsyncClient(
        transport=world.transport(),
        base_url="http://klaviyo.sim/klaviyo",
        headers=headers_for(books.private_key),
    ) as http:
        for operation_id, url in (
            ("get_segments", "/api/segments/"),
            ("get_profiles_for_segment", f"/api/segments/{recent}/profiles/"),
        ):
            body = check(operation_id, await http.get(url), 403)
            assert body["errors"][0]["code"] == "permission_denied"
            assert "segments:read" in body["errors"][0]["detail"]


@pytest.mark.parametrize(
    ("operation_id", "query"),
    [
        ("get_lists", "page[size]=11"),
        ("get_lists", "page[cursor]=not-a-cursor"),
        ("get_profiles_for_segment", "page[size]=101"),
        ("get_profiles_for_segment", "page[size]=0"),
        ("get_profiles_for_segment", "sort=email"),
        ("get_profiles_for_segment", "filter=equals(joined_group_at,yesterday)"),
        ("get_profiles_for_segment", "page[cursor]=eyJ4IjoxfQ"),
    ],
)
async def test_invalid_queries_answer_400_as_the_spec_says(
    http, world, operation_id, query
):
    path = {
        "get_lists": "/api/lists/",
        "get_profiles_for_segment": (
            f"/api/segments/{ids(world, 'segment', 'All UK customers')}/profiles/"
        ),
    }[operation_id]

    body = check(operation_id, await http.get(f"{path}?{query}"), 400)

    assert body["errors"][0]["code"] == "invalid"
    assert body["errors"][0]["source"]["parameter"]


async def test_unknown_sources_and_profiles_answer_404_as_the_spec_says(http):
    for operation_id, call in (
        ("get_profiles_for_list", http.get("/api/lists/NoSuch/profiles/")),
        ("get_profiles_for_segment", http.get("/api/segments/NoSuch/profiles/")),
        (
            "update_profile",
            http.patch(
                "/api/profiles/01NOSUCH/",
                json={"data": {"type": "profile", "id": "01NOSUCH", "attributes": {}}},
            ),
        ),
    ):
        body = check(operation_id, await call, 404)
        assert body["errors"][0]["code"] == "not_found"


async def test_invalid_writes_answer_400_as_the_spec_says(http, world):
    profile_id = world.klaviyo.members("Acme Outdoor", "Newsletter")[0][0]
    too_big = {"zip": "N1 1AA", "address2": "x" * MAX_PATCH_BYTES}
    for document in (
        {"data": {"type": "profile", "id": profile_id, "attributes": {"shoe": 9}}},
        {"data": {"type": "profile", "id": "01OTHER", "attributes": {}}},
        {
            "data": {
                "type": "profile",
                "id": profile_id,
                "attributes": {"location": too_big},
            }
        },
    ):
        check(
            "update_profile",
            await http.patch(f"/api/profiles/{profile_id}/", json=document),
            400,
        )
    check("create_event", await http.post("/api/events/", json={"data": {}}), 400)
    without_attributes = {
        "data": {
            "type": "event",
            "attributes": {
                "properties": {},
                "metric": {"data": {"type": "metric", "attributes": {"name": "X"}}},
                "profile": {"data": {"type": "profile", "id": profile_id}},
            },
        }
    }
    body = check(
        "create_event", await http.post("/api/events/", json=without_attributes), 400
    )
    assert body["errors"][0]["source"]["pointer"].endswith("/profile/data/attributes")


async def test_throttled_answers_match_the_spec(world):
    tiers = {name: Tier(name, 2, 100) for name in TIERS}
    limited = SimWorld.seeded(seed=5, profiles=30, tiers=tiers)
    async with httpx.AsyncClient(
        transport=limited.transport(),
        base_url="http://klaviyo.sim/klaviyo",
        headers=headers_for(limited.klaviyo.account("Acme Outdoor").private_key),
    ) as http:
        answers = [await http.get("/api/lists/") for _ in range(3)]

    check("get_lists", answers[0], 200)
    assert answers[0].headers["RateLimit-Limit"] == "100"
    body = check("get_lists", answers[2], 429)
    assert body["errors"][0]["code"] == "throttled"
    assert answers[2].headers["Retry-After"] == "1"


# -- what the client sends ------------------------------------------------------


async def test_the_clients_write_back_requests_match_the_spec(db, world):
    profile_id = world.klaviyo.members("Acme Outdoor", "Newsletter")[0][0]
    async with KlaviyoClient(
        world.klaviyo.account("Acme Outdoor").private_key,
        base_url="http://klaviyo.sim/klaviyo",
        transport=world.transport(),
        api_log=DatabaseApiLog(),
        limiter=RateLimiter({name: Tier(name, 10**6, 10**6) for name in TIERS}),
    ) as client:
        await client.update_profile_location(
            profile_id,
            {
                "address1": "1 Mill Lane",
                "address2": None,
                "city": "Oxford",
                "country": "United Kingdom",
                "region": "Oxfordshire",
                "zip": "OX1 1AA",
                "latitude": None,
                "longitude": None,
                "timezone": "Europe/London",
                "ip": None,
            },
        )
        await client.create_event(profile_id, "Address Updated", {"zip": "OX1 1AA"})

    patch, post = ApiLogEntry.select().order_by(ApiLogEntry.id)
    validate(
        "update_profile",
        request_schema("update_profile"),
        json.loads(patch.request_body),
    )
    validate(
        "create_event", request_schema("create_event"), json.loads(post.request_body)
    )
    assert patch.request_headers["content-type"] == "application/vnd.api+json"
