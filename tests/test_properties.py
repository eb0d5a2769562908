"""Cleansing and mapping on hostile profiles: no exception escapes, and every
failure comes with a reason an operator can read."""

from __future__ import annotations

import asyncio
import unicodedata
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_support import stored_account, stored_connection

from zaptui.clock import utcnow
from zaptui.domain.address import (
    MAX_LINE_LENGTH,
    POSTCODE_PATTERN,
    UNITED_KINGDOM,
    Address,
    check_address,
    cleanse,
)
from zaptui.domain.mapping import (
    REFERENCE_KEY,
    STANDARD_FIELDS,
    build_record,
    campaign_fields,
)
from zaptui.domain.profile import Profile
from zaptui.store.models import DataConnection, ProfileOutcome, SyncRun
from zaptui.sync.engine import _Stager

PROPERTIES = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

NASTY = [
    "",
    " ",
    "[bold red]Eve[/]",
    "[link=https://example.com]x[/link]",
    "\x1b[2J\x1b[H",
    "\x1b]52;c;Zm9v\x07",
    "\u202eevil\u202c",
    "\x00\x07\x9b",
    "😀" * 40,
    "SW1A 1AA",
    "sw1a1aa",
    "GIR 0AA",
    "BFPO 123",
    "EC1A 1BB ",
    "United Kingdom",
    "GB",
    "France",
    "x" * 400,
    "\ud800",
]
text = st.one_of(
    st.sampled_from(NASTY),
    st.text(st.characters(codec=None), max_size=50),
)
scalar = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), text
)
value = st.recursive(
    scalar,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3)
    ),
    max_leaves=6,
)
LOCATION_KEYS = ["address1", "address2", "city", "region", "zip", "country"]
location = st.one_of(
    value,
    st.dictionaries(st.sampled_from(LOCATION_KEYS) | text, value, max_size=8),
    st.fixed_dictionaries({key: st.one_of(text, value) for key in LOCATION_KEYS}),
)
ATTRIBUTE_KEYS = [
    "email",
    "first_name",
    "last_name",
    "organization",
    "title",
    "phone_number",
    "external_id",
    "joined_group_at",
]
attributes = st.one_of(
    value,
    st.fixed_dictionaries(
        {key: st.one_of(text, value) for key in ATTRIBUTE_KEYS},
        optional={"location": location, "properties": value},
    ),
)
resource = st.one_of(
    value,
    st.fixed_dictionaries(
        {"type": st.just("profile"), "id": st.one_of(text, value)},
        optional={"attributes": attributes},
    ),
)
PATHS = [
    "email",
    "first_name",
    "last_name",
    "organization",
    "location.zip",
    "properties.tier",
    "properties.",
    "password",
    "",
]
campaign_field = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["tier", "code", "firstname", "email"]), text)},
    optional={
        "label": value,
        "required": value,
        "expectedValues": st.one_of(value, st.lists(text, max_size=4)),
        "validationExpression": st.one_of(
            value,
            st.sampled_from(["^[A-Z0-9]{6}$", "(a+)+$", "[", r"\p{Lu}+", ".*"]),
        ),
        "validationMessage": value,
    },
)
campaign = st.one_of(
    value, st.fixed_dictionaries({"fields": st.one_of(value, st.lists(campaign_field))})
)
mapping = st.one_of(
    value,
    st.dictionaries(
        st.sampled_from(["tier", "code", "firstname", "email", "surname"]) | text,
        st.sampled_from(PATHS) | value,
        max_size=5,
    ),
)
VALID_ADDRESS = Address(
    "Ada Lovelace", "10 Downing Street", town="LONDON", postcode="SW1A 2AA"
)


BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(line: str) -> bool:
    """Nothing a terminal or a printer would act on: no controls, no surrogates,
    no bidirectional overrides (joiners and soft hyphens are text)."""
    return not any(
        unicodedata.category(c) in ("Cc", "Cs") or c in BIDI_CONTROLS for c in line
    )


def readable(message: Any) -> bool:
    """A non-empty single line an operator can be shown as it is."""
    return isinstance(message, str) and bool(message.strip()) and printable(message)


@PROPERTIES
@given(resource)
def test_any_resource_reads_as_a_profile(raw: Any) -> None:
    profile = Profile.from_resource(raw)

    assert isinstance(profile.id, str)
    assert isinstance(profile.location, dict)
    assert isinstance(profile.properties, dict)


@PROPERTIES
@given(resource)
def test_cleansing_a_hostile_profile_never_raises_and_explains_failures(
    raw: Any,
) -> None:
    result = cleanse(Profile.from_resource(raw))

    if result.ok:
        address = result.address
        assert address is not None
        assert check_address(address) == []
        assert POSTCODE_PATTERN.fullmatch(address.postcode)
        assert address.country == UNITED_KINGDOM
        for line in address.lines():
            assert len(line) <= MAX_LINE_LENGTH
            assert printable(line)
            assert line == line.strip()
    else:
        assert result.reasons
        assert all(readable(reason) for reason in result.reasons)


@PROPERTIES
@given(st.dictionaries(st.sampled_from(LOCATION_KEYS), text, max_size=6), text, text)
def test_cleansing_text_addresses_never_raises(
    where: dict[str, str], first: str, last: str
) -> None:
    profile = Profile(id="01P", first_name=first, last_name=last, location=where)

    result = cleanse(profile)

    assert result.ok != bool(result.reasons)
    assert all(readable(reason) for reason in result.reasons)


@PROPERTIES
@given(campaign)
def test_any_campaign_reads_as_fields(raw: Any) -> None:
    fields = campaign_fields(raw)

    names = [field.name for field in fields]
    assert names[: len(STANDARD_FIELDS)] == [name for name, _, _ in STANDARD_FIELDS]
    assert len(set(n.casefold() for n in names)) == len(names)


@PROPERTIES
@given(resource, mapping, campaign, text)
def test_mapping_a_hostile_profile_never_raises_and_explains_failures(
    raw: Any, links: Any, definition: Any, reference: str
) -> None:
    fields = campaign_fields(definition)

    record, errors = build_record(
        Profile.from_resource(raw), VALID_ADDRESS, links, fields, reference
    )

    if record is None:
        assert errors
        assert all(readable(error) for error in errors)
        return
    assert errors == []
    for name, _, _ in STANDARD_FIELDS:
        assert isinstance(record[name], str)
        assert printable(record[name])
    customdata = record["customdata"]
    assert REFERENCE_KEY in customdata
    for field in fields:
        sent = customdata.get(field.name) if field.custom else record.get(field.name)
        if sent and field.expected_values is not None:
            assert sent in field.expected_values
        if field.required and field.name != "address2":
            assert sent


def _connection_with_a_run() -> tuple[DataConnection, SyncRun]:
    """A new account's data connection and a run of it just started."""
    account = stored_account("A", klaviyo_id=f"k{utcnow().timestamp()}")
    connection = stored_connection(
        account, "S", source_id="s", name="N", campaign_id="c"
    )
    run = SyncRun.create(
        connection=connection, reference=f"r{connection.id}", trigger="manual"
    )
    return connection, run


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(resource, max_size=6), mapping, campaign)
def test_staging_hostile_pages_stores_a_reasoned_outcome_for_each(
    db, pages: list[Any], links: Any, definition: Any
) -> None:
    connection, run = _connection_with_a_run()
    links = links if isinstance(links, dict) else {}
    stager = _Stager(
        run,
        connection,
        {k: v for k, v in links.items() if isinstance(v, str)},
        campaign_fields(definition),
    )

    asyncio.run(stager.page(pages))
    stager.finish()

    rows = list(ProfileOutcome.select().where(ProfileOutcome.run == run.id))
    assert SyncRun.get_by_id(run.id).fetched == len(pages)
    for row in rows:
        assert row.outcome in ("staged", "failed", "duplicate", "held_back")
        if row.outcome == "failed":
            assert readable(row.reason)
        if row.outcome == "staged":
            assert row.record["customerid"] == row.profile_id
        assert printable(row.display_name)


def test_a_failure_that_rejoins_while_paging_is_remembered_once(db) -> None:
    from zaptui.store.models import ReportedFailure

    connection, run = _connection_with_a_run()
    stager = _Stager(run, connection, {}, campaign_fields({"fields": []}))

    def member(joined: str) -> dict[str, Any]:
        # No address at all: it fails cleansing.
        attributes = {"first_name": "Ada", "joined_group_at": joined}
        return {"type": "profile", "id": "P-REJOIN", "attributes": attributes}

    async def two_pages() -> None:
        await stager.page([member("2026-11-01T00:00:00+00:00")])
        stager.store()
        await stager.page([member("2026-11-02T00:00:00+00:00")])

    asyncio.run(two_pages())
    stager.finish()

    rows = list(ProfileOutcome.select().where(ProfileOutcome.run == run.id))
    remembered = list(ReportedFailure.select())
    assert [row.outcome for row in rows] == ["failed"]
    assert [(r.profile_id, r.joined_group_at) for r in remembered] == [
        (rows[0].profile_id, rows[0].joined_group_at)
    ]
