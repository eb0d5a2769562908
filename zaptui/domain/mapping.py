"""Field mapping: from a Klaviyo profile to a ZAP~POST campaign record.

A campaign names its fields; the operator links each one to a profile path
(`first_name`, `properties.offer_code`). The address fields come from the
cleansed address instead, so a record is only built from an address that
passed cleansing. Each record is checked against the campaign's expected
values and validation expressions before it is submitted, so the operator
sees the failures here rather than in ZAP~POST's rejected records.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import regex

from zaptui.domain.address import Address, NotText, clean_text, quoted
from zaptui.domain.profile import Profile

logger = logging.getLogger(__name__)

REFERENCE_KEY = "zaptui_reference"
"""The customdata key carrying the sync run's reference with each record."""

VALIDATION_TIMEOUT = 0.05
"""Seconds a campaign's validation expression may spend on one value."""

STANDARD_FIELDS: tuple[tuple[str, str, bool], ...] = (
    ("customerid", "Customer ID", True),
    ("email", "Email", False),
    ("salutation", "Salutation", False),
    ("firstname", "First name", False),
    ("surname", "Surname", False),
    ("companyname", "Company name", False),
    ("address1", "Address line 1", True),
    ("address2", "Address line 2", False),
    ("address3", "Address line 3", False),
    ("city", "Town", True),
    ("postcode", "Postcode", True),
    ("country", "Country", True),
)
"""The record fields every ZAP~POST campaign has: (name, label, required)."""

ADDRESS_FIELDS = frozenset(
    {"address1", "address2", "address3", "city", "postcode", "country"}
)
"""Standard fields filled from the cleansed address, never from the mapping."""

AUTOMATIC_FIELDS = ADDRESS_FIELDS | {"customerid"}
"""Fields the operator cannot map: the address and the Klaviyo profile id."""

PROFILE_FIELDS: list[tuple[str, str]] = [
    ("email", "Email"),
    ("first_name", "First name"),
    ("last_name", "Last name"),
    ("organization", "Organisation"),
    ("title", "Job title"),
    ("phone_number", "Phone number"),
    ("external_id", "External ID"),
    ("id", "Klaviyo profile ID"),
    ("locale", "Locale"),
    ("location.address1", "Address line 1"),
    ("location.address2", "Address line 2"),
    ("location.city", "City"),
    ("location.region", "Region"),
    ("location.zip", "Postcode"),
    ("location.country", "Country"),
]
"""Profile paths the operator can map from; `properties.<name>` paths too."""

PROPERTY_PREFIX = "properties."

_PROFILE_PATHS = frozenset(path for path, _ in PROFILE_FIELDS)

# Campaign field names as people write them, keyed without case or punctuation.
_SYNONYMS = {
    "firstname": "first_name",
    "forename": "first_name",
    "givenname": "first_name",
    "surname": "last_name",
    "lastname": "last_name",
    "familyname": "last_name",
    "companyname": "organization",
    "company": "organization",
    "organisation": "organization",
    "organization": "organization",
    "email": "email",
    "emailaddress": "email",
    "phone": "phone_number",
    "phonenumber": "phone_number",
    "telephone": "phone_number",
    "mobile": "phone_number",
    "jobtitle": "title",
    "externalid": "external_id",
}


@dataclass(frozen=True)
class CampaignField:
    """One field of a campaign's record, with the checks ZAP~POST applies."""

    name: str
    label: str
    required: bool
    custom: bool
    expected_values: tuple[str, ...] | None = None
    validation_expression: str | None = None
    validation_message: str = ""

    @property
    def described(self) -> str:
        """The field as an operator message names it."""
        if self.label and self.label != self.name:
            return f"{self.label} ({self.name})"
        return self.name


class MappingError(ValueError):
    """A mapping that names unknown fields or paths, or leaves required ones."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems) or "invalid mapping")
        self.problems = problems


def campaign_fields(campaign: Mapping[str, Any]) -> list[CampaignField]:
    """The fields of a campaign's record: the standard ones, then its own.

    A campaign may define a standard field itself (to add expected values or a
    validation expression); its definition then takes the standard place.
    """
    own: dict[str, CampaignField] = {}
    raw_fields = campaign.get("fields") if isinstance(campaign, Mapping) else None
    for raw in raw_fields if isinstance(raw_fields, list) else []:
        field = _campaign_field(raw)
        if field is not None and field.name.casefold() not in own:
            own[field.name.casefold()] = field

    fields: list[CampaignField] = []
    for name, label, required in STANDARD_FIELDS:
        defined = own.pop(name, None)
        if defined is None:
            fields.append(CampaignField(name, label, required, custom=False))
        else:
            fields.append(
                replace(
                    defined,
                    name=name,
                    label=defined.label if defined.label != defined.name else label,
                    required=defined.required or required,
                    custom=False,
                )
            )
    return fields + list(own.values())


def _campaign_field(raw: Any) -> CampaignField | None:
    """A custom field from the campaign's JSON, or None when it has no name."""
    if not isinstance(raw, Mapping):
        return None
    try:
        name = clean_text(raw.get("name"))[0]
        label = clean_text(raw.get("label"))[0] or name
        message = clean_text(raw.get("validationMessage"))[0]
    except NotText:
        return None
    if not name:
        return None

    expected = raw.get("expectedValues")
    values: tuple[str, ...] | None = None
    if isinstance(expected, list):
        values = tuple(_value_text(value) for value in expected)
        values = tuple(value for value in values if value) or None
    expression = raw.get("validationExpression")
    required = raw.get("required")
    return CampaignField(
        name=name,
        label=label,
        required=required is True or str(required).casefold() == "true",
        custom=True,
        expected_values=values,
        validation_expression=expression if _is_expression(expression) else None,
        validation_message=message,
    )


def is_profile_path(path: Any) -> bool:
    """Whether a mapping target names something a profile can hold."""
    if not isinstance(path, str):
        return False
    if path.startswith(PROPERTY_PREFIX):
        return len(path) > len(PROPERTY_PREFIX)
    return path in _PROFILE_PATHS


def _key(text: str) -> str:
    """A name compared without case, spaces or punctuation."""
    return re.sub(r"[^a-z0-9]", "", text.casefold())


def suggest_mapping(
    fields: list[CampaignField], sample_properties: Iterable[str] = ()
) -> dict[str, str]:
    """Suggest a profile path for each mappable field whose name fits one.

    `sample_properties` are custom property names seen on the list's profiles;
    a field with no convincing match is left out for the operator to choose.
    """
    properties = {
        _key(name): name
        for name in sample_properties
        if isinstance(name, str) and _key(name)
    }
    plain = {_key(path.rpartition(".")[2]): path for path, _ in PROFILE_FIELDS}
    suggestions: dict[str, str] = {}
    for field in fields:
        if field.name in AUTOMATIC_FIELDS:
            continue
        path = _suggest(field, properties, plain)
        if path is not None:
            suggestions[field.name] = path
    return suggestions


def _suggest(
    field: CampaignField, properties: dict[str, str], plain: dict[str, str]
) -> str | None:
    """The best profile path for one field: exact names first, then near ones."""
    keys = [key for key in (_key(field.name), _key(field.label)) if key]
    for key in keys:
        if key in _SYNONYMS:
            return _SYNONYMS[key]
        if key in properties:
            return PROPERTY_PREFIX + properties[key]
        if key in plain:
            return plain[key]

    for key in keys:
        close = difflib.get_close_matches(key, list(properties), n=1, cutoff=0.85)
        if close:
            return PROPERTY_PREFIX + properties[close[0]]
        close = difflib.get_close_matches(key, list(_SYNONYMS), n=1, cutoff=0.85)
        if close:
            return _SYNONYMS[close[0]]
    return None


def unmapped_required(
    mapping: Mapping[str, Any], fields: list[CampaignField]
) -> list[str]:
    """Names of required fields that neither the mapping nor the address fill."""
    return [
        field.name
        for field in fields
        if field.required
        and field.name not in AUTOMATIC_FIELDS
        and not mapping.get(field.name)
    ]


def validate_mapping(mapping: Any, fields: list[CampaignField]) -> list[str]:
    """Problems with a mapping, one sentence each; empty when it can be used."""
    if not isinstance(mapping, Mapping):
        return ["the mapping is not a set of campaign field to profile path pairs"]
    known = {field.name: field for field in fields}
    problems: list[str] = []
    for name, path in mapping.items():
        field = known.get(name) if isinstance(name, str) else None
        if field is None:
            problems.append(f"campaign field {quoted(str(name))} does not exist")
        elif name in AUTOMATIC_FIELDS:
            problems.append(
                f"{field.described} is filled from the cleansed address or the "
                "profile id, not from the mapping"
            )
        elif path and not is_profile_path(path):
            problems.append(
                f"{field.described} maps to unknown profile path {quoted(str(path))}"
            )
    for name in unmapped_required(mapping, fields):
        problems.append(f"required field {known[name].described} is not mapped")
    return problems


def check_mapping(mapping: Any, fields: list[CampaignField]) -> None:
    """Raise MappingError when a mapping cannot be used for the campaign."""
    problems = validate_mapping(mapping, fields)
    if problems:
        raise MappingError(problems)


def build_record(
    profile: Profile,
    address: Address,
    mapping: Mapping[str, Any],
    fields: list[CampaignField],
    reference: str,
) -> tuple[dict[str, Any] | None, list[str]]:
    """Build the ZAP~POST record for a profile, checked against the campaign.

    Returns the record and no errors, or None and one error per failing field.
    Never raises: a profile that cannot be mapped is reported, not fatal.
    """
    try:
        builder = RecordBuilder(mapping, fields, reference)
    except Exception as error:  # no profile may stop a sync run
        logger.warning("record could not be built: %s", type(error).__name__)
        return None, [f"the record could not be built ({type(error).__name__})"]
    return builder.build(profile, address)


_AUTOMATIC = object()
"""A field's source when it is filled from the address or the profile id."""

_STANDARD_NAMES = tuple(name for name, _, _ in STANDARD_FIELDS)

Check = Callable[[str], tuple[str, str]]
"""check_value for one field: a value in, (value to send, error or "") out."""


class RecordBuilder:
    """Builds one campaign's records, the mapping read once for all profiles.

    A sync run builds thousands of records from one mapping and one campaign:
    where each field comes from and whether it needs checking is worked out
    here, once, rather than for every profile.
    """

    def __init__(
        self,
        mapping: Mapping[str, Any],
        fields: list[CampaignField],
        reference: str,
    ) -> None:
        self._reference = _value_text(reference)
        self._steps: list[tuple[CampaignField, Any, str, bool]] = []
        for field in fields:
            source: Any = _AUTOMATIC
            problem = ""
            if field.name not in AUTOMATIC_FIELDS:
                path = mapping.get(field.name) if isinstance(mapping, Mapping) else None
                if path and not is_profile_path(path):
                    problem = (
                        f"{field.described} maps to unknown profile path "
                        f"{quoted(str(path))}"
                    )
                source = Profile.reader(path) if path else None
            # Only expected values and validation expressions need check_value.
            plain = (
                field.expected_values is None and field.validation_expression is None
            )
            self._steps.append((field, source, problem, plain))
        try:
            self._laid_out = self._lay_out()
        except Exception:  # a field the plan cannot prepare: the general steps
            self._laid_out = False
        self._encode = _compact_encoder()

    def _lay_out(self) -> bool:
        """Plan the common build: the campaign_fields shape and a sound mapping.

        That is the twelve standard fields in their order, then custom fields
        with names of their own, and every mapped path known. Any other list
        of fields is built by the general steps.
        """
        steps = self._steps
        names = [field.name for field, _, _, _ in steps]
        standard = [field for field, _, _, _ in steps[: len(_STANDARD_NAMES)]]
        if (
            tuple(names[: len(_STANDARD_NAMES)]) != _STANDARD_NAMES
            or any(field.custom for field in standard)
            or len(set(names)) != len(names)
            or any(problem for _, _, problem, _ in steps)
            or any(
                not field.custom or field.name in AUTOMATIC_FIELDS
                for field, _, _, _ in steps[len(_STANDARD_NAMES) :]
            )
        ):
            return False

        # The values of a record in field order: the profile id, the five
        # mapped standard fields, the six address fields, the custom fields.
        self._blanks = [""] * (len(steps) - len(_STANDARD_NAMES))
        self._mapped = [
            (index, source)
            for index, (_, source, _, _) in enumerate(steps)
            if source is not None and source is not _AUTOMATIC
        ]
        self._custom_names = [
            field.name for field, _, _, _ in steps[len(_STANDARD_NAMES) :]
        ]
        self._required = [
            index
            for index, (field, _, _, plain) in enumerate(steps)
            if plain and field.required
        ]
        self._checked = any(not plain for _, _, _, plain in steps)
        self._checks: list[tuple[int, str, Check | None]] = []
        for index, (field, _, _, plain) in enumerate(steps):
            if not plain:
                self._checks.append((index, "", _checker(field)))
            elif field.required:
                self._checks.append(
                    (index, f"{field.described} is required but empty", None)
                )
        return True

    def build(
        self, profile: Profile, address: Address
    ) -> tuple[dict[str, Any] | None, list[str]]:
        """The record for a profile, or None and one error per failing field.

        Never raises: a profile that cannot be mapped is reported, not fatal.
        """
        try:
            if self._laid_out:
                return self._build_laid_out(profile, address)
            return self._build(profile, address)
        except Exception as error:  # no profile may stop a sync run
            logger.warning("record could not be built: %s", type(error).__name__)
            return None, [f"the record could not be built ({type(error).__name__})"]

    def encode(self, record: dict[str, Any]) -> str:
        """The compact JSON text of a record this builder built, to send as is.

        Keys are in the record's own order, non-ASCII text is escaped.
        """
        return self._encode(record)

    def _build_laid_out(
        self, profile: Profile, address: Address
    ) -> tuple[dict[str, Any] | None, list[str]]:
        """_build for the planned layout: the same record and errors."""
        values: list[Any] = [
            profile.id,
            "",
            "",
            "",
            "",
            "",
            address.line1,
            address.line2,
            address.line3,
            address.town,
            address.postcode,
            address.country,
        ]
        if self._blanks:
            values += self._blanks
        for index, read in self._mapped:
            values[index] = read(profile)
        if not _left_as_they_are(values):
            values = [_value_text(value) for value in values]

        if self._checked or not all(map(values.__getitem__, self._required)):
            errors = self._check(values)
            if errors:
                return None, errors

        record: dict[str, Any] = dict(zip(_STANDARD_NAMES, values, strict=False))
        if self._blanks:
            customdata = dict(zip(self._custom_names, values[12:], strict=True))
            customdata[REFERENCE_KEY] = self._reference
        else:
            customdata = {REFERENCE_KEY: self._reference}
        record["customdata"] = customdata
        return record, []

    def _check(self, values: list[str]) -> list[str]:
        """The errors of a record's values in field order; checked values are
        replaced by the spelling to send."""
        errors: list[str] = []
        for index, message, check in self._checks:
            if check is None:
                if not values[index]:
                    errors.append(message)
                continue
            value, error = check(values[index])
            if error:
                errors.append(error)
            else:
                values[index] = value
        return errors

    def _build(
        self, profile: Profile, address: Address
    ) -> tuple[dict[str, Any] | None, list[str]]:
        """build's work for any list of fields; may raise only on a defect."""
        record: dict[str, Any] = dict(_BLANK_RECORD)
        record.update(
            customerid=_value_text(profile.id),
            address1=address.line1,
            address2=address.line2,
            address3=address.line3,
            city=address.town,
            postcode=address.postcode,
            country=address.country,
        )
        customdata: dict[str, Any] = {}
        errors: list[str] = []

        for field, source, problem, plain in self._steps:
            if problem:
                errors.append(problem)
                continue
            if source is _AUTOMATIC:
                value = _value_text(record.get(field.name))
            elif source is None:
                value = ""
            else:
                value = _value_text(source(profile))

            if plain:
                error = (
                    f"{field.described} is required but empty"
                    if field.required and not value
                    else ""
                )
            else:
                value, error = check_value(field, value)
            if error:
                errors.append(error)
            elif field.custom:
                customdata[field.name] = value
            else:
                record[field.name] = value

        if errors:
            return None, errors
        customdata[REFERENCE_KEY] = self._reference
        record["customdata"] = customdata
        return record, []


_BLANK_RECORD = {name: "" for name, _, _ in STANDARD_FIELDS}


def _compact_encoder() -> Callable[[Any], str]:
    """json.dumps(value, separators=(",", ":")) without its set-up per call.

    JSONEncoder.encode makes a new C encoder for every value; records are
    encoded one by one, so the one made here is kept, where the C
    accelerator exists.
    """
    encoder = json.JSONEncoder(separators=(",", ":"), check_circular=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return encoder.encode
    try:
        chunks = make(
            None,  # no circular reference check: a record is two flat dicts
            encoder.default,
            json.encoder.encode_basestring_ascii,
            None,  # no indent
            encoder.key_separator,
            encoder.item_separator,
            False,  # keys in the record's order
            False,  # skipkeys
            True,  # allow_nan, as json.dumps
        )
    except Exception:  # an interpreter whose accelerator takes other arguments
        return encoder.encode
    return lambda value: "".join(chunks(value, 0))


def _left_as_they_are(values: list[Any]) -> bool:
    """Whether _value_text would return every one of these values as it is.

    True when all are text of printable ASCII with no space at either end and
    none doubled: checked on the values joined, in a few calls for them all.
    The separator can only make a value look as if it needed cleaning. (A str
    subclass passes as the text it holds, which is what _value_text returns.)
    """
    try:
        joined = f"|{'|'.join(values)}|"
    except TypeError:  # not all text
        return False
    return (
        joined.isascii()
        and joined.isprintable()
        and "  " not in joined
        and "| " not in joined
        and " |" not in joined
    )


def _value_text(value: Any) -> str:
    """Any value from a profile as one line of text; structures as JSON."""
    if type(value) is str and value.isascii() and value.isprintable():
        # The common case, cleaned without the general path's calls.
        return " ".join(value.split()) if "  " in value else value.strip()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        value = json.dumps(value, ensure_ascii=False, default=str)
    elif value is not None and not isinstance(value, str | int | float):
        value = str(value)
    return clean_text(value)[0]


def check_value(field: CampaignField, value: str) -> tuple[str, str]:
    """Check one value against a field; returns (value to send, error or "").

    An expected value matched without regard to case is sent in the campaign's
    own spelling.
    """
    try:
        check = _checker(field)
    except TypeError:  # a field built by hand with a list where a tuple belongs
        check = _checker.__wrapped__(field)
    return check(value)


_KNOWN_OUTCOMES = 4096
"""How many values' expression outcomes one field remembers."""


@lru_cache(maxsize=256)
def _checker(field: CampaignField) -> Check:
    """check_value for one field, with its expected values and expression
    prepared once."""
    described = field.described
    required = f"{described} is required but empty" if field.required else ""
    expected = field.expected_values
    allowed: dict[str, str] | None = None
    choices = ""
    if expected is not None:
        allowed = {value.casefold(): value for value in expected}
        choices = ", ".join(expected[:10]) + (", ..." if len(expected) > 10 else "")
    expression = field.validation_expression
    pattern: Any = None
    uncompiled = ""
    if expression is not None:
        pattern, problem = _compile(expression)
        uncompiled = (
            f"{described} has a validation expression that does not compile ({problem})"
        )
    message = field.validation_message or "does not match the expected format"
    # Whether each value matched, as the timeout makes every call to the regex
    # module slow; a value that timed out is tried again next time.
    matched: dict[str, bool] = {}

    def check(value: str) -> tuple[str, str]:
        if not value:
            return value, required
        if allowed is not None:
            spelling = allowed.get(value.casefold())
            if spelling is None:
                return value, (f"{described} is {quoted(value)}, not one of {choices}")
            value = spelling
        if expression is not None:
            if pattern is None:
                return value, uncompiled
            known = matched.get(value)
            if known is None:
                try:
                    found = pattern.fullmatch(value, timeout=VALIDATION_TIMEOUT)
                except TimeoutError:
                    return value, (
                        f"{described} could not be checked: its validation "
                        "expression takes too long"
                    )
                known = found is not None
                if len(matched) >= _KNOWN_OUTCOMES:
                    matched.clear()
                matched[value] = known
            if not known:
                return value, f"{described}: {message} (was {quoted(value)})"
        return value, ""

    return check


@lru_cache(maxsize=256)
def _compile(expression: str) -> tuple[Any, str]:
    """A campaign's validation expression compiled, or None and why not."""
    try:
        return regex.compile(expression), ""
    except Exception as error:  # any malformed expression is data, not a crash
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        return None, quoted(detail, 60)[1:-1]


def _is_expression(value: Any) -> bool:
    """Whether a campaign's validationExpression holds an expression at all."""
    return isinstance(value, str) and bool(value.strip())
