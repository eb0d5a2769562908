"""A simulated world for sync tests: known members, real HTTP, fast retries.

The segment "Test customers" of Acme Outdoor is built member by member, so a
test knows exactly who can be mailed and who must fail, and why.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from zaptui.clock import utcnow
from zaptui.klaviyo.client import RetryPolicy as KlaviyoRetry
from zaptui.klaviyo.limiter import RateLimiter, Tier
from zaptui.runtime import Runtime
from zaptui.services import Services
from zaptui.sim.klaviyo import SimAccount, Source
from zaptui.sim.seed import SeedProfile, generate_profiles, plant_fault
from zaptui.sim.serve import ServerHandle, serve_in_thread
from zaptui.sim.server import SimWorld
from zaptui.store.models import DataConnection, ProfileOutcome, SyncRun
from zaptui.zappost.client import RetryPolicy as ZapRetry

SEGMENT = "Test customers"
WELCOME = "Welcome Letter"
# Planted faults no cleansing can repair: these profiles must fail.
UNMAILABLE = ("postcode_invalid", "missing_city", "long_line", "non_uk_country")
# Planted faults cleansing repairs: these profiles are mailed, corrected.
REPAIRABLE = ("postcode_lower", "postcode_unspaced", "postcode_o_typo")
FAST_KLAVIYO = KlaviyoRetry(attempts=3, throttle_attempts=3, base_delay=0.001)
FAST_ZAP = ZapRetry(attempts=3, base_delay=0.001)
UNLIMITED = {
    name: Tier(name, 100_000, 1_000_000) for name in ("XS", "S", "M", "L", "XL")
}


class Sleeps:
    """Records the waits the clients ask for, without waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@dataclass
class Members:
    """Who is in the test segment, by what the sync should make of them."""

    mailable: list[str] = field(default_factory=list)
    unmailable: list[str] = field(default_factory=list)

    @property
    def all(self) -> list[str]:
        """Every member id."""
        return self.mailable + self.unmailable


@dataclass
class World:
    """A served simulator world, a runtime pointed at it and the test segment."""

    sim: SimWorld
    server: ServerHandle
    runtime: Runtime
    sleeps: Sleeps
    acme: SimAccount
    segment: Source
    members: Members
    rng: random.Random

    @property
    def services(self) -> Services:
        """Services over this world's runtime."""
        return Services(self.runtime)

    def campaign_id(self, name: str = WELCOME) -> str:
        """The id of a simulated campaign."""
        return self.sim.zappost.campaign_named(name).id

    def connect(
        self,
        campaign: str = WELCOME,
        source: Source | None = None,
        **options: Any,
    ) -> DataConnection:
        """Pair Acme and a data connection from the segment to a campaign."""
        services = self.services
        account = services.connect_account(self.acme.private_key)
        source = source or self.segment
        return services.create_connection(
            account.id,
            source.kind,
            source.id,
            self.campaign_id(campaign),
            **options,
        )

    def add_members(
        self,
        clean: int,
        faults: Iterable[str] = (),
        *,
        at: datetime | list[datetime] | None = None,
        source: Source | None = None,
        country: str | None = None,
    ) -> Members:
        """New profiles joining the segment: `clean` good ones, one per fault."""
        seeds = self.profiles(clean, faults, country)
        ids = self.sim.klaviyo.add_profiles(self.acme, seeds)
        if at is None:
            now = utcnow()
            at = [
                now - timedelta(days=30) + timedelta(minutes=n) for n in range(len(ids))
            ]
        self.sim.klaviyo.join(self.acme, source or self.segment, ids, at=at)
        added = Members(
            mailable=[s.id for s in seeds if s.fault not in UNMAILABLE],
            unmailable=[s.id for s in seeds if s.fault in UNMAILABLE],
        )
        if source is None:
            self.members.mailable += added.mailable
            self.members.unmailable += added.unmailable
        return added

    def profiles(
        self, clean: int, faults: Iterable[str] = (), country: str | None = None
    ) -> list[SeedProfile]:
        """Generated UK profiles, the last ones spoilt by the faults named.

        With `country`, every profile's location names it (before any fault).
        """
        faults = list(faults)
        start = len(self.sim.klaviyo.profiles) + 10_000
        seeds = generate_profiles(
            self.rng,
            clean + len(faults),
            0.0,
            start_index=start,
            created=utcnow() - timedelta(days=400),
        )
        if country is not None:
            for seed in seeds:
                seed.attributes["location"]["country"] = country
        for seed, kind in zip(seeds[clean:], faults, strict=True):
            plant_fault(self.rng, seed, kind)
        return seeds

    def mailed(self, campaign: str = WELCOME) -> list[str]:
        """Customer ids mailed for a campaign, once per mailing."""
        campaign_id = self.campaign_id(campaign)
        return [
            m.customerid
            for m in self.sim.zappost.mailed()
            if m.campaign_id == campaign_id
        ]


def make_runtime(
    sim_url: str, sim: SimWorld, sleeps: Sleeps, **options: Any
) -> Runtime:
    """A runtime for the simulator over loopback, with fast, bounded retries."""
    values: dict[str, Any] = {
        "klaviyo_url": SimWorld.klaviyo_url(sim_url),
        "zap_url": SimWorld.zap_url(sim_url),
        "zap_api_key": sim.zappost.api_key,
        "zap_api_password": sim.zappost.api_password,
        "klaviyo_retry": FAST_KLAVIYO,
        "zap_retry": FAST_ZAP,
        "klaviyo_limiter": RateLimiter(UNLIMITED),
        "klaviyo_timeout": 5.0,
        "zap_timeout": 5.0,
        "sleep": sleeps,
        "actor": "test-operator",
    }
    values.update(options)
    return Runtime(**values)


class _Switch:
    """An ASGI app that hands every request to whichever world is current."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


_switch = _Switch()
_server: ServerHandle | None = None


def shared_server(app: Any) -> ServerHandle:
    """One loopback server for the whole test process, now serving `app`.

    Starting and stopping a server per test costs more than most tests do.
    """
    global _server
    _switch.app = app
    if _server is None or not _server.thread.is_alive():
        _server = serve_in_thread(_switch)
    return _server


def build_world(
    seed: int = 3, clean: int = 240, faults: Iterable[str] = UNMAILABLE, **options: Any
) -> Iterator[World]:
    """A served world with the test segment (yields it, for fixtures)."""
    sim = SimWorld.seeded(seed, profiles=0, faulty_share=0.0, rate_limits=False)
    acme = sim.klaviyo.account("Acme Outdoor")
    segment = sim.klaviyo.add_source(acme, "segment", SEGMENT)
    server = shared_server(sim.app)
    sleeps = Sleeps()
    try:
        world = World(
            sim=sim,
            server=server,
            runtime=make_runtime(server.url, sim, sleeps, **options),
            sleeps=sleeps,
            acme=acme,
            segment=segment,
            members=Members(),
            rng=random.Random(seed),
        )
        world.add_members(clean, faults)
        yield world
    finally:
        sim.faults.clear()


def outcomes(run: SyncRun) -> dict[str, ProfileOutcome]:
    """A run's outcome rows by profile id."""
    return {
        row.profile_id: row
        for row in ProfileOutcome.select().where(ProfileOutcome.run == run.id)
    }
