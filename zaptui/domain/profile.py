"""A Klaviyo profile as the sync engine sees it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from zaptui.clock import parse_iso


def _text(value: Any) -> str:
    """A value from outside as plain text ("" for null or missing)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class Profile:
    """The attributes of one member of a list or segment. Any may be empty."""

    id: str
    email: str = ""
    phone_number: str = ""
    external_id: str = ""
    first_name: str = ""
    last_name: str = ""
    organization: str = ""
    title: str = ""
    locale: str = ""
    location: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    joined_group_at: datetime | None = None

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
        location = attributes.get("location")
        properties = attributes.get("properties")
        joined_text = attributes.get("joined_group_at")
        try:
            joined = parse_iso(joined_text) if isinstance(joined_text, str) else None
        except (ValueError, OverflowError):
            joined = None
        return cls(
            id=_text(resource.get("id")),
            email=_text(attributes.get("email")),
            phone_number=_text(attributes.get("phone_number")),
            external_id=_text(attributes.get("external_id")),
            first_name=_text(attributes.get("first_name")),
            last_name=_text(attributes.get("last_name")),
            organization=_text(attributes.get("organization")),
            title=_text(attributes.get("title")),
            locale=_text(attributes.get("locale")),
            location=location if isinstance(location, dict) else {},
            properties=properties if isinstance(properties, dict) else {},
            joined_group_at=joined,
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
        if head in _PLAIN_FIELDS:
            return lambda p: getattr(p, head, None)
        return _nothing


def _nothing(profile: Profile) -> None:
    """What a path that names no field reads."""
    return None


_PLAIN_FIELDS = {
    "id",
    "email",
    "phone_number",
    "external_id",
    "first_name",
    "last_name",
    "organization",
    "title",
    "locale",
}
