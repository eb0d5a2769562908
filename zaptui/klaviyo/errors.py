"""Errors raised by the Klaviyo client, one class per thing an operator can act on."""

from __future__ import annotations


class KlaviyoError(Exception):
    """Klaviyo did not do what was asked; the message is one plain sentence."""

    def __init__(
        self, message: str, *, status: int | None = None, code: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    def __str__(self) -> str:
        return self.message


class Unauthorized(KlaviyoError):
    """The private key is missing, malformed, revoked or wrong (401)."""


class MissingScope(KlaviyoError):
    """The key works but lacks a scope the call needs (403 permission_denied)."""


class NotFound(KlaviyoError):
    """The list, segment or profile does not exist (404)."""


class InvalidRequest(KlaviyoError):
    """Klaviyo refused the request as invalid (400): a bug on our side or bad data."""


class Throttled(KlaviyoError):
    """Klaviyo kept throttling, or asked for a wait longer than we are willing to."""


class Unavailable(KlaviyoError):
    """Klaviyo could not be reached or kept failing (5xx, timeouts) after retries."""
