"""The shortcuts the per-profile code takes for common data give the same
results as the general rules they stand in for, on hostile input too."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_properties import PROPERTIES, resource

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
from zaptui.domain.profile import Profile, _text

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
    fields = {"id": _text(raw.get("id"))}
    for name in (
        "email",
        "phone_number",
        "external_id",
        "first_name",
        "last_name",
        "organization",
        "title",
        "locale",
    ):
        fields[name] = _text(attributes.get(name))
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
