"""Fault injection for the simulators: throttling, server errors, slowness, drops.

Rules are kept per service ("klaviyo", "zappost", ...) and endpoint. An
endpoint is "*" (everything), a route name ("segment_profiles"), or a path
pattern with an optional method ("GET /api/segments/{id}/profiles",
"/api/lists*"). Each rule fires `count` times (None: until cleared), after
letting `skip` matching requests through. Tests add rules from their own
thread while the simulator serves from a uvicorn thread, so every access to
the rules holds a lock.

Kinds and their options:

- "429": `retry_after` seconds in the Retry-After header (default 1; None
  sends no header, like some real 429s) and `wait` seconds named in the body
  detail "Expected available in N seconds" (default: retry_after, else 1;
  None names no wait at all).
- "5xx": `status` 500, 502, 503 or 504 (default 503).
- "slow": `delay` seconds (default 1.0) before the normal response.
- "drop": the response starts and the connection dies mid-body.
- "malformed": 200 with a body that is not valid JSON.
- "html403": 403 with an HTML page, as a CDN in front of an API sends.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from zaptui.sim.asgi import Response, Send, compile_pattern

log = logging.getLogger(__name__)

KINDS = ("429", "5xx", "slow", "drop", "malformed", "html403")

ErrorRenderer = Callable[[int, str, str, str], Response]

_HTML_403 = (
    b"<!DOCTYPE html>\n<html><head><title>Attention Required! | Cloudflare</title>"
    b"</head><body><h1>Sorry, you have been blocked</h1><p>You are unable to "
    b"access this website.</p></body></html>\n"
)


class ConnectionDropped(httpx.RemoteProtocolError):
    """Raised by the simulator to cut a response off mid-body.

    Over a real server the connection closes after a partial body; in process
    (httpx.ASGITransport) the exception itself reaches the client, which sees
    the same transport error class either way.
    """

    def __init__(self) -> None:
        super().__init__("simulated connection drop: peer closed mid-response")


@dataclass
class Fault:
    """One fired fault: its kind and options, ready to apply to a response."""

    kind: str
    options: dict[str, Any] = field(default_factory=dict)

    def response(self, error: ErrorRenderer) -> Response | None:
        """The response that replaces the real one (None for "slow" and "drop")."""
        if self.kind == "429":
            retry_after = self.options.get("retry_after", 1)
            wait = self.options.get("wait", retry_after or 1)
            detail = "Request was throttled."
            if wait is not None:
                unit = "second" if wait == 1 else "seconds"
                detail += f" Expected available in {wait} {unit}."
            response = error(429, "throttled", "Request was throttled.", detail)
            if retry_after is not None:
                response.headers["Retry-After"] = str(retry_after)
            return response
        if self.kind == "5xx":
            status = int(self.options.get("status", 503))
            return error(
                status, "error", "Server error.", "A simulated server error occurred."
            )
        if self.kind == "malformed":
            return Response(
                200, b'{"data": [{"type": "profile", "id": ', {}, "application/json"
            )
        if self.kind == "html403":
            return Response(403, _HTML_403, {}, "text/html; charset=UTF-8")
        return None

    async def apply(self, send: Send, error: ErrorRenderer) -> bool:
        """Act on one request; True when the request needs no further handling."""
        if self.kind == "slow":
            await asyncio.sleep(float(self.options.get("delay", 1.0)))
            return False
        if self.kind == "drop":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"4096"),
                    ],
                }
            )
            await send(
                {"type": "http.response.body", "body": b'{"data": [', "more_body": True}
            )
            raise ConnectionDropped()
        response = self.response(error)
        assert response is not None
        await response.send(send)
        return True


@dataclass
class FaultRule:
    """A standing instruction to fail matching requests."""

    id: int
    service: str
    endpoint: str
    kind: str
    count: int | None
    skip: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    fired: int = 0
    method: str | None = None
    regex: re.Pattern[str] | None = None

    def matches(self, service: str, method: str, path: str, name: str | None) -> bool:
        """Whether this rule applies to a request."""
        if self.service not in ("*", service):
            return False
        if self.endpoint in ("*", ""):
            return True
        if name is not None and self.endpoint == name:
            return True
        if self.method is not None and self.method != method:
            return False
        return self.regex is not None and self.regex.match(path) is not None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly view for the control API."""
        return {
            "id": self.id,
            "service": self.service,
            "endpoint": self.endpoint,
            "kind": self.kind,
            "count": self.count,
            "skip": self.skip,
            "fired": self.fired,
            "options": dict(self.options),
        }


def _endpoint_regex(endpoint: str) -> tuple[str | None, re.Pattern[str] | None]:
    method: str | None = None
    pattern = endpoint
    head, _, tail = endpoint.partition(" ")
    if tail and head.isalpha():
        method, pattern = head.upper(), tail.strip()
    if not pattern.startswith("/"):
        return method, None
    if pattern.endswith("*"):
        return method, re.compile(compile_pattern(pattern.rstrip("*")).pattern[:-1])
    # Klaviyo serves /api/lists and /api/lists/ alike; so do fault patterns.
    regex = compile_pattern(pattern.rstrip("/") or "/").pattern[:-1] + "/?$"
    return method, re.compile(regex)


class FaultInjector:
    """Holds fault rules for all simulated services; safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._ids = itertools.count(1)
        self._spent: dict[int, int] = {}

    def add(
        self,
        service: str,
        endpoint: str,
        kind: str,
        count: int | None = 1,
        *,
        skip: int = 0,
        **options: Any,
    ) -> int:
        """Fail the next `count` matching requests (None: until cleared); the id."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {KINDS}")
        method, regex = _endpoint_regex(endpoint)
        with self._lock:
            rule = FaultRule(
                id=next(self._ids),
                service=service,
                endpoint=endpoint,
                kind=kind,
                count=count,
                skip=skip,
                options=options,
                method=method,
                regex=regex,
            )
            self._rules.append(rule)
        log.info("fault added: %s %s %s x%s", service, endpoint, kind, count)
        return rule.id

    def remove(self, rule_id: int) -> bool:
        """Drop one rule by id; False when it was not there."""
        with self._lock:
            before = len(self._rules)
            self._rules = [rule for rule in self._rules if rule.id != rule_id]
            return len(self._rules) < before

    def clear(self, service: str | None = None) -> None:
        """Drop all rules, or those of one service."""
        with self._lock:
            self._rules = [
                rule
                for rule in self._rules
                if service is not None and rule.service != service
            ]

    def rules(self) -> list[dict[str, Any]]:
        """The standing rules (spent ones are gone), for display."""
        with self._lock:
            return [rule.as_dict() for rule in self._rules]

    def fired(self, rule_id: int) -> int:
        """How often a rule has fired so far (0 for an unknown rule)."""
        with self._lock:
            for rule in self._rules:
                if rule.id == rule_id:
                    return rule.fired
            return self._spent.get(rule_id, 0)

    def take(
        self, service: str, method: str, path: str, name: str | None = None
    ) -> Fault | None:
        """The fault to apply to this request, if any (consumes one firing)."""
        if not self._rules:
            return None
        with self._lock:
            for rule in self._rules:
                if not rule.matches(service, method.upper(), path, name):
                    continue
                if rule.skip > 0:
                    rule.skip -= 1
                    continue
                rule.fired += 1
                if rule.count is not None:
                    rule.count -= 1
                    if rule.count <= 0:
                        self._rules.remove(rule)
                        self._spent[rule.id] = rule.fired
                return Fault(rule.kind, dict(rule.options))
        return None
