"""UK postal address cleansing: the format rules that can be applied offline.

A profile's location arrives as free text from Klaviyo. Cleansing turns it into
an `Address` fit to print (Royal Mail layout), records every correction so the
operator can see and write it back, and explains every failure in one short
sentence. Checks that need licensed data (PAF, gone-away, deceased) plug in
through `AddressVerifier`.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass, field
from itertools import product
from typing import Any, Protocol

from zaptui.domain.profile import Profile

logger = logging.getLogger(__name__)

UNITED_KINGDOM = "United Kingdom"
MAX_LINE_LENGTH = 35

# BS 7666 letter rules. Some later sources add P to the third-position letters;
# the schema does not, and no current postcode needs it.
_FIRST = "A-PR-UWYZ"  # never Q, V, X
_SECOND = "A-HK-Y"  # never I, J, Z
_THIRD = "ABCDEFGHJKSTUW"
_FOURTH = "ABEHMNPRVWXY"
_INWARD = "ABD-HJLNP-UW-Z"  # never C, I, K, M, O, V

OUTWARD_PATTERN = re.compile(
    rf"[{_FIRST}](?:[0-9][0-9]?|[{_SECOND}][0-9][0-9]?"
    rf"|[0-9][{_THIRD}]|[{_SECOND}][0-9][{_FOURTH}])",
    re.ASCII,
)
POSTCODE_PATTERN = re.compile(
    rf"(?:GIR 0AA|{OUTWARD_PATTERN.pattern} [0-9][{_INWARD}]{{2}})", re.ASCII
)
"""A well-formed UK postcode, upper case with one space (use fullmatch)."""
_INWARD_PATTERN = re.compile(rf"[0-9][{_INWARD}]{{2}}", re.ASCII)
_NOT_LETTER = re.compile(r"[^a-z]")

_COUNTRY_ALIASES = {
    "uk",
    "gb",
    "gbr",
    "greatbritain",
    "britain",
    "england",
    "scotland",
    "wales",
    "northernireland",
    "unitedkingdom",
    "unitedkingdomofgreatbritainandnorthernireland",
}
# The spellings customers use most, so that most profiles need no casefolding;
# any other is checked against the aliases above.
_UK_SPELLINGS = frozenset(
    spelling
    for written in (
        "United Kingdom",
        "UK",
        "U.K.",
        "GB",
        "GBR",
        "Great Britain",
        "Britain",
        "England",
        "Scotland",
        "Wales",
        "Northern Ireland",
    )
    for spelling in (written, written.upper(), written.lower(), written.title())
)

# Terminal escape sequences: CSI (ESC [ or the C1 byte), OSC/DCS/APC/PM/SOS
# strings up to BEL or ST, then any other two-character ESC sequence.
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]P_^X]|[\x9d\x90\x9f\x9e\x98])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -~]?"
)
_WHITESPACE = re.compile(r"\s+")
# Bidirectional overrides and isolates can make printed text read differently
# from what was checked, so they go with the control characters.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


@dataclass(frozen=True)
class Address:
    """A postal address laid out for printing, one field per printed line."""

    name: str
    line1: str
    line2: str = ""
    line3: str = ""
    town: str = ""
    county: str = ""
    postcode: str = ""
    country: str = UNITED_KINGDOM

    def lines(self) -> list[str]:
        """The non-empty printed lines, name first and postcode last."""
        parts = [self.name, self.line1, self.line2, self.line3, self.town]
        parts += [self.county, self.postcode]
        return [part for part in parts if part]


@dataclass(frozen=True)
class CleanseResult:
    """The outcome of cleansing one profile's address, for the cleanse report."""

    address: Address | None
    reasons: tuple[str, ...] = ()
    changes: tuple[str, ...] = ()
    original: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def ok(self) -> bool:
        """Whether the address can be mailed."""
        return self.address is not None and not self.reasons

    @property
    def corrected(self) -> bool:
        """Whether the address can be mailed only after corrections."""
        return self.ok and bool(self.changes)


@dataclass(frozen=True)
class VerificationResult:
    """What a verifier made of an address: possibly corrected, or why it failed."""

    address: Address | None
    reasons: tuple[str, ...] = ()
    changes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the verifier accepted the address."""
        return self.address is not None and not self.reasons


class AddressVerifier(Protocol):
    """A check on a cleansed address: PAF match, gone-away or deceased files."""

    def verify(self, address: Address) -> VerificationResult:
        """Accept, correct or reject an address."""
        ...


class RulesVerifier:
    """The default verifier: the offline format rules and nothing else."""

    def verify(self, address: Address) -> VerificationResult:
        """Accept the address when it meets the format rules."""
        reasons = check_address(address)
        if reasons:
            return VerificationResult(None, tuple(reasons))
        return VerificationResult(address)


_RULES = RulesVerifier()


class NotText(TypeError):
    """A field holding a list, mapping or flag where text belongs."""


def quoted(text: str, limit: int = 40) -> str:
    """Text in single quotes for an operator message, shortened when long.

    The text is made safe to show first: whatever it held, the message is
    one line with no control characters.
    """
    try:
        text = clean_text(text)[0]
    except NotText:
        text = type(text).__name__
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"'{text}'"


def clean_text(value: Any) -> tuple[str, bool]:
    """Outside data as one line of plain text, and whether anything was stripped.

    Escape sequences, control characters, bidirectional controls and lone
    surrogates are removed; whitespace runs become single spaces. Markup such
    as "[bold]" is data and stays as it is. Raises NotText for lists, mappings
    and flags, which no address field should hold.
    """
    text = value if type(value) is str else _as_text(value)
    if text.isascii() and text.isprintable():
        # Printable ASCII holds no whitespace but the plain space.
        if "  " in text:
            return " ".join(text.split()), False
        return text.strip(), False

    stripped = _ESCAPES.sub("", text)
    removed = len(stripped) != len(text)
    kept: list[str] = []
    for char in stripped:
        category = unicodedata.category(char)
        if char.isspace():
            kept.append(" ")
            removed = removed or category == "Cc"
        elif char in _BIDI_CONTROLS or category in ("Cc", "Cs"):
            removed = True
        else:
            kept.append(char)
    return _WHITESPACE.sub(" ", "".join(kept)).strip(), removed


def _as_text(value: Any) -> str:
    """A scalar from outside as text; anything else is not text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise NotText(type(value).__name__)


def normalise_postcode(text: str) -> tuple[str | None, str]:
    """Normalise a UK postcode, repairing only unambiguous typos.

    Returns the postcode in upper case with one space, or None and the reason it
    is not a valid UK postcode. Repairs: case, spacing, and letter O / I where
    the pattern needs a digit and only one reading is valid.
    """
    try:
        raw = clean_text(text)[0]
    except NotText:
        return None, "postcode is not text"
    if not raw:
        return None, "postcode is missing"

    compact = _WHITESPACE.sub("", raw)
    if not compact.isascii():
        return None, f"postcode {quoted(raw)} is not a valid UK postcode"
    compact = compact.upper()
    if compact == "GIR0AA":
        return "GIR 0AA", ""
    if compact.startswith("BFPO"):
        # TODO(bfpo): accept BFPO numbers once ZAP~POST confirms it prints them.
        return None, f"postcode {quoted(raw)} is a BFPO number, not a UK postcode"
    if not 5 <= len(compact) <= 7:
        return None, f"postcode {quoted(raw)} is not a valid UK postcode"

    outward = compact[:-3]
    inward = _repair_inward(compact[-3:])
    outwards = _outward_readings(outward)
    if inward is None or len(outwards) != 1:
        detail = _postcode_problem(outward, compact[-3:], len(outwards) > 1)
        return None, f"postcode {quoted(raw)} is not a valid UK postcode: {detail}"
    return f"{outwards[0]} {inward}", ""


def _repair_inward(inward: str) -> str | None:
    """The inward code with O or I in its digit position read as 0 or 1."""
    digit = {"O": "0", "I": "1"}.get(inward[0], inward[0])
    candidate = digit + inward[1:]
    if _INWARD_PATTERN.fullmatch(candidate):
        return candidate
    return None


def _outward_readings(outward: str) -> list[str]:
    """The valid outward codes the text can be read as: itself, else O/I repairs."""
    if OUTWARD_PATTERN.fullmatch(outward):
        return [outward]
    options = [
        (char, {"O": "0", "I": "1"}[char]) if char in "OI" else (char,)
        for char in outward
    ]
    readings = {"".join(chars) for chars in product(*options)}
    return sorted(r for r in readings if OUTWARD_PATTERN.fullmatch(r))


def _postcode_problem(outward: str, inward: str, ambiguous: bool) -> str:
    """Which rule a malformed postcode breaks, in the operator's words."""
    if ambiguous:
        return "the letters O and I could be read more than one way"
    if not re.fullmatch(r"[0-9OI][A-Z]{2}", inward):
        return "the last part must be a digit and two letters"
    if _repair_inward(inward) is None:
        return "the last two letters never use C, I, K, M, O or V"
    if not outward[:1].isalpha():
        return "it must start with a letter"
    if outward[0] in "QVX":
        return "the first letter is never Q, V or X"
    if len(outward) > 1 and outward[1] in "IJZ":
        return "the second letter is never I, J or Z"
    if re.fullmatch(r"[A-Z][0-9][A-Z]", outward):
        return f"a third-position letter is one of {' '.join(_THIRD)}"
    if re.fullmatch(r"[A-Z]{2}[0-9][A-Z]", outward):
        return f"a fourth-position letter is one of {' '.join(_FOURTH)}"
    return "the first part must be like A9, A99, AA9, AA99, A9A or AA9A"


def check_address(address: Address) -> list[str]:
    """The format rules an address to print must meet; empty when it meets them.

    Used on every cleansed address and on addresses a verifier or an operator
    corrected, so that nothing unprintable reaches a submission.
    """
    reasons: list[str] = []
    if not address.name:
        reasons.append("name is missing (no first name, last name or organisation)")
    if not address.line1:
        reasons.append("address line 1 is missing")
    if not address.town:
        reasons.append("town is missing")
    outside_uk = bool(address.country) and address.country != UNITED_KINGDOM
    if outside_uk:
        reasons.append(f"country {quoted(address.country)} is outside the UK")
    if not address.postcode:
        reasons.append("postcode is missing")
    elif not outside_uk and not POSTCODE_PATTERN.fullmatch(address.postcode):
        normalised, reason = normalise_postcode(address.postcode)
        if normalised is not None:
            reason = (
                f"postcode {quoted(address.postcode)} is not written as {normalised}"
            )
        reasons.append(reason)
    elif not address.country:
        # Only a valid postcode lets a blank country be taken as the UK.
        reasons.append("country is missing")

    lines = [
        ("name", address.name),
        ("address line 1", address.line1),
        ("address line 2", address.line2),
        ("address line 3", address.line3),
        ("town", address.town),
        ("county", address.county),
    ]
    for label, line in lines:
        if len(line) > MAX_LINE_LENGTH:
            reasons.append(
                f"{label} is {len(line)} characters, more than {MAX_LINE_LENGTH}: "
                f"{quoted(line)}"
            )
    return reasons


def cleanse(profile: Profile, verifier: AddressVerifier | None = None) -> CleanseResult:
    """Cleanse a profile's location into a printable UK address.

    Never raises: whatever the profile holds, the result either carries an
    address or at least one reason the operator can act on.
    """
    location = getattr(profile, "location", None)
    original = dict(location) if isinstance(location, dict) else {}
    try:
        verifier = verifier or _RULES
        result = _cleanse_plain(profile, original, verifier)
        if result is None:
            result = _cleanse(profile, original, verifier)
        return result
    except Exception as error:  # no profile may stop a sync run
        logger.warning(
            "address cleansing failed for profile %s: %s",
            quoted(str(getattr(profile, "id", "?"))),
            type(error).__name__,
        )
        return CleanseResult(None, ("the address could not be read",), (), original)


def _plain(value: Any) -> str | None:
    """A missing or printable ASCII value as clean_text cleans it, else None.

    Such a value holds no control characters, so cleaning it records no change.
    """
    if type(value) is str:
        if value.isascii() and value.isprintable():
            return " ".join(value.split()) if "  " in value else value.strip()
        return None
    return "" if value is None else None


def _quoted_plain(text: str) -> str:
    """What quoted() makes of text that _plain already cleaned."""
    return f"'{text}'" if len(text) <= 40 else f"'{text[:39]}…'"


def _cleanse_plain(
    profile: Profile, location: dict[str, Any], verifier: AddressVerifier
) -> CleanseResult | None:
    """_cleanse for the common profile: every field missing or printable ASCII.

    Gives what _cleanse gives, with the general steps skipped where such text
    cannot need them; None for any other profile, which _cleanse then takes.
    """
    first = _plain(getattr(profile, "first_name", ""))
    last = _plain(getattr(profile, "last_name", ""))
    organisation = _plain(getattr(profile, "organization", ""))
    if first is None or last is None or organisation is None:
        return None
    line1 = _plain(location.get("address1"))
    line2 = _plain(location.get("address2"))
    city = _plain(location.get("city"))
    county = _plain(location.get("region"))
    raw_postcode = _plain(location.get("zip"))
    raw_country = _plain(location.get("country"))
    if (
        line1 is None
        or line2 is None
        or city is None
        or county is None
        or raw_postcode is None
        or raw_country is None
    ):
        return None

    changes: list[str] = []
    name = f"{first} {last}".strip() or organisation
    if not line1 and line2:
        line1, line2 = line2, ""
        changes.append("moved address line 2 up to address line 1")

    town = city.upper()
    if town != city:
        changes.append(f"town {_quoted_plain(city)} -> {_quoted_plain(town)}")

    # A postcode that already matches the pattern is its own normalised form.
    postcode_ok = POSTCODE_PATTERN.fullmatch(raw_postcode) is not None
    postcode = raw_postcode
    if not postcode_ok:
        normalised, _ = normalise_postcode(raw_postcode)
        if normalised is not None:
            postcode = normalised
            postcode_ok = True
            if postcode != raw_postcode:
                changes.append(f"postcode {quoted(raw_postcode)} -> {quoted(postcode)}")

    if raw_country in _UK_SPELLINGS:
        country = UNITED_KINGDOM
    else:
        country = _normalise_country(raw_country)
    if not raw_country and postcode_ok:
        country = UNITED_KINGDOM
        changes.append(f"country blank, assumed {quoted(UNITED_KINGDOM)} from postcode")
    elif country != raw_country:
        changes.append(
            f"country {_quoted_plain(raw_country)} -> {_quoted_plain(country)}"
        )

    candidate = _address(name, line1, line2, "", town, county, postcode, country)
    printable = (
        name
        and line1
        and town
        and postcode_ok
        and country == UNITED_KINGDOM
        and len(name) <= MAX_LINE_LENGTH
        and len(line1) <= MAX_LINE_LENGTH
        and len(line2) <= MAX_LINE_LENGTH
        and len(town) <= MAX_LINE_LENGTH
        and len(county) <= MAX_LINE_LENGTH
    )
    if not printable:
        # What check_address says of it; with every field text, _cleanse
        # reports exactly that.
        reasons = list(dict.fromkeys(check_address(candidate)))
        if reasons:
            return _result(None, tuple(reasons), tuple(changes), location)
    return _verified(candidate, changes, location, verifier)


def _cleanse(
    profile: Profile, location: dict[str, Any], verifier: AddressVerifier
) -> CleanseResult:
    """Cleanse one location; may raise only on a defect, which cleanse() absorbs."""
    reasons: list[str] = []
    changes: list[str] = []
    not_text: set[str] = set()

    def text(label: str, value: Any) -> str:
        try:
            cleaned, removed = clean_text(value)
        except NotText as error:
            reasons.append(f"{label} is not text ({error})")
            not_text.add(label)
            return ""
        if removed:
            changes.append(f"removed control characters from {label}")
        return cleaned

    first = text("first name", getattr(profile, "first_name", ""))
    last = text("last name", getattr(profile, "last_name", ""))
    organisation = text("organisation", getattr(profile, "organization", ""))
    name = f"{first} {last}".strip() or organisation
    if not name and {"first name", "last name", "organisation"} & not_text:
        not_text.add("name")

    line1 = text("address line 1", location.get("address1"))
    line2 = text("address line 2", location.get("address2"))
    if not line1 and line2 and "address line 1" not in not_text:
        line1, line2 = line2, ""
        changes.append("moved address line 2 up to address line 1")

    city = text("town", location.get("city"))
    town = city.upper()
    if town != city:
        changes.append(f"town {quoted(city)} -> {quoted(town)}")

    county = text("county", location.get("region"))

    raw_postcode = text("postcode", location.get("zip"))
    postcode, _ = normalise_postcode(raw_postcode)
    if postcode is None:
        postcode = raw_postcode
    elif postcode != raw_postcode:
        changes.append(f"postcode {quoted(raw_postcode)} -> {quoted(postcode)}")

    raw_country = text("country", location.get("country"))
    country = _normalise_country(raw_country)
    if not raw_country and POSTCODE_PATTERN.fullmatch(postcode):
        country = UNITED_KINGDOM
        changes.append(f"country blank, assumed {quoted(UNITED_KINGDOM)} from postcode")
    elif country != raw_country:
        changes.append(f"country {quoted(raw_country)} -> {quoted(country)}")

    candidate = _address(name, line1, line2, "", town, county, postcode, country)
    for reason in check_address(candidate):
        label = reason.partition(" is missing")[0]
        if label not in not_text and reason not in reasons:
            reasons.append(reason)
    if reasons:
        return _result(None, tuple(reasons), tuple(changes), location)
    return _verified(candidate, changes, location, verifier)


def _verified(
    candidate: Address,
    changes: list[str],
    location: dict[str, Any],
    verifier: AddressVerifier,
) -> CleanseResult:
    """The result for an address that met the format rules, once verified."""
    if type(verifier) is RulesVerifier:
        # Its only check, check_address, has just passed.
        return _result(candidate, (), tuple(changes), location)
    try:
        verified = verifier.verify(candidate)
    except Exception as error:  # a verifier service failing rejects, never stops
        logger.warning("address verification failed: %s", type(error).__name__)
        reason = f"address verification failed ({type(error).__name__})"
        return CleanseResult(None, (reason,), tuple(changes), location)
    changes.extend(verified.changes)
    if not verified.ok or verified.address is None:
        rejected = tuple(verified.reasons) or ("address verification rejected it",)
        return CleanseResult(None, rejected, tuple(changes), location)
    final_reasons = check_address(verified.address)
    if final_reasons:
        return CleanseResult(None, tuple(final_reasons), tuple(changes), location)
    return CleanseResult(verified.address, (), tuple(changes), location)


_new = object.__new__


def _address(
    name: str,
    line1: str,
    line2: str,
    line3: str,
    town: str,
    county: str,
    postcode: str,
    country: str,
) -> Address:
    """Address(...) without the frozen dataclass's one __setattr__ per field."""
    address = _new(Address)
    address.__dict__.update(
        name=name,
        line1=line1,
        line2=line2,
        line3=line3,
        town=town,
        county=county,
        postcode=postcode,
        country=country,
    )
    return address


def _result(
    address: Address | None,
    reasons: tuple[str, ...],
    changes: tuple[str, ...],
    original: dict[str, Any],
) -> CleanseResult:
    """CleanseResult(...) built the way _address builds an Address."""
    result = _new(CleanseResult)
    result.__dict__.update(
        address=address, reasons=reasons, changes=changes, original=original
    )
    return result


def _normalise_country(country: str) -> str:
    """A name of the UK in any common spelling as "United Kingdom"."""
    key = _NOT_LETTER.sub("", country.casefold())
    return UNITED_KINGDOM if key in _COUNTRY_ALIASES else country


_KEPT_LOCATION_KEYS = ("latitude", "longitude", "timezone", "ip")


def to_klaviyo_location(address: Address, original: dict[str, Any]) -> dict[str, Any]:
    """The whole corrected location to write back to the Klaviyo profile.

    Klaviyo may clear fields left out of a partial location, so every field is
    sent, with latitude, longitude, timezone and ip kept from the original.
    """
    original = original if isinstance(original, dict) else {}
    try:
        original_city = clean_text(original.get("city"))[0]
    except NotText:
        original_city = ""
    # Capitals are Royal Mail's print layout, not a fault in the customer's
    # data: a town that differs only in case is written back as it was.
    city = address.town
    if original_city and original_city.casefold() == city.casefold():
        city = original_city

    line2 = ", ".join(line for line in (address.line2, address.line3) if line)
    location: dict[str, Any] = {
        "address1": address.line1,
        "address2": line2 or None,
        "city": city,
        "region": address.county or None,
        "zip": address.postcode,
        "country": address.country,
    }
    for key in _KEPT_LOCATION_KEYS:
        if key in original:
            location[key] = original[key]
    return location


def location_needs_update(address: Address, original: dict[str, Any]) -> bool:
    """Whether writing the cleansed address back would change the profile."""
    original = original if isinstance(original, dict) else {}
    corrected = to_klaviyo_location(address, original)
    return any(
        (corrected[key] or None) != (original.get(key) or None)
        for key in ("address1", "address2", "city", "region", "zip", "country")
    )
