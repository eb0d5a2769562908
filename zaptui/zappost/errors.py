"""Errors raised by the ZAP~POST client, one class per thing an operator can fix."""

from __future__ import annotations

from typing import Any


class ZapPostError(Exception):
    """ZAP~POST did not do what was asked; the message is one plain sentence."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return self.message


class Unauthorized(ZapPostError):
    """ZAP~POST refused the API key and password (401)."""


class NotFound(ZapPostError):
    """The campaign, submission or endpoint does not exist (404)."""


class InvalidRequest(ZapPostError):
    """ZAP~POST refused the request as invalid (400), with its validation messages."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = 400,
        messages: list[str] | None = None,
        invalid_records: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message, status=status)
        self.messages = list(messages or [])
        self.invalid_records = list(invalid_records or [])


class Unavailable(ZapPostError):
    """ZAP~POST could not be reached or kept failing (5xx, timeouts) after retries."""
