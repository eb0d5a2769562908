"""Deterministic UK customer profiles for the Klaviyo simulator.

Everything comes from one `random.Random(seed)`, so a seed always yields the
same people, ids and addresses. A stated share of profiles is deliberately
faulty, in the ways real customer data goes wrong before it is posted:
repairable postcodes (lower case, no space, letter O for digit 0), invalid
postcodes, missing first address line or town, lines over 35 characters,
non-UK countries, and names that would misbehave on a terminal (Rich markup,
escape sequences, emoji) or are empty.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

FAULT_KINDS = (
    "postcode_lower",
    "postcode_unspaced",
    "postcode_o_typo",
    "postcode_invalid",
    "missing_address1",
    "missing_city",
    "long_line",
    "non_uk_country",
    "rich_markup_name",
    "escape_sequence_name",
    "empty_name",
    "emoji_name",
)

FIRST_NAMES = (
    "Oliver", "Amelia", "George", "Isla", "Harry", "Ava", "Noah", "Mia", "Jack",
    "Ivy", "Charlie", "Grace", "Leo", "Freya", "Arthur", "Lily", "Oscar", "Emily",
    "Alfie", "Sophie", "Theo", "Evie", "Archie", "Poppy", "Henry", "Rosie",
    "Siobhan", "Rhys", "Aisling", "Priya", "Mohammed", "Fatima", "Ewan", "Morag",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies",
    "Patel", "Robinson", "Wright", "Thompson", "Evans", "Walker", "White", "Roberts",
    "Green", "Hall", "Wood", "Jackson", "Clarke", "O'Neill", "MacDonald", "Khan",
    "Hughes", "Edwards", "Lewis", "Murphy", "Campbell", "Ahmed", "Price", "Fraser",
)  # fmt: skip
STREETS = (
    "High Street", "Station Road", "Church Lane", "Victoria Road", "Green Lane",
    "Manor Road", "Park Avenue", "Queens Road", "Mill Lane", "The Crescent",
    "Kings Road", "London Road", "York Road", "Orchard Close", "Castle Street",
)  # fmt: skip
# (post town, region, outward codes that really exist there)
TOWNS = (
    ("London", "Greater London", ("SW1A", "E1", "N1", "SE1", "W1D", "EC1A", "NW3")),
    ("Manchester", "Greater Manchester", ("M1", "M4", "M20")),
    ("Birmingham", "West Midlands", ("B1", "B15", "B29")),
    ("Leeds", "West Yorkshire", ("LS1", "LS6")),
    ("Bristol", "Bristol", ("BS1", "BS8")),
    ("Edinburgh", "City of Edinburgh", ("EH1", "EH3")),
    ("Glasgow", "Glasgow City", ("G1", "G12")),
    ("Cardiff", "South Glamorgan", ("CF10", "CF24")),
    ("Belfast", "County Antrim", ("BT1", "BT7")),
    ("Oxford", "Oxfordshire", ("OX1", "OX4")),
    ("York", "North Yorkshire", ("YO1", "YO10")),
    ("Brighton", "East Sussex", ("BN1", "BN2")),
)
UK_COUNTRIES = ("United Kingdom", "United Kingdom", "UK", "GB", "England")
INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"
INVALID_POSTCODES = ("QX9 9ZZ", "SW1A 1A", "12345", "ABC DEF", "N1 1CK", "EC1A1BBB")
LONG_LINES = (
    "Flat 12, The Old Mill Buildings, 145 Riverside Industrial Estate Road",
    "Apartment 4B Kensington Court Mansions Garden Wing, Kensington High Street",
)
FOREIGN_ADDRESSES = (
    {"address1": "12 Rue de Rivoli", "city": "Paris", "region": "Île-de-France",
     "zip": "75004", "country": "France"},
    {"address1": "89 E 42nd St", "city": "New York", "region": "NY",
     "zip": "10017", "country": "United States"},
)  # fmt: skip
RICH_NAMES = ("[bold red]Eve[/]", "[link=https://example.com]Mallory[/link]")
ESCAPE_NAMES = ("Smith\x1b]52;c;Zm9v\x07", "\x1b[2J\x1b[HTrent")
EMOJI_NAMES = ("Zoë 🎉", "Ben 🦊")
TIERS = ("bronze", "silver", "gold")
CATEGORIES = ("tents", "boots", "jackets", "maps", "stoves")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


@dataclass
class SeedProfile:
    """A generated profile: its id, its Klaviyo attributes and its planted fault."""

    id: str
    attributes: dict[str, Any]
    fault: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def profile_id(rng: random.Random) -> str:
    """A 26-character id shaped like Klaviyo's (a ULID)."""
    bits = rng.getrandbits(120)
    return "01" + "".join(_CROCKFORD[(bits >> (5 * n)) & 31] for n in range(24))


def short_id(rng: random.Random, length: int = 6) -> str:
    """A short mixed-case id like Klaviyo's list, segment and account ids."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
    return "".join(rng.choice(alphabet) for _ in range(length))


def private_key(rng: random.Random) -> str:
    """A private API key: pk_ and 34 hex characters."""
    return "pk_" + "".join(rng.choice("0123456789abcdef") for _ in range(34))


def uk_postcode(rng: random.Random, outward_codes: tuple[str, ...]) -> str:
    """A well-formed UK postcode with a real outward code."""
    inward = str(rng.randint(0, 9)) + "".join(rng.choices(INWARD_LETTERS, k=2))
    return f"{rng.choice(outward_codes)} {inward}"


def _plain(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isascii() and ch.isalnum())


def uk_profile(rng: random.Random, index: int, created: datetime) -> SeedProfile:
    """One clean UK customer."""
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    town, region, outward = rng.choice(TOWNS)
    location: dict[str, Any] = {
        "address1": f"{rng.randint(1, 240)} {rng.choice(STREETS)}",
        "address2": f"Flat {rng.randint(1, 30)}" if rng.random() < 0.15 else None,
        "city": town,
        "country": rng.choice(UK_COUNTRIES),
        "region": region,
        "zip": uk_postcode(rng, outward),
        "latitude": None,
        "longitude": None,
        "timezone": "Europe/London",
        "ip": None,
    }
    stamp = created.isoformat()
    attributes: dict[str, Any] = {
        "email": f"{_plain(first)}.{_plain(last)}{index}@example.co.uk",
        "phone_number": f"+447700{rng.randint(900000, 900999)}",
        "external_id": f"CUST-{index:06d}",
        "first_name": first,
        "last_name": last,
        "organization": None,
        "locale": "en-GB",
        "title": None,
        "image": None,
        "created": stamp,
        "updated": stamp,
        "last_event_date": None,
        "location": location,
        "properties": {
            "tier": rng.choice(TIERS),
            "favourite_category": rng.choice(CATEGORIES),
        },
    }
    return SeedProfile(profile_id(rng), attributes)


def plant_fault(rng: random.Random, profile: SeedProfile, kind: str) -> None:
    """Spoil one profile in the way `kind` names."""
    attributes = profile.attributes
    location = attributes["location"]
    zip_code: str = location["zip"]
    outward, _, inward = zip_code.partition(" ")
    if kind == "postcode_lower":
        location["zip"] = zip_code.lower()
    elif kind == "postcode_unspaced":
        location["zip"] = outward + inward
    elif kind == "postcode_o_typo":
        location["zip"] = f"{outward} O{inward[1:]}"
    elif kind == "postcode_invalid":
        location["zip"] = rng.choice(INVALID_POSTCODES)
    elif kind == "missing_address1":
        location["address1"] = rng.choice((None, ""))
    elif kind == "missing_city":
        location["city"] = None
    elif kind == "long_line":
        location["address1"] = rng.choice(LONG_LINES)
    elif kind == "non_uk_country":
        location.update(rng.choice(FOREIGN_ADDRESSES))
    elif kind == "rich_markup_name":
        attributes["first_name"] = rng.choice(RICH_NAMES)
    elif kind == "escape_sequence_name":
        attributes["last_name"] = rng.choice(ESCAPE_NAMES)
    elif kind == "empty_name":
        attributes["first_name"] = rng.choice(("", None))
        attributes["last_name"] = ""
    elif kind == "emoji_name":
        attributes["first_name"] = rng.choice(EMOJI_NAMES)
    else:
        raise ValueError(f"unknown fault kind {kind!r}")
    profile.fault = kind


def generate_profiles(
    rng: random.Random,
    count: int,
    faulty_share: float = 0.1,
    *,
    start_index: int = 0,
    created: datetime,
) -> list[SeedProfile]:
    """`count` UK profiles, round(count * faulty_share) of them faulty."""
    profiles = [
        uk_profile(rng, start_index + n, created - timedelta(days=rng.randint(1, 900)))
        for n in range(count)
    ]
    faulty = rng.sample(range(count), round(count * faulty_share)) if count else []
    for position, index in enumerate(faulty):
        plant_fault(rng, profiles[index], FAULT_KINDS[position % len(FAULT_KINDS)])
    return profiles
