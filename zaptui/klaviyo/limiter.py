"""Client-side rate limiting that keeps Klaviyo calls under both windows of a tier.

Klaviyo counts calls per account in fixed windows: a burst window of one
second and a steady window of one minute, with limits by endpoint tier.
The limiter here allows at most N calls in *any* interval of a window's
length, which implies at most N in every fixed window whatever its alignment
on Klaviyo's side. A call occupies its slot from the moment it is sent until
a window's length after its response arrived: the request reached Klaviyo
somewhere in between, so measuring from the response makes the bound hold
over the network without a guessed safety margin.

Limiters are shared per account through `LIMITERS`, so two clients holding
the same key never together exceed the quota. State is guarded by a thread
lock and waits are plain sleeps, so one limiter serves several event loops.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

# While every slot of a window is taken by calls still in flight, there is no
# known time to wait for; poll at this interval until one completes.
_IN_FLIGHT_POLL = 0.005
# The shortest wait asked for: sleeping exactly "expiry - now" can land a
# rounding error short of the expiry, and a wait of 1e-16 s moves no clock.
_MIN_WAIT = 0.0001


@dataclass(frozen=True)
class Tier:
    """A Klaviyo rate-limit tier: calls allowed per burst and per steady window."""

    name: str
    burst: int
    steady: int
    burst_seconds: float = 1.0
    steady_seconds: float = 60.0


TIERS: dict[str, Tier] = {
    "XS": Tier("XS", 1, 15),
    "S": Tier("S", 3, 60),
    "M": Tier("M", 10, 150),
    "L": Tier("L", 75, 750),
    "XL": Tier("XL", 350, 3500),
}

# (method, path pattern, tier name); first match wins. Patterns are matched at
# the end of the path so a base URL with a prefix (/klaviyo/api/...) works.
ENDPOINT_TIERS: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("GET", re.compile(r"/api/accounts/?$"), "XS"),
    ("GET", re.compile(r"/api/lists/?$"), "L"),
    ("GET", re.compile(r"/api/segments/?$"), "L"),
    ("GET", re.compile(r"/api/(lists|segments)/[^/]+/profiles/?$"), "L"),
    ("PATCH", re.compile(r"/api/profiles/[^/]+/?$"), "L"),
    ("POST", re.compile(r"/api/events/?$"), "XL"),
)


def tier_name_for(method: str, path: str) -> str:
    """The tier of an endpoint; unknown endpoints get the strict M tier."""
    for tier_method, pattern, name in ENDPOINT_TIERS:
        if tier_method == method and pattern.search(path):
            return name
    return "M"


class _Window:
    """Calls in flight plus response times of finished calls within one window."""

    __slots__ = ("limit", "seconds", "in_flight", "finished")

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self.in_flight = 0
        self.finished: deque[float] = deque()

    def wait_needed(self, now: float) -> float | None:
        """0 when a slot is free, seconds until one frees, None if unknown."""
        finished = self.finished
        while finished and finished[0] + self.seconds <= now:
            finished.popleft()
        if self.in_flight + len(finished) < self.limit:
            return 0.0
        if finished:
            return max(finished[0] + self.seconds - now, _MIN_WAIT)
        return None


class TierLimiter:
    """Both windows of one tier for one account."""

    def __init__(self, tier: Tier) -> None:
        self.tier = tier
        self.windows = (
            _Window(tier.burst, tier.burst_seconds),
            _Window(tier.steady, tier.steady_seconds),
        )


class RateLimiter:
    """Keeps one Klaviyo account's calls within every tier's burst and steady limits.

    `acquire(method, path)` waits for a slot and returns a token; hand the
    token to `release` once the response (or failure) is in.
    """

    def __init__(
        self,
        tiers: Mapping[str, Tier] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.tiers = dict(tiers or TIERS)
        self.clock = clock
        self.sleep = sleep
        self.waited = 0.0
        self._lock = threading.Lock()
        self._limiters: dict[str, TierLimiter] = {}

    def _tier(self, name: str) -> TierLimiter:
        limiter = self._limiters.get(name)
        if limiter is None:
            limiter = self._limiters[name] = TierLimiter(self.tiers[name])
        return limiter

    async def acquire(self, method: str, path: str) -> TierLimiter:
        """Wait until a call to this endpoint fits every window, then take a slot."""
        name = tier_name_for(method, path)
        if name not in self.tiers:
            name = min(self.tiers, key=lambda n: self.tiers[n].burst)
        with self._lock:
            limiter = self._tier(name)
        while True:
            with self._lock:
                now = self.clock()
                waits = [window.wait_needed(now) for window in limiter.windows]
                if all(wait == 0.0 for wait in waits):
                    for window in limiter.windows:
                        window.in_flight += 1
                    return limiter
            known = [wait for wait in waits if wait]
            delay = max(known) if known else _IN_FLIGHT_POLL
            self.waited += delay
            await self.sleep(delay)

    def release(self, limiter: TierLimiter) -> None:
        """Mark a call finished: its slot stays taken for a window from now."""
        with self._lock:
            now = self.clock()
            for window in limiter.windows:
                window.in_flight -= 1
                window.finished.append(now)


class LimiterRegistry:
    """One limiter per Klaviyo account, shared by every client using its key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._limiters: dict[str, RateLimiter] = {}

    @staticmethod
    def account_key(api_key: str) -> str:
        """A stable name for the account behind a key that does not reveal it."""
        return hashlib.sha256(api_key.encode()).hexdigest()[:16]

    def for_key(
        self, api_key: str, tiers: Mapping[str, Tier] | None = None
    ) -> RateLimiter:
        """The shared limiter for the account a key belongs to."""
        name = self.account_key(api_key)
        with self._lock:
            limiter = self._limiters.get(name)
            if limiter is None:
                limiter = self._limiters[name] = RateLimiter(tiers)
            return limiter

    def clear(self) -> None:
        """Forget all limiters (tests)."""
        with self._lock:
            self._limiters.clear()


LIMITERS = LimiterRegistry()
