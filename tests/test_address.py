"""UK address cleansing: postcode rules, repairs, required lines, countries."""

from __future__ import annotations

from typing import Any

import pytest

from zaptui.domain.address import (
    POSTCODE_PATTERN,
    Address,
    CleanseResult,
    RulesVerifier,
    VerificationResult,
    check_address,
    clean_text,
    cleanse,
    location_needs_update,
    normalise_postcode,
    to_klaviyo_location,
)
from zaptui.domain.profile import Profile


def make_profile(location: dict[str, Any] | None = None, **attributes: Any) -> Profile:
    """A profile resource as Klaviyo sends it, with a valid London address."""
    attrs: dict[str, Any] = {"first_name": "Ada", "last_name": "Lovelace"}
    attrs.update(attributes)
    attrs["location"] = {
        "address1": "10 Downing Street",
        "city": "London",
        "zip": "SW1A 2AA",
        "country": "United Kingdom",
    }
    attrs["location"].update(location or {})
    return Profile.from_resource({"id": "01HPROFILE", "attributes": attrs})


@pytest.mark.parametrize(
    "postcode",
    [
        "SW1A 1AA",
        "EC1A 1BB",
        "M1 1AE",
        "B33 8TH",
        "CR2 6XH",
        "DN55 1PT",
        "W1A 0AX",
        "GIR 0AA",
    ],
)
def test_valid_postcodes_are_accepted_unchanged(postcode: str) -> None:
    assert normalise_postcode(postcode) == (postcode, "")
    assert POSTCODE_PATTERN.fullmatch(postcode)


@pytest.mark.parametrize(
    ("typed", "normalised"),
    [
        ("sw1a1aa", "SW1A 1AA"),
        ("  ec1a   1bb ", "EC1A 1BB"),
        ("m11ae", "M1 1AE"),
        ("SW1A IAA", "SW1A 1AA"),
        ("W1A OAX", "W1A 0AX"),
        ("SWIA 1AA", "SW1A 1AA"),
        ("gir0aa", "GIR 0AA"),
        ("B3 3 8TH", "B33 8TH"),
    ],
)
def test_postcode_typos_are_repaired(typed: str, normalised: str) -> None:
    assert normalise_postcode(typed) == (normalised, "")


@pytest.mark.parametrize(
    ("postcode", "because"),
    [
        ("Q1 1AA", "first letter is never Q, V or X"),
        ("V1 1AA", "first letter is never Q, V or X"),
        ("ZZ1 1ZZ", "second letter is never I, J or Z"),
        ("AJ1 1AA", "second letter is never I, J or Z"),
        ("A1P 1AA", "third-position letter"),
        ("AA1C 1AA", "fourth-position letter"),
        ("EC1A 1BC", "never use C, I, K, M, O or V"),
        ("M1 1AB1", "not a valid UK postcode"),
        ("12345", "a digit and two letters"),
        ("SW1A", "not a valid UK postcode"),
    ],
)
def test_malformed_postcodes_fail_with_the_rule_they_break(
    postcode: str, because: str
) -> None:
    normalised, reason = normalise_postcode(postcode)

    assert normalised is None
    assert reason.startswith(f"postcode '{postcode}' is not a valid UK postcode")
    assert because in reason


def test_letter_o_in_the_inward_letters_is_not_guessed() -> None:
    # O is never an inward letter and 0 is never a letter: no reading is right.
    normalised, reason = normalise_postcode("EC1A 1BO")

    assert normalised is None
    assert "never use C, I, K, M, O or V" in reason


def test_ambiguous_o_and_i_in_the_outward_code_are_not_guessed() -> None:
    # LO1 (AA9) and L01 (A99) are both well formed.
    normalised, reason = normalise_postcode("LOI 1AA")

    assert normalised is None
    assert "more than one way" in reason


def test_a_valid_outward_code_is_never_rewritten() -> None:
    # SO1 and S01 are both well formed: what was typed stands.
    assert normalise_postcode("S01 1AA") == ("S01 1AA", "")
    assert normalise_postcode("SO1 1AA") == ("SO1 1AA", "")


def test_missing_and_bfpo_postcodes_explain_themselves() -> None:
    assert normalise_postcode("") == (None, "postcode is missing")
    assert normalise_postcode(None) == (None, "postcode is missing")  # type: ignore[arg-type]
    assert "BFPO" in normalise_postcode("BFPO 1234")[1]


def test_clean_address_passes_without_changes() -> None:
    result = cleanse(make_profile(location={"city": "LONDON"}))

    assert result.ok and not result.corrected
    assert result.reasons == () and result.changes == ()
    assert result.address == Address(
        name="Ada Lovelace",
        line1="10 Downing Street",
        line2="",
        line3="",
        town="LONDON",
        county="",
        postcode="SW1A 2AA",
        country="United Kingdom",
    )


def test_corrections_are_recorded_for_the_operator() -> None:
    result = cleanse(make_profile(location={"zip": "sw1a2aa", "country": "UK"}))

    assert result.ok and result.corrected
    assert result.address is not None
    assert result.address.postcode == "SW1A 2AA"
    assert result.address.town == "LONDON"
    assert result.address.country == "United Kingdom"
    assert "postcode 'sw1a2aa' -> 'SW1A 2AA'" in result.changes
    assert "town 'London' -> 'LONDON'" in result.changes
    assert "country 'UK' -> 'United Kingdom'" in result.changes


def test_original_location_is_kept_as_received() -> None:
    profile = make_profile(location={"zip": "sw1a2aa", "latitude": 51.5})

    result = cleanse(profile)

    assert result.original == profile.location
    assert result.original["zip"] == "sw1a2aa"


@pytest.mark.parametrize(
    "country",
    [
        "UK",
        "gb",
        "U.K.",
        "Great Britain",
        "England",
        "Scotland",
        "Wales",
        "Northern Ireland",
        "United Kingdom of Great Britain and Northern Ireland",
    ],
)
def test_names_of_the_uk_become_united_kingdom(country: str) -> None:
    result = cleanse(make_profile(location={"country": country}))

    assert result.ok
    assert result.address is not None
    assert result.address.country == "United Kingdom"


def test_blank_country_is_taken_as_uk_when_the_postcode_is_valid() -> None:
    result = cleanse(make_profile(location={"country": None}))

    assert result.ok
    assert result.address is not None
    assert result.address.country == "United Kingdom"
    assert any("assumed" in change for change in result.changes)


def test_blank_country_with_a_bad_postcode_is_not_assumed() -> None:
    result = cleanse(make_profile(location={"country": "", "zip": "ZZ1 1ZZ"}))

    assert not result.ok
    assert result.reasons == (
        "postcode 'ZZ1 1ZZ' is not a valid UK postcode: "
        "the second letter is never I, J or Z",
    )


@pytest.mark.parametrize("country", ["France", "USA", "IE", "Ireland", "Jersey"])
def test_countries_outside_the_uk_fail(country: str) -> None:
    result = cleanse(make_profile(location={"country": country, "zip": "75001"}))

    assert result.address is None
    assert result.reasons == (f"country '{country}' is outside the UK",)


@pytest.mark.parametrize(
    ("attributes", "location", "reason"),
    [
        ({"first_name": "", "last_name": ""}, {}, "name is missing"),
        ({}, {"address1": "  "}, "address line 1 is missing"),
        ({}, {"city": None}, "town is missing"),
        ({}, {"zip": ""}, "postcode is missing"),
    ],
)
def test_required_parts_are_named_when_missing(
    attributes: dict[str, Any], location: dict[str, Any], reason: str
) -> None:
    result = cleanse(make_profile(location=location, **attributes))

    assert not result.ok
    assert any(r.startswith(reason) for r in result.reasons)


def test_an_organisation_is_enough_for_a_name() -> None:
    result = cleanse(
        make_profile(first_name=None, last_name=None, organization="Acme Ltd")
    )

    assert result.ok
    assert result.address is not None
    assert result.address.name == "Acme Ltd"


def test_a_lone_second_line_moves_up_to_the_first() -> None:
    result = cleanse(make_profile(location={"address1": "", "address2": "1 Mill Lane"}))

    assert result.ok
    assert result.address is not None
    assert result.address.line1 == "1 Mill Lane"
    assert result.address.line2 == ""
    assert result.corrected


def test_long_lines_fail_rather_than_being_cut() -> None:
    long_line = "Flat 12, The Old Cotton Mill Building, Ancoats"
    result = cleanse(make_profile(location={"address1": long_line}))

    assert result.address is None
    assert len(result.reasons) == 1
    assert result.reasons[0].startswith(
        f"address line 1 is {len(long_line)} characters, more than 35"
    )


def test_a_line_of_exactly_35_characters_is_fine() -> None:
    line = "A" * 35
    result = cleanse(make_profile(location={"address2": line}))

    assert result.ok


def test_escape_sequences_and_controls_are_stripped_and_recorded() -> None:
    result = cleanse(
        make_profile(
            first_name="Ada\x1b[31m\x07",
            location={
                "address1": "10 Downing\tStreet\x1b]8;;http://x\x07",
                "city": "Lon\u202edon",
            },
        )
    )

    assert result.ok
    assert result.address is not None
    assert result.address.name == "Ada Lovelace"
    assert result.address.line1 == "10 Downing Street"
    assert result.address.town == "LONDON"
    assert "removed control characters from first name" in result.changes
    assert "removed control characters from address line 1" in result.changes
    assert "removed control characters from town" in result.changes


def test_markup_in_names_is_data_and_kept_literally() -> None:
    result = cleanse(make_profile(first_name="[bold]Ada[/bold]", last_name="[red]"))

    assert result.ok
    assert result.address is not None
    assert result.address.name == "[bold]Ada[/bold] [red]"
    assert result.changes == ("town 'London' -> 'LONDON'",)


def test_whitespace_is_collapsed() -> None:
    text, removed = clean_text("  1   High\u00a0Street  ")

    assert text == "1 High Street"
    assert not removed


def test_values_that_are_not_text_fail_with_a_reason() -> None:
    result = cleanse(make_profile(location={"address1": ["1 High St"], "zip": 1234}))

    assert result.address is None
    assert "address line 1 is not text (list)" in result.reasons
    assert not any("address line 1 is missing" in r for r in result.reasons)
    assert any(r.startswith("postcode '1234'") for r in result.reasons)


@pytest.mark.parametrize(
    "profile",
    [
        None,
        42,
        Profile(id="x", location=None),  # type: ignore[arg-type]
        Profile(id="x", first_name=None, location={"city": {"a": 1}}),  # type: ignore[arg-type]
        Profile(id="x", location={"zip": "😀" * 10_000, "address1": "\x00" * 5}),
    ],
)
def test_nothing_escapes_cleanse(profile: Any) -> None:
    result = cleanse(profile)

    assert isinstance(result, CleanseResult)
    assert result.address is None
    assert result.reasons and all(result.reasons)


def test_long_values_are_shortened_in_reasons() -> None:
    result = cleanse(make_profile(location={"zip": "X" * 5000}))

    assert result.reasons
    assert all(len(reason) < 200 for reason in result.reasons)


class _RedirectVerifier:
    """A verifier that corrects the first line, as a PAF match would."""

    def verify(self, address: Address) -> VerificationResult:
        corrected = Address(
            address.name,
            "10 Downing St",
            address.line2,
            address.line3,
            address.town,
            address.county,
            address.postcode,
            address.country,
        )
        return VerificationResult(corrected, (), ("matched PAF: 10 Downing St",))


class _GoneAwayVerifier:
    """A verifier that suppresses everyone, as a gone-away file might."""

    def verify(self, address: Address) -> VerificationResult:
        return VerificationResult(None, ("addressee has gone away",))


class _BrokenVerifier:
    """A verifier whose service is down."""

    def verify(self, address: Address) -> VerificationResult:
        raise ConnectionError("pk_live_secret unreachable")


def test_a_verifier_can_correct_the_address() -> None:
    result = cleanse(make_profile(), _RedirectVerifier())

    assert result.ok
    assert result.address is not None
    assert result.address.line1 == "10 Downing St"
    assert "matched PAF: 10 Downing St" in result.changes


def test_a_verifier_can_reject_the_address() -> None:
    result = cleanse(make_profile(), _GoneAwayVerifier())

    assert result.address is None
    assert result.reasons == ("addressee has gone away",)


def test_a_failing_verifier_rejects_without_leaking_its_message() -> None:
    result = cleanse(make_profile(), _BrokenVerifier())

    assert result.address is None
    assert result.reasons == ("address verification failed (ConnectionError)",)


def test_rules_verifier_checks_a_hand_edited_address() -> None:
    edited = Address("Ada", "1 High St", town="LEEDS", postcode="ls1 1aa")

    verdict = RulesVerifier().verify(edited)

    assert not verdict.ok
    assert verdict.reasons == ("postcode 'ls1 1aa' is not written as LS1 1AA",)
    assert (
        check_address(Address("Ada", "1 High St", town="LEEDS", postcode="LS1 1AA"))
        == []
    )


def test_write_back_location_is_whole_and_keeps_geo_fields() -> None:
    original = {
        "address1": "10 downing street",
        "address2": None,
        "city": "london",
        "region": "Greater London",
        "zip": "sw1a2aa",
        "country": "UK",
        "latitude": 51.5034,
        "longitude": -0.1276,
        "timezone": "Europe/London",
        "ip": "203.0.113.9",
    }
    result = cleanse(make_profile(location=original))
    assert result.address is not None

    location = to_klaviyo_location(result.address, result.original)

    assert location == {
        "address1": "10 downing street",
        "address2": None,
        "city": "london",
        "region": "Greater London",
        "zip": "SW1A 2AA",
        "country": "United Kingdom",
        "latitude": 51.5034,
        "longitude": -0.1276,
        "timezone": "Europe/London",
        "ip": "203.0.113.9",
    }
    assert location_needs_update(result.address, result.original)


def test_town_capitals_alone_need_no_write_back() -> None:
    result = cleanse(make_profile())
    assert result.address is not None

    assert result.corrected
    assert to_klaviyo_location(result.address, result.original)["city"] == "London"
    assert not location_needs_update(result.address, result.original)
