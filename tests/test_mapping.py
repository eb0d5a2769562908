"""Field mapping: campaign fields, suggestions, validation and records."""

from __future__ import annotations

import time
from typing import Any

import pytest

from zaptui.domain.address import Address
from zaptui.domain.mapping import (
    ADDRESS_FIELDS,
    PROFILE_FIELDS,
    REFERENCE_KEY,
    CampaignField,
    MappingError,
    build_record,
    campaign_fields,
    check_mapping,
    is_profile_path,
    suggest_mapping,
    unmapped_required,
    validate_mapping,
)
from zaptui.domain.profile import Profile

CAMPAIGN: dict[str, Any] = {
    "id": "5b3c8a0e-8f5e-4d0b-9a53-2f7f1c9d0a11",
    "name": "Spring postcard",
    "fields": [
        {
            "name": "offer_code",
            "label": "Offer code",
            "required": True,
            "expectedValues": None,
            "validationExpression": r"[A-Z]{3}-\d{3}",
            "validationMessage": "Offer codes look like ABC-123",
        },
        {
            "name": "tier",
            "label": "Loyalty tier",
            "required": False,
            "expectedValues": ["Gold", "Silver", "Bronze"],
            "validationExpression": None,
            "validationMessage": None,
        },
        {
            "name": "salutation",
            "label": "Salutation",
            "required": True,
            "expectedValues": ["Mr", "Mrs", "Ms", "Dr"],
        },
    ],
}

ADDRESS = Address(
    name="Ada Lovelace",
    line1="10 Downing Street",
    line2="Westminster",
    line3="",
    town="LONDON",
    county="",
    postcode="SW1A 2AA",
    country="United Kingdom",
)

MAPPING = {
    "email": "email",
    "firstname": "first_name",
    "surname": "last_name",
    "salutation": "properties.Salutation",
    "offer_code": "properties.offer_code",
    "tier": "properties.tier",
}


def make_profile(**properties: Any) -> Profile:
    """A profile with a name, an email and the given custom properties."""
    return Profile.from_resource(
        {
            "type": "profile",
            "id": "01HPROFILE",
            "attributes": {
                "email": "ada@example.co.uk",
                "first_name": "Ada",
                "last_name": "Lovelace",
                "properties": properties,
            },
        }
    )


def field(**overrides: Any) -> CampaignField:
    """A custom campaign field with no checks unless given."""
    values: dict[str, Any] = {
        "name": "note",
        "label": "Note",
        "required": False,
        "custom": True,
    }
    values.update(overrides)
    return CampaignField(**values)


def test_campaign_fields_list_standard_fields_then_custom_ones() -> None:
    fields = campaign_fields(CAMPAIGN)
    names = [f.name for f in fields]

    assert names[:12] == [
        "customerid",
        "email",
        "salutation",
        "firstname",
        "surname",
        "companyname",
        "address1",
        "address2",
        "address3",
        "city",
        "postcode",
        "country",
    ]
    assert names[12:] == ["offer_code", "tier"]
    offer = fields[12]
    assert offer.custom and offer.required and offer.label == "Offer code"
    assert offer.validation_expression == r"[A-Z]{3}-\d{3}"
    assert fields[13].expected_values == ("Gold", "Silver", "Bronze")


def test_a_campaign_can_add_checks_to_a_standard_field() -> None:
    salutation = campaign_fields(CAMPAIGN)[2]

    assert salutation.name == "salutation"
    assert not salutation.custom
    assert salutation.required
    assert salutation.expected_values == ("Mr", "Mrs", "Ms", "Dr")


def test_campaign_fields_tolerate_malformed_definitions() -> None:
    campaign = {
        "fields": [
            None,
            "offer",
            {"label": "no name"},
            {"name": ["x"]},
            {"name": "ok", "required": "true", "expectedValues": "Gold"},
            {"name": "ok", "label": "duplicate"},
        ]
    }

    custom = [f for f in campaign_fields(campaign) if f.custom]

    assert custom == [
        CampaignField("ok", "ok", required=True, custom=True, validation_message="")
    ]
    assert len(campaign_fields({"fields": None})) == 12
    assert len(campaign_fields({})) == 12


def test_profile_paths_include_properties() -> None:
    paths = [path for path, _ in PROFILE_FIELDS]

    assert {"email", "first_name", "last_name", "organization"} <= set(paths)
    assert "location.address1" in paths
    assert is_profile_path("properties.offer_code")
    assert not is_profile_path("properties.")
    assert not is_profile_path("password")
    assert not is_profile_path(3)


def test_suggestions_match_fields_to_profile_paths_by_name() -> None:
    fields = campaign_fields(CAMPAIGN) + [
        field(name="Company", label="Company"),
        field(name="offercode2", label="Offer Code 2"),
        field(name="unrelated", label="Something else"),
    ]

    suggested = suggest_mapping(
        fields, sample_properties=["offer_code", "Tier", "Salutation", "offer_code_2"]
    )

    assert suggested["firstname"] == "first_name"
    assert suggested["surname"] == "last_name"
    assert suggested["email"] == "email"
    assert suggested["companyname"] == "organization"
    assert suggested["Company"] == "organization"
    assert suggested["offer_code"] == "properties.offer_code"
    assert suggested["tier"] == "properties.Tier"
    assert suggested["salutation"] == "properties.Salutation"
    assert suggested["offercode2"] == "properties.offer_code_2"
    assert "unrelated" not in suggested
    assert not ADDRESS_FIELDS & suggested.keys()
    assert "customerid" not in suggested


def test_close_property_names_are_suggested() -> None:
    suggested = suggest_mapping(
        [field(name="offer_cod", label="Offer cod")], ["offer_code"]
    )

    assert suggested == {"offer_cod": "properties.offer_code"}


def test_unmapped_required_lists_fields_the_address_does_not_fill() -> None:
    fields = campaign_fields(CAMPAIGN)

    assert unmapped_required({}, fields) == ["salutation", "offer_code"]
    assert unmapped_required(MAPPING, fields) == []


def test_validate_mapping_names_every_problem() -> None:
    fields = campaign_fields(CAMPAIGN)
    mapping = {
        "offer_code": "properties.offer_code",
        "nonsense": "email",
        "tier": "password",
        "postcode": "location.zip",
    }

    problems = validate_mapping(mapping, fields)

    assert problems == [
        "campaign field 'nonsense' does not exist",
        "Loyalty tier (tier) maps to unknown profile path 'password'",
        "Postcode (postcode) is filled from the cleansed address or the profile id, "
        "not from the mapping",
        "required field Salutation (salutation) is not mapped",
    ]
    assert validate_mapping(MAPPING, fields) == []


def test_check_mapping_raises_with_the_problems() -> None:
    fields = campaign_fields(CAMPAIGN)

    with pytest.raises(MappingError) as raised:
        check_mapping({}, fields)

    assert raised.value.problems == [
        "required field Salutation (salutation) is not mapped",
        "required field Offer code (offer_code) is not mapped",
    ]
    assert isinstance(raised.value, ValueError)
    check_mapping(MAPPING, fields)


def test_record_takes_address_from_the_cleansed_address() -> None:
    profile = make_profile(offer_code="ABC-123", tier="gold", Salutation="dr")

    record, errors = build_record(
        profile, ADDRESS, MAPPING, campaign_fields(CAMPAIGN), "run-42"
    )

    assert errors == []
    assert record == {
        "customerid": "01HPROFILE",
        "email": "ada@example.co.uk",
        "salutation": "Dr",
        "firstname": "Ada",
        "surname": "Lovelace",
        "companyname": "",
        "address1": "10 Downing Street",
        "address2": "Westminster",
        "address3": "",
        "city": "LONDON",
        "postcode": "SW1A 2AA",
        "country": "United Kingdom",
        "customdata": {
            "offer_code": "ABC-123",
            "tier": "Gold",
            REFERENCE_KEY: "run-42",
        },
    }


def test_mapping_to_location_does_not_override_the_address() -> None:
    profile = make_profile(offer_code="ABC-123", Salutation="Mr")
    mapping = dict(MAPPING, city="location.city", postcode="properties.x")

    record, errors = build_record(
        profile, ADDRESS, mapping, campaign_fields(CAMPAIGN), "r"
    )

    assert errors == []
    assert record is not None
    assert record["city"] == "LONDON" and record["postcode"] == "SW1A 2AA"


def test_record_fails_with_one_error_per_field() -> None:
    profile = make_profile(offer_code="abc-1", tier="Platinum")

    record, errors = build_record(
        profile, ADDRESS, MAPPING, campaign_fields(CAMPAIGN), "run-42"
    )

    assert record is None
    assert errors == [
        "Salutation (salutation) is required but empty",
        "Offer code (offer_code): Offer codes look like ABC-123 (was 'abc-1')",
        "Loyalty tier (tier) is 'Platinum', not one of Gold, Silver, Bronze",
    ]


def test_empty_optional_fields_skip_their_checks() -> None:
    fields = [field(expected_values=("A",), validation_expression=r"\d+")]

    record, errors = build_record(make_profile(), ADDRESS, {}, fields, "r")

    assert errors == []
    assert record is not None
    assert record["customdata"] == {"note": "", REFERENCE_KEY: "r"}


def test_validation_expressions_must_match_the_whole_value() -> None:
    fields = [field(validation_expression=r"\d{3}")]
    mapping = {"note": "properties.note"}

    ok, _ = build_record(make_profile(note="123"), ADDRESS, mapping, fields, "r")
    bad, errors = build_record(make_profile(note="1234"), ADDRESS, mapping, fields, "r")

    assert ok is not None
    assert bad is None
    assert errors == ["Note (note): does not match the expected format (was '1234')"]


def test_an_expression_that_does_not_compile_is_reported() -> None:
    fields = [field(validation_expression="([A-Z")]
    mapping = {"note": "properties.note"}

    record, errors = build_record(make_profile(note="X"), ADDRESS, mapping, fields, "r")

    assert record is None
    assert len(errors) == 1
    assert errors[0].startswith(
        "Note (note) has a validation expression that does not compile"
    )


def test_a_runaway_expression_is_stopped_and_reported() -> None:
    fields = [field(validation_expression=r"(?:a|b|ab)*c")]
    mapping = {"note": "properties.note"}
    started = time.monotonic()

    record, errors = build_record(
        make_profile(note="ab" * 40 + "cd"), ADDRESS, mapping, fields, "r"
    )

    assert time.monotonic() - started < 2
    assert record is None
    assert errors == [
        "Note (note) could not be checked: its validation expression takes too long"
    ]


def test_values_are_data_never_evaluated() -> None:
    fields = [field(name="a"), field(name="b"), field(name="c"), field(name="d")]
    mapping = {f.name: f"properties.{f.name}" for f in fields}
    profile = make_profile(
        a="{__import__('os').system('true')}",
        b=["Gold", 2],
        c=True,
        d="line\x1b[2Jone\nline two",
    )

    record, errors = build_record(profile, ADDRESS, mapping, fields, "r")

    assert errors == []
    assert record is not None
    assert record["customdata"] == {
        "a": "{__import__('os').system('true')}",
        "b": '["Gold", 2]',
        "c": "true",
        "d": "lineone line two",
        REFERENCE_KEY: "r",
    }


def test_unknown_profile_paths_fail_the_record() -> None:
    fields = [field()]

    record, errors = build_record(
        make_profile(), ADDRESS, {"note": "password"}, fields, "r"
    )

    assert record is None
    assert errors == ["Note (note) maps to unknown profile path 'password'"]


def test_nothing_escapes_build_record() -> None:
    record, errors = build_record(
        None,  # type: ignore[arg-type]
        ADDRESS,
        MAPPING,
        campaign_fields(CAMPAIGN),
        "r",
    )

    assert record is None
    assert errors and all(errors)
