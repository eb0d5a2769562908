"""The shortcuts the per-profile code takes for common data give the same
results as the general rules they stand in for, on hostile input too."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from test_properties import PROPERTIES, resource

from zaptui.clock import parse_iso
from zaptui.domain.profile import Profile, _text


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
