"""The Klaviyo REST API client: the account, lists, segments, members, write-back.

Every call carries the private key, the pinned `revision` and the JSON:API
media type, waits for a slot in the account's shared rate limiter, and is
recorded in the API log with its secrets redacted. Collections are read by
following `links.next` exactly as given: cursors are opaque.

Retries follow Klaviyo's guidance and what other integrations got wrong: a
429 waits for `Retry-After`, else the seconds named in the error detail, else
an exponential backoff with jitter; a wait longer than `max_wait` fails the
call at once instead of hanging a sync for hours on a daily quota. 5xx,
timeouts, dropped connections, success answers whose body is not JSON and
the HTML 403 pages a CDN sends under load are retried a bounded number of
times. Every retried call is safe to repeat: reads and the location PATCH are
idempotent, and each event carries a `unique_id` that Klaviyo de-duplicates.

The private key travels only to the base URL's origin: a `links.next` that
points anywhere else is refused rather than followed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from zaptui.apilog import (
    ApiLog,
    NullApiLog,
    redact_text,
    scrub_http_library_logs,
    send_recorded,
)
from zaptui.clock import iso_z
from zaptui.klaviyo.errors import (
    InvalidRequest,
    KlaviyoError,
    MissingScope,
    NotFound,
    Throttled,
    Unauthorized,
    Unavailable,
)
from zaptui.klaviyo.limiter import LIMITERS, RateLimiter

log = logging.getLogger(__name__)
scrub_http_library_logs()

DEFAULT_BASE_URL = "https://a.klaviyo.com"
REVISION = "2026-07-15"
JSON_API = "application/vnd.api+json"
MEMBER_PAGE_MAX = 100
COLLECTION_PAGE_MAX = 10
_EXPECTED_WAIT = re.compile(r"available in (\d+(?:\.\d+)?) second", re.IGNORECASE)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry calls that failed for passing reasons."""

    attempts: int = 4  # for 5xx, timeouts, drops, garbled bodies and HTML 403s
    throttle_attempts: int = 10  # for 429s, whose waits are announced
    base_delay: float = 0.5
    factor: float = 1.5
    max_backoff: float = 60.0
    max_wait: float = 600.0  # a single announced wait beyond this fails the call

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with half-width jitter after failed attempt `attempt`."""
        delay = min(self.base_delay * self.factor ** (attempt - 1), self.max_backoff)
        return delay * random.uniform(0.75, 1.25)


def _announced_wait(response: httpx.Response) -> float | None:
    """Seconds a 429 asks us to wait: Retry-After, else the detail's number."""
    header = response.headers.get("retry-after")
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            pass
    match = _EXPECTED_WAIT.search(response.text or "")
    return float(match.group(1)) if match else None


def _is_json(response: httpx.Response) -> bool:
    content_type = response.headers.get("content-type", "")
    return "json" in content_type


def _first_error(response: httpx.Response) -> tuple[str, str]:
    """(code, detail) of a JSON:API error body; empty strings when there is none."""
    if not _is_json(response):
        return "", ""
    try:
        body = response.json()
    except ValueError:
        return "", ""
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return "", ""
    first = errors[0]
    detail = first.get("detail") or first.get("title") or ""
    return str(first.get("code") or ""), str(detail)


def _origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port of a URL, the default port spelt out."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:  # an unreadable port matches no origin
        port = -1
    return scheme, (parts.hostname or "").lower(), port


def member_filter(joined_after: datetime) -> str:
    """The filter for members who joined after a moment (datetimes are unquoted)."""
    return f"greater-than(joined_group_at,{iso_z(joined_after)})"


class KlaviyoClient:
    """Talks to one Klaviyo account with its private key."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_log: ApiLog | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
        limiter: RateLimiter | None = None,
        timeout: float = 30.0,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        revision: str = REVISION,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._origin = _origin(self.base_url)
        self._secrets = [api_key]
        self._api_log: ApiLog = api_log or NullApiLog()
        self._retry = retry or RetryPolicy()
        self._limiter = limiter or LIMITERS.for_key(api_key)
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            transport=transport,
            timeout=httpx.Timeout(timeout),
            headers={
                "Authorization": f"Klaviyo-API-Key {api_key}",
                "revision": revision,
                "Accept": JSON_API,
            },
        )

    def __repr__(self) -> str:
        return f"KlaviyoClient(base_url={self.base_url!r})"

    async def __aenter__(self) -> KlaviyoClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # -- reading ---------------------------------------------------------------

    async def get_account(self) -> dict[str, Any]:
        """The account resource the key belongs to."""
        body = await self._call("GET", "/api/accounts/", "read the account")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not data or not isinstance(data[0], dict):
            raise KlaviyoError("Klaviyo answered the account call with no account.")
        return data[0]

    async def get_lists(self) -> list[dict[str, Any]]:
        """Every list of the account (all pages)."""
        return await self._collect("/api/lists/", "read the lists")

    async def get_segments(self) -> list[dict[str, Any]]:
        """Every segment of the account (all pages)."""
        return await self._collect("/api/segments/", "read the segments")

    async def iter_member_pages(
        self,
        source_type: str,
        source_id: str,
        *,
        joined_after: datetime | None = None,
        page_size: int = MEMBER_PAGE_MAX,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Pages of profile resources of a list or segment, oldest joiner first.

        Each resource's attributes carry `joined_group_at`. With
        `joined_after`, only members who (most recently) joined after it.
        """
        if source_type not in ("list", "segment"):
            raise ValueError(f"source type must be list or segment, not {source_type}")
        if not 1 <= page_size <= MEMBER_PAGE_MAX:
            raise ValueError(f"page size must be 1 to {MEMBER_PAGE_MAX}")
        query = f"page[size]={page_size}&sort=joined_group_at"
        if joined_after is not None:
            query += "&filter=" + quote(member_filter(joined_after), safe="")
        plural = "lists" if source_type == "list" else "segments"
        url: str | None = f"/api/{plural}/{quote(source_id, safe='')}/profiles/?{query}"
        what = f"read the members of {source_type} {source_id}"
        while url:
            body = await self._call("GET", url, what)
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                raise KlaviyoError(
                    f"Klaviyo answered with no member list; could not {what}."
                )
            yield data
            url = self._next_link(body, what)

    # -- writing ---------------------------------------------------------------

    async def update_profile_location(
        self, profile_id: str, location: dict[str, Any]
    ) -> dict[str, Any]:
        """Replace a profile's location (send it whole: partial updates may clear)."""
        document = {
            "data": {
                "type": "profile",
                "id": profile_id,
                "attributes": {"location": location},
            }
        }
        body = await self._call(
            "PATCH",
            f"/api/profiles/{quote(profile_id, safe='')}/",
            f"update the address of profile {profile_id}",
            json_body=document,
        )
        return body.get("data") or {} if isinstance(body, dict) else {}

    async def create_event(
        self,
        profile_id: str,
        metric: str,
        properties: dict[str, Any],
        *,
        unique_id: str | None = None,
    ) -> None:
        """Record an event (e.g. "Address Updated") on a profile."""
        # Klaviyo keeps the first event per (profile, metric, unique_id); without
        # one it keys on the second, so a retry could count twice and two real
        # events in the same second would collapse into one.
        document = {
            "data": {
                "type": "event",
                "attributes": {
                    "properties": properties,
                    "unique_id": unique_id or uuid.uuid4().hex,
                    "metric": {
                        "data": {"type": "metric", "attributes": {"name": metric}}
                    },
                    # The spec requires attributes even when the id says who.
                    "profile": {
                        "data": {"type": "profile", "id": profile_id, "attributes": {}}
                    },
                },
            }
        }
        await self._call(
            "POST",
            "/api/events/",
            f"record {metric!r} on profile {profile_id}",
            json_body=document,
        )

    # -- plumbing --------------------------------------------------------------

    async def _collect(self, path: str, what: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        url: str | None = f"{path}?page[size]={COLLECTION_PAGE_MAX}"
        while url:
            body = await self._call("GET", url, what)
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                raise KlaviyoError(f"Klaviyo answered with no items; could not {what}.")
            items.extend(item for item in data if isinstance(item, dict))
            url = self._next_link(body, what)
        return items

    def _next_link(self, body: Any, what: str) -> str | None:
        """The next page's URL as given, provided it stays on Klaviyo's origin."""
        links = body.get("links") if isinstance(body, dict) else None
        following = links.get("next") if isinstance(links, dict) else None
        if not isinstance(following, str) or not following:
            return None
        if following.startswith(("http://", "https://")) and (
            _origin(following) != self._origin
        ):
            raise KlaviyoError(
                self._clean(
                    f"Klaviyo's next-page link points away from {self.base_url} "
                    f"({urlsplit(following).netloc}); refusing to send the private "
                    f"key there; could not {what}."
                )
            )
        return following

    async def _call(
        self,
        method: str,
        url: str,
        what: str,
        *,
        json_body: Any = None,
    ) -> Any:
        """One call with rate limiting and retries; the parsed body or a typed error."""
        failures = 0
        throttles = 0
        while True:
            response, error = await self._attempt(method, url, json_body)

            if response is not None and response.status_code == 429:
                throttles += 1
                wait = _announced_wait(response)
                if wait is None:
                    wait = self._retry.backoff(throttles)
                if wait > self._retry.max_wait:
                    raise Throttled(
                        f"Klaviyo asked us to wait {wait:.0f} s, longer than the "
                        f"{self._retry.max_wait:.0f} s allowed; could not "
                        f"{self._clean(what)}.",
                        status=429,
                        code="throttled",
                    )
                if throttles >= self._retry.throttle_attempts:
                    raise Throttled(
                        f"Klaviyo throttled {throttles} attempts in a row; "
                        f"could not {self._clean(what)}.",
                        status=429,
                        code="throttled",
                    )
                log.warning(
                    "Klaviyo throttled %s %s; waiting %.1fs",
                    method,
                    self._clean(url),
                    wait,
                )
                await self._sleep(wait)
                continue

            if response is not None and error is None and response.status_code < 400:
                body, problem = _parse_body(response)
                if problem is None:
                    return body
            else:
                problem = self._transient(response, error)
                if problem is None:
                    assert response is not None
                    raise self._error(response, what)

            failures += 1
            if failures >= self._retry.attempts:
                raise Unavailable(
                    f"Klaviyo {problem} {failures} times; could not "
                    f"{self._clean(what)}.",
                    status=response.status_code if response is not None else None,
                )
            delay = self._retry.backoff(failures)
            log.warning(
                "Klaviyo %s on %s %s; retrying in %.1fs (%d of %d)",
                problem,
                method,
                self._clean(url),
                delay,
                failures,
                self._retry.attempts,
            )
            await self._sleep(delay)

    async def _attempt(
        self, method: str, url: str, json_body: Any
    ) -> tuple[httpx.Response | None, Exception | None]:
        """Send once within the rate limit and log it; transport errors are returned."""
        headers = {"Content-Type": JSON_API} if json_body is not None else None
        request = self._http.build_request(method, url, json=json_body, headers=headers)
        slot = await self._limiter.acquire(method, request.url.path)
        try:
            return await send_recorded(
                self._http,
                request,
                service="klaviyo",
                api_log=self._api_log,
                secrets=self._secrets,
                request_body=(lambda: request.content)
                if json_body is not None
                else None,
            )
        finally:
            self._limiter.release(slot)

    @staticmethod
    def _transient(
        response: httpx.Response | None, error: Exception | None
    ) -> str | None:
        """Why an attempt is worth retrying, or None when it is not."""
        if isinstance(error, httpx.TimeoutException):
            return "timed out"
        if error is not None:
            return f"dropped the connection ({type(error).__name__})"
        assert response is not None
        if response.status_code >= 500:
            # Klaviyo's SDK leaves 502 out; a gateway failing in front of
            # Klaviyo is as passing as any other, so every 5xx is retried.
            return f"answered HTTP {response.status_code}"
        if response.status_code == 403 and not _is_json(response):
            # A CDN in front of Klaviyo sends HTML 403 pages under load.
            return "sent an HTML 403 page (its CDN refused the request)"
        return None

    def _error(self, response: httpx.Response, what: str) -> KlaviyoError:
        """The typed error for a response that no retry will fix."""
        status = response.status_code
        code, detail = _first_error(response)
        if not detail and not _is_json(response) and response.content:
            detail = "the answer was a web page, not a Klaviyo error"
        said = f": {detail}" if detail else ""
        what = self._clean(what)
        said = self._clean(said)
        if status == 401:
            return Unauthorized(
                f"Klaviyo refused the private key (HTTP 401){said}",
                status=status,
                code=code,
            )
        if status == 403:
            return MissingScope(
                f"the private key lacks a scope to {what} (HTTP 403){said}",
                status=status,
                code=code,
            )
        if status == 404:
            return NotFound(
                f"Klaviyo found nothing there (HTTP 404); could not {what}{said}",
                status=status,
                code=code,
            )
        if status == 400:
            return InvalidRequest(
                f"Klaviyo refused the request to {what} (HTTP 400){said}",
                status=status,
                code=code,
            )
        return KlaviyoError(
            f"Klaviyo answered HTTP {status}; could not {what}{said}",
            status=status,
            code=code,
        )

    def _clean(self, text: str) -> str:
        return redact_text(text, self._secrets)


def _parse_body(response: httpx.Response) -> tuple[Any, str | None]:
    """A success answer's JSON (empty for 202/204), or why it could not be read."""
    if response.status_code in (202, 204) or not response.content:
        return {}, None
    try:
        return response.json(), None
    except ValueError:
        return None, (
            f"answered HTTP {response.status_code} with a body that is not JSON"
        )
