"""The shortcuts the per-profile code takes for common data give the same
results as the general rules they stand in for, on hostile input too."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_properties import PROPERTIES, campaign, mapping, resource, text, value

from zaptui.clock import parse_iso
from zaptui.domain.address import (
    _RULES,
    _UK_SPELLINGS,
    UNITED_KINGDOM,
    Address,
    RulesVerifier,
    VerificationResult,
    _cleanse,
    _cleanse_plain,
    _normalise_country,
    cleanse,
)
from zaptui.domain.mapping import (
    VALIDATION_TIMEOUT,
    CampaignField,
    RecordBuilder,
    _compile,
    _left_as_they_are,
    _value_text,
    campaign_fields,
    check_value,
    quoted,
)
from zaptui.domain.profile import _TEXT_FIELDS, Profile, _text

ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
"""Printable ASCII, the text the plain cleansing path takes."""


def plain(*examples: str) -> st.SearchStrategy[Any]:
    """Realistic values of one field, or any printable ASCII, or nothing."""
    return st.one_of(st.sampled_from(examples), ascii_text, st.none())


PLAIN_FIELDS = {
    "address1": plain("10 Downing Street", "  1  High   St ", "x" * 35, "y" * 36),
    "address2": plain("Flat 2", "", " "),
    "city": plain("London", "LONDON", "Leeds ", "z" * 36),
    "region": plain("Greater London", "", "r" * 36),
    "zip": plain(
        "SW1A 2AA",
        "sw1a 2aa",
        "SW1A2AA",
        "SW1A 0AA",
        "SW1A O AA",
        "M1 1AE",
        "GIR 0AA",
        "QX9 9ZZ",
        "BFPO 123",
        "OI1 1AA",
        "",
    ),
    "country": plain(*sorted(_UK_SPELLINGS), "u.k", "France", "", "  uk "),
    "latitude": st.none(),
}
VALID_LOCATION = {
    "address1": "10 Downing Street",
    "city": "London",
    "region": "Greater London",
    "zip": "SW1A 2AA",
    "country": "UK",
}


@st.composite
def plain_location(draw: st.DrawFn) -> dict[str, Any]:
    """A location of printable text: any fields, or a valid one with one off."""
    if draw(st.booleans()):
        return draw(st.fixed_dictionaries({}, optional=PLAIN_FIELDS))
    key = draw(st.sampled_from(sorted(PLAIN_FIELDS)))
    return {**VALID_LOCATION, key: draw(PLAIN_FIELDS[key])}


plain_profile = st.builds(
    Profile,
    id=st.just("01P"),
    first_name=plain("Ada", "", " Ada  Mary ", "n" * 30),
    last_name=plain("Lovelace", "[bold]Eve[/]", "m" * 4, "m" * 5),
    organization=plain("Acme Ltd", ""),
    location=plain_location(),
)


class Correcting:
    """A verifier that rewrites the first line, as a PAF match might."""

    def verify(self, address: Address) -> VerificationResult:
        corrected = Address(**{**vars(address), "line1": address.line1.upper()})
        return VerificationResult(corrected, (), ("matched PAF",))


verifiers = st.sampled_from([_RULES, RulesVerifier(), Correcting()])


def read_generally(raw: Any) -> dict[str, Any]:
    """A resource's fields read with the general rules, one call each."""
    raw = raw if isinstance(raw, dict) else {}
    attributes = raw.get("attributes")
    attributes = attributes if isinstance(attributes, dict) else {}
    # Every text field the profile names: one the fast path forgets to read
    # inline differs here. The id is the resource's, the rest attributes.
    fields = {
        name: _text(raw.get(name) if name == "id" else attributes.get(name))
        for name in _TEXT_FIELDS
    }
    for name in ("location", "properties"):
        value = attributes.get(name)
        fields[name] = value if isinstance(value, dict) else {}
    joined = attributes.get("joined_group_at")
    try:
        fields["joined_group_at"] = (
            parse_iso(joined) if isinstance(joined, str) else None
        )
    except (ValueError, OverflowError):
        fields["joined_group_at"] = None
    return fields


@PROPERTIES
@given(resource)
def test_reading_a_resource_matches_the_general_rules(raw: Any) -> None:
    profile = Profile.from_resource(raw)

    expected = read_generally(raw)
    assert {name: getattr(profile, name) for name in expected} == expected


def test_a_profile_built_directly_has_empty_defaults() -> None:
    profile = Profile(id="01P", first_name="Ada")

    assert profile.location == {} and profile.properties == {}
    assert profile.location is not Profile(id="01Q").location
    assert profile == Profile(id="01P", first_name="Ada")
    assert profile != Profile(id="01P", first_name="Grace")
    assert repr(profile).startswith("Profile(id='01P', email=''")


def test_every_quick_uk_spelling_is_a_name_of_the_uk() -> None:
    assert all(_normalise_country(name) == UNITED_KINGDOM for name in _UK_SPELLINGS)


@PROPERTIES
@given(plain_profile, verifiers)
def test_plain_cleansing_matches_the_general_rules(
    profile: Profile, verifier: Any
) -> None:
    location = dict(profile.location)

    quick = _cleanse_plain(profile, location, verifier)

    assert quick is not None
    assert quick == _cleanse(profile, location, verifier)


@PROPERTIES
@given(resource, verifiers)
def test_plain_cleansing_of_hostile_profiles_matches_or_defers(
    raw: Any, verifier: Any
) -> None:
    profile = Profile.from_resource(raw)
    location = dict(profile.location)

    quick = _cleanse_plain(profile, location, verifier)

    if quick is not None:
        assert quick == _cleanse(profile, location, verifier)


def test_a_simulator_profile_takes_the_plain_path() -> None:
    profile = Profile(
        id="01P",
        first_name="Ada",
        last_name="Lovelace",
        location={
            "address1": "10 Downing Street",
            "city": "London",
            "zip": "SW1A 2AA",
            "country": "UK",
        },
    )

    quick = _cleanse_plain(profile, dict(profile.location), _RULES)

    assert quick == cleanse(profile)
    assert quick is not None and quick.ok
    assert quick.changes == (
        "town 'London' -> 'LONDON'",
        "country 'UK' -> 'United Kingdom'",
    )


EDGES = [None, "", " ", "a" * 35, "a" * 36, " a  b ", "sw1a 2aa", "SW1A2AA", "GB"]


@pytest.mark.parametrize("value", EDGES)
@pytest.mark.parametrize(
    "field", [*VALID_LOCATION, "address2", "first_name", "last_name", "organization"]
)
def test_plain_cleansing_matches_at_the_edges(field: str, value: Any) -> None:
    names = {"first_name": "Ada", "last_name": "Lovelace", "organization": ""}
    location = {**VALID_LOCATION}
    if field in names:
        names[field] = value
    else:
        location[field] = value
    profile = Profile(id="01P", location=location, **names)

    for verifier in (_RULES, Correcting()):
        quick = _cleanse_plain(profile, dict(location), verifier)
        assert quick == _cleanse(profile, dict(location), verifier)


@pytest.mark.parametrize(
    ("first", "last", "organisation"),
    [
        ("a" * 35, "", ""),
        ("a" * 36, "", ""),
        ("a" * 17, "b" * 17, ""),
        ("a" * 17, "b" * 18, ""),
        ("", "", "c" * 35),
        ("", "", "c" * 36),
        (" ", None, None),
    ],
)
def test_plain_cleansing_matches_for_names_of_any_length(
    first: Any, last: Any, organisation: Any
) -> None:
    profile = Profile(
        id="01P",
        first_name=first,
        last_name=last,
        organization=organisation,
        location=VALID_LOCATION,
    )

    quick = _cleanse_plain(profile, dict(VALID_LOCATION), _RULES)

    assert quick == _cleanse(profile, dict(VALID_LOCATION), _RULES)


spaced = st.sampled_from(["", " ", "a ", " a", "a  b", "a|b", "| a", "a |", "%s"])
line = st.one_of(text, ascii_text, spaced)
address = st.builds(
    Address,
    name=line,
    line1=st.one_of(line, st.just("10 Downing Street")),
    line2=line,
    line3=line,
    town=st.one_of(line, st.just("LONDON")),
    county=line,
    postcode=st.one_of(line, st.just("SW1A 2AA")),
    country=st.one_of(line, value),
)
welcome_letter = st.just({"fields": []})


def text_paths(links: Any) -> dict[str, str]:
    """A mapping as a data connection stores it: profile paths as text."""
    links = links if isinstance(links, dict) else {}
    return {name: path for name, path in links.items() if isinstance(path, str)}


@PROPERTIES
@given(resource, address, mapping, st.one_of(welcome_letter, campaign), text)
def test_a_laid_out_build_matches_the_general_steps(
    raw: Any, where: Address, links: Any, definition: Any, reference: str
) -> None:
    profile = Profile.from_resource(raw)
    builder = RecordBuilder(text_paths(links), campaign_fields(definition), reference)

    built = builder.build(profile, where)

    assert built == builder._build(profile, where)


@PROPERTIES
@given(st.lists(st.one_of(line, value), max_size=14))
def test_values_left_as_they_are_need_no_cleaning(values: list[Any]) -> None:
    if _left_as_they_are(values):
        assert [_value_text(each) for each in values] == values


@pytest.mark.parametrize("odd", ["a ", " a", "a  b", "", "a|b", "| a", "a |"])
@pytest.mark.parametrize("place", ["id", "mapped", "line1", "line2", "postcode"])
def test_a_laid_out_build_cleans_an_odd_value_anywhere(odd: str, place: str) -> None:
    fields = campaign_fields({})
    builder = RecordBuilder({"salutation": "title"}, fields, "r")
    lines = {"name": "Ada", "line1": "1 High St", "line2": "Flat 2"}
    lines |= {"town": "LEEDS", "postcode": "LS1 1AA", "country": "UK"}
    names = {"id": "01P", "title": "Dr"}
    if place == "id":
        names["id"] = odd
    elif place == "mapped":
        names["title"] = odd
    else:
        lines[place] = odd
    profile = Profile(**names)
    where = Address(**lines)

    assert builder._laid_out
    assert builder.build(profile, where) == builder._build(profile, where)


def test_a_campaign_and_a_sound_mapping_take_the_laid_out_build() -> None:
    fields = campaign_fields({"fields": [{"name": "tier"}]})
    builder = RecordBuilder({"email": "email", "tier": "properties.tier"}, fields, "r")

    assert builder._laid_out
    profile = Profile(id="01P", email="ada@example.co.uk", properties={"tier": "x"})
    where = Address("Ada", "1 High St", town="LEEDS", postcode="LS1 1AA")
    record, errors = builder.build(profile, where)
    assert errors == []
    assert record == builder._build(profile, where)[0]
    assert list(record)[-1] == "customdata"
    assert record["customdata"] == {"tier": "x", "zaptui_reference": "r"}


def test_fields_in_another_order_take_the_general_steps() -> None:
    fields = list(reversed(campaign_fields({})))
    builder = RecordBuilder({}, fields, "r")

    assert not builder._laid_out
    record, errors = builder.build(
        Profile(id="01P"), Address("Ada", "1 High St", town="LEEDS", postcode="LS1 1AA")
    )
    assert errors == [] and record is not None
    assert list(record)[:2] == ["customerid", "email"]


def check_generally(field: CampaignField, value: str) -> tuple[str, str]:
    """check_value as the rules read, with nothing prepared or remembered."""
    if not value:
        if field.required:
            return value, f"{field.described} is required but empty"
        return value, ""
    if field.expected_values is not None:
        allowed = {expected.casefold(): expected for expected in field.expected_values}
        if value.casefold() not in allowed:
            choices = ", ".join(field.expected_values[:10])
            more = ", ..." if len(field.expected_values) > 10 else ""
            return value, (
                f"{field.described} is {quoted(value)}, not one of {choices}{more}"
            )
        value = allowed[value.casefold()]
    if field.validation_expression is not None:
        pattern, problem = _compile(field.validation_expression)
        if pattern is None:
            return value, (
                f"{field.described} has a validation expression that does not "
                f"compile ({problem})"
            )
        matched = pattern.fullmatch(value, timeout=VALIDATION_TIMEOUT)
        if matched is None:
            message = field.validation_message or "does not match the expected format"
            return value, f"{field.described}: {message} (was {quoted(value)})"
    return value, ""


# Expressions that finish at once on short text: a timeout is no outcome to compare.
quick_expressions = st.sampled_from(["^[A-Z0-9]{6}$", "[", r"\p{Lu}+", ".*", "a|b"])
checked_field = st.builds(
    CampaignField,
    name=st.just("code"),
    label=st.sampled_from(["Code", "code"]),
    required=st.booleans(),
    custom=st.booleans(),
    expected_values=st.one_of(
        st.none(), st.lists(text.filter(bool), min_size=1, max_size=12).map(tuple)
    ),
    validation_expression=st.one_of(st.none(), quick_expressions),
    validation_message=text,
)


@PROPERTIES
@given(checked_field, st.lists(text, min_size=1, max_size=4))
def test_prepared_checks_match_the_rules(
    field: CampaignField, values: list[str]
) -> None:
    for checked in values + values:  # the second time from what it remembers
        assert check_value(field, checked) == check_generally(field, checked)


@PROPERTIES
@given(resource, address, mapping, st.one_of(welcome_letter, campaign), text)
def test_an_encoded_record_reads_back_as_the_record(
    raw: Any, where: Address, links: Any, definition: Any, reference: str
) -> None:
    builder = RecordBuilder(text_paths(links), campaign_fields(definition), reference)
    record, _ = builder.build(Profile.from_resource(raw), where)
    if record is None:
        return

    encoded = builder.encode(record)

    assert json.loads(encoded) == record
    assert encoded == json.dumps(record, separators=(",", ":"))


def test_an_encoded_record_is_compact_and_in_field_order() -> None:
    builder = RecordBuilder({"firstname": "first_name"}, campaign_fields({}), "r-1")
    record, _ = builder.build(
        Profile(id="01P", first_name='Zoë \u202e "quoted" 🎉'),
        Address("Zoë", "1 High St", town="LEEDS", postcode="LS1 1AA"),
    )
    assert record is not None

    encoded = builder.encode(record)

    assert encoded.startswith('{"customerid":"01P","email":"","salutation":""')
    assert encoded.endswith(',"customdata":{"zaptui_reference":"r-1"}}')
    assert encoded.isascii() and ": " not in encoded and ", " not in encoded
    assert json.loads(encoded)["firstname"] == 'Zoë "quoted" 🎉'
