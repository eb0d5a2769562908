"""The client-side rate limiter, on a virtual clock so windows of seconds take none."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass

import pytest

from zaptui.klaviyo.limiter import (
    LIMITERS,
    TIERS,
    LimiterRegistry,
    RateLimiter,
    Tier,
    tier_name_for,
)

MEMBERS = "/api/segments/Ab12Cd/profiles/"


class VirtualTime:
    """A clock and sleep that jump straight to the next timer."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + seconds, next(self._order), future))
        await future

    async def run(self, work: Iterable[Awaitable[None]]) -> None:
        """Run coroutines to the end, firing timers in time order."""
        tasks = [asyncio.ensure_future(item) for item in work]
        while not all(task.done() for task in tasks):
            for _ in range(4):  # let every woken task reach its next sleep
                await asyncio.sleep(0)
            if self._timers:
                when, _, future = heapq.heappop(self._timers)
                self.now = max(self.now, when)
                future.set_result(None)
        for task in tasks:
            task.result()


@dataclass
class Call:
    sent: float
    answered: float


def limiter_on(time: VirtualTime, **tiers: Tier) -> RateLimiter:
    return RateLimiter(tiers or None, clock=time.clock, sleep=time.sleep)


def most_overlapping(calls: list[Call], window: float) -> int:
    """The most calls whose send-to-answer span meets one window of this length.

    Klaviyo sees a call at some moment in that span; if at most N spans meet
    any window, at most N calls can land in any of Klaviyo's fixed windows.
    """
    return max(
        sum(
            1
            for other in calls
            if other.sent < start + window and other.answered >= start
        )
        for start in (call.answered for call in calls)
    )


async def call_once(
    limiter: RateLimiter, time: VirtualTime, latency: float, path: str = MEMBERS
) -> Call:
    slot = await limiter.acquire("GET", path)
    sent = time.now
    if latency:
        await time.sleep(latency)
    limiter.release(slot)
    return Call(sent, time.now)


async def test_burst_window_lets_the_burst_through_then_waits_a_second():
    time = VirtualTime()
    limiter = limiter_on(time, L=Tier("L", 3, 1000))
    calls: list[Call] = []

    async def sequence() -> None:
        for _ in range(9):
            calls.append(await call_once(limiter, time, 0))

    await time.run([sequence()])

    assert [call.sent for call in calls] == [0, 0, 0, 1, 1, 1, 2, 2, 2]


async def test_steady_window_holds_calls_for_a_minute_after_the_quota():
    time = VirtualTime()
    limiter = limiter_on(time, L=Tier("L", 100, 5))
    calls: list[Call] = []

    async def sequence() -> None:
        for _ in range(7):
            calls.append(await call_once(limiter, time, 0))

    await time.run([sequence()])

    assert [call.sent for call in calls] == [0, 0, 0, 0, 0, 60, 60]
    assert limiter.waited == pytest.approx(60)


async def test_a_slot_stays_taken_for_a_window_after_the_answer():
    time = VirtualTime()
    limiter = limiter_on(time, L=Tier("L", 1, 1000))
    calls: list[Call] = []

    async def sequence() -> None:
        calls.append(await call_once(limiter, time, 5.0))  # a slow answer
        calls.append(await call_once(limiter, time, 0))

    await time.run([sequence()])

    assert calls[0] == Call(0, 5.0)
    assert calls[1].sent == 6.0  # a second after the answer, not after the send


async def test_calls_in_flight_hold_their_slots():
    time = VirtualTime()
    limiter = limiter_on(time, L=Tier("L", 2, 1000))
    calls: list[Call] = []

    async def slow() -> None:
        calls.append(await call_once(limiter, time, 3.0))

    await time.run([slow(), slow(), slow()])

    sent = sorted(call.sent for call in calls)
    assert sent[:2] == [0, 0]
    assert sent[2] >= 4.0  # the first answers came at 3.0, plus the window


async def test_many_concurrent_callers_never_overlap_more_than_either_window():
    rng = random.Random(20260501)
    time = VirtualTime()
    tier = Tier("L", 4, 12, burst_seconds=1.0, steady_seconds=6.0)
    limiter = limiter_on(time, L=tier)
    calls: list[Call] = []

    async def worker() -> None:
        for _ in range(8):
            calls.append(await call_once(limiter, time, rng.uniform(0, 0.8)))
            if rng.random() < 0.3:
                await time.sleep(rng.uniform(0, 2))

    await time.run([worker() for _ in range(6)])

    assert len(calls) == 48
    assert most_overlapping(calls, tier.burst_seconds) <= tier.burst
    assert most_overlapping(calls, tier.steady_seconds) <= tier.steady
    # ...and it is not idle either: 48 calls at 12 per 6 s need about 24 s.
    assert time.now < 6.0 * (48 / 12) + 6.0


async def test_tiers_are_limited_separately():
    time = VirtualTime()
    limiter = limiter_on(time, XS=Tier("XS", 1, 15), L=Tier("L", 75, 750))
    calls: list[Call] = []

    async def sequence() -> None:
        calls.append(await call_once(limiter, time, 0, "/api/accounts/"))
        for _ in range(5):
            calls.append(await call_once(limiter, time, 0, MEMBERS))
        calls.append(await call_once(limiter, time, 0, "/api/accounts/"))

    await time.run([sequence()])

    assert [call.sent for call in calls] == [0, 0, 0, 0, 0, 0, 1.0]


def test_endpoints_map_to_klaviyos_tiers_behind_a_path_prefix():
    assert tier_name_for("GET", "/klaviyo/api/accounts/") == "XS"
    assert tier_name_for("GET", "/api/lists") == "L"
    assert tier_name_for("GET", "/api/segments/") == "L"
    assert tier_name_for("GET", "/klaviyo/api/lists/Xy12/profiles/") == "L"
    assert tier_name_for("GET", "/api/segments/Xy12/profiles") == "L"
    assert tier_name_for("PATCH", "/api/profiles/01HZX/") == "L"
    assert tier_name_for("POST", "/api/events/") == "XL"
    assert tier_name_for("GET", "/api/lists/Xy12") == "M"  # unknown: strict
    assert tier_name_for("DELETE", "/api/profiles/01HZX/") == "M"
    assert (TIERS["L"].burst, TIERS["L"].steady) == (75, 750)


async def test_an_endpoint_whose_tier_is_missing_gets_the_strictest_given():
    time = VirtualTime()
    limiter = limiter_on(time, L=Tier("L", 50, 500), S=Tier("S", 1, 60))
    calls: list[Call] = []

    async def sequence() -> None:
        for _ in range(2):
            calls.append(await call_once(limiter, time, 0, "/api/lists/Xy12"))

    await time.run([sequence()])

    assert [call.sent for call in calls] == [0, 1.0]


def test_clients_of_one_account_share_a_limiter_keyed_without_the_key():
    registry = LimiterRegistry()
    key = "pk_0123456789abcdef0123456789abcdef01"

    first = registry.for_key(key)

    assert registry.for_key(key) is first
    assert registry.for_key(key + "2") is not first
    assert key not in LimiterRegistry.account_key(key)
    assert len(LimiterRegistry.account_key(key)) == 16
    registry.clear()
    assert registry.for_key(key) is not first


def test_the_shared_registry_hands_out_one_limiter_per_key():
    key = "pk_feedfacefeedfacefeedfacefeedface00"
    try:
        assert LIMITERS.for_key(key) is LIMITERS.for_key(key)
    finally:
        LIMITERS.clear()
