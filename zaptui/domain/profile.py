"""A Klaviyo profile as the sync engine sees it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from zaptui.clock import parse_iso


def _text(value: Any) -> str:
    """A value from outside as plain text ("" for null or missing)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


# The fields that hold text; a path names one of them, or reads into location
# or properties.
_TEXT_FIELDS = (
    "id",
    "email",
    "phone_number",
    "external_id",
    "first_name",
    "last_name",
    "organization",
    "title",
    "locale",
)
_FIELDS = (*_TEXT_FIELDS, "location", "properties", "joined_group_at")


class Profile:
    """The attributes of one member of a list or segment. Any may be empty.

    Nothing changes a profile once it is read. It is a plain class with slots
    rather than a frozen dataclass because a sync run reads one per member,
    and a frozen dataclass sets each field through `object.__setattr__`.
    """

    __slots__ = _FIELDS

    id: str
    email: str
    phone_number: str
    external_id: str
    first_name: str
    last_name: str
    organization: str
    title: str
    locale: str
    location: dict[str, Any]
    properties: dict[str, Any]
    joined_group_at: datetime | None

    def __init__(
        self,
        id: str,
        email: str = "",
        phone_number: str = "",
        external_id: str = "",
        first_name: str = "",
        last_name: str = "",
        organization: str = "",
        title: str = "",
        locale: str = "",
        location: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
        joined_group_at: datetime | None = None,
    ) -> None:
        self.id = id
        self.email = email
        self.phone_number = phone_number
        self.external_id = external_id
        self.first_name = first_name
        self.last_name = last_name
        self.organization = organization
        self.title = title
        self.locale = locale
        self.location = {} if location is None else location
        self.properties = {} if properties is None else properties
        self.joined_group_at = joined_group_at

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _FIELDS)
        return f"Profile({fields})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not Profile:
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in _FIELDS)

    __hash__ = None  # type: ignore[assignment]  # it holds dicts

    @classmethod
    def from_resource(cls, resource: Any) -> Profile:
        """Build a profile from a JSON:API `profile` resource, tolerating nulls.

        Anything that is not the expected shape (a resource that is not an
        object, attributes that are a list) reads as empty, never raises.
        """
        if not isinstance(resource, dict):
            resource = {}
        attributes = resource.get("attributes")
        if not isinstance(attributes, dict):
            attributes = {}
        # Read inline rather than through _text: this runs once per member.
        id = resource.get("id")
        email = attributes.get("email")
        phone_number = attributes.get("phone_number")
        external_id = attributes.get("external_id")
        first_name = attributes.get("first_name")
        last_name = attributes.get("last_name")
        organization = attributes.get("organization")
        title = attributes.get("title")
        locale = attributes.get("locale")
        location = attributes.get("location")
        properties = attributes.get("properties")
        joined_text = attributes.get("joined_group_at")
        try:
            joined = parse_iso(joined_text) if isinstance(joined_text, str) else None
        except (ValueError, OverflowError):
            joined = None
        return cls(
            id if type(id) is str else _text(id),
            email if type(email) is str else _text(email),
            phone_number if type(phone_number) is str else _text(phone_number),
            external_id if type(external_id) is str else _text(external_id),
            first_name if type(first_name) is str else _text(first_name),
            last_name if type(last_name) is str else _text(last_name),
            organization if type(organization) is str else _text(organization),
            title if type(title) is str else _text(title),
            locale if type(locale) is str else _text(locale),
            location if isinstance(location, dict) else {},
            properties if isinstance(properties, dict) else {},
            joined,
        )

    @property
    def display_name(self) -> str:
        """The name to show an operator, or the email when there is none."""
        name = f"{self.first_name} {self.last_name}".strip()
        return name or self.email or self.id

    def get(self, path: str) -> Any:
        """Read a field by path: `first_name`, `location.zip`, `properties.tier`."""
        return Profile.reader(path)(self)

    @staticmethod
    def reader(path: str) -> Callable[[Profile], Any]:
        """What `get(path)` does, as a function, the path read once."""
        head, _, rest = path.partition(".")
        if head == "location":
            return (lambda p: p.location.get(rest)) if rest else _nothing
        if head == "properties":
            return (lambda p: p.properties.get(rest)) if rest else _nothing
        if head in _TEXT_FIELDS:
            return lambda p: getattr(p, head, None)
        return _nothing


def _nothing(profile: Profile) -> None:
    """What a path that names no field reads."""
    return None
