"""The ZAP~POST API client and its errors."""

from __future__ import annotations

from zaptui.zappost.client import (
    REFERENCE_FIELD,
    RetryPolicy,
    SubmissionResult,
    ZapPostClient,
)
from zaptui.zappost.errors import (
    InvalidRequest,
    NotFound,
    Unauthorized,
    Unavailable,
    ZapPostError,
)

__all__ = [
    "REFERENCE_FIELD",
    "InvalidRequest",
    "NotFound",
    "RetryPolicy",
    "SubmissionResult",
    "Unauthorized",
    "Unavailable",
    "ZapPostClient",
    "ZapPostError",
]
