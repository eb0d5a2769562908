"""The demo: a fresh database over the in-process simulators, with a history.

`build_demo(folder)` makes everything `zaptui --demo` shows: a SimWorld reached
through its in-process transport (the demo never touches the network), the
ZAP~POST credentials in the Runtime, Klaviyo account "Acme Outdoor" paired
through the real validation, "Closed Shop Ltd" paired and then revoked (so it
shows as unauthorised, with Klaviyo's reason), data connections over Acme's
lists and segments and the three campaigns (one paused), and real sync runs
spread over the last few days, so Sync History and Logs hold real runs and
API calls. Members keep joining Acme's segments while the demo runs, so "Sync
now" always has someone new to post.

The demo's secrets are encrypted with a key made for this demo alone: no key
file is written to the user's data folder.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import peewee as pw

from zaptui import clock
from zaptui.klaviyo.limiter import RateLimiter
from zaptui.runtime import Runtime
from zaptui.services import Services, Source
from zaptui.sim.server import SimWorld
from zaptui.store.db import open_database
from zaptui.store.models import Account, DataConnection
from zaptui.store.secrets import SecretBox, new_key

log = logging.getLogger(__name__)

DEMO_SEED = 7
DEMO_PROFILES = 300
DEMO_FAULTY_SHARE = 0.1
CHURN_SECONDS = 10.0
"""While the demo runs, new members join Acme's segments this often."""

KLAVIYO_BASE = "http://klaviyo.demo"
ZAP_BASE = "http://zap.demo"
ZAP_ACCOUNT_NAME = "Acme Direct (demo)"


@dataclass(frozen=True)
class DemoConnection:
    """One data connection the demo pairs, and how its mapping is completed."""

    source_type: str
    source_name: str
    campaign_name: str
    name: str
    extra_mapping: dict[str, str] = field(default_factory=dict)
    paused: bool = False


ACME_CONNECTIONS = (
    DemoConnection("segment", "All UK customers", "Welcome Letter", "Welcome pack"),
    DemoConnection(
        "list",
        "Newsletter",
        "Spring Sale A5 Postcard",
        "Spring postcards",
        {"tier": "properties.tier"},
    ),
    DemoConnection("segment", "Lapsed 90 days", "Win-back Postcard", "Win back"),
    DemoConnection(
        "list",
        "VIP Customers",
        "Spring Sale A5 Postcard",
        "VIP preview",
        {"tier": "properties.tier"},
        paused=True,
    ),
)
CLOSED_SHOP_CONNECTION = DemoConnection(
    "list", "Old customers", "Win-back Postcard", "Shop win-back"
)


@dataclass
class Demo:
    """A built demo: its folder, database, simulated world and services."""

    folder: Path
    db_url: str
    database: pw.Database
    world: SimWorld
    runtime: Runtime
    services: Services
    secret_key: str

    def close(self) -> None:
        """Close the demo database."""
        self.database.close()


@contextmanager
def _at(moment: datetime) -> Iterator[None]:
    """Let the clock read `moment` while a step of the history is made."""
    clock.set_clock(lambda: moment)
    yield


def build_demo(
    folder: Path,
    *,
    now: datetime | None = None,
    seed: int = DEMO_SEED,
    profiles: int = DEMO_PROFILES,
    churn_seconds: float | None = CHURN_SECONDS,
    secret_key: str | None = None,
) -> Demo:
    """Build the demo database in `folder` and the world it talks to.

    The history is written with the clock stepped back over the last days.
    With `now` the clock stays fixed at `now` afterwards (for tests and
    snapshots); without it the system clock is restored.
    """
    base = now or clock.utcnow()
    try:
        return _build(
            folder, base, seed, profiles, churn_seconds, secret_key or new_key()
        )
    finally:
        clock.set_clock((lambda: now) if now is not None else None)


def _build(
    folder: Path,
    base: datetime,
    seed: int,
    profiles: int,
    churn_seconds: float | None,
    key: str,
) -> Demo:
    folder.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{folder / 'demo.db'}"
    database = open_database(db_url)
    first_day = base - timedelta(days=3) + timedelta(hours=2)

    with _at(first_day - timedelta(days=40)):
        world = SimWorld.seeded(
            seed,
            profiles,
            DEMO_FAULTY_SHARE,
            rate_limits=False,
            churn_interval=churn_seconds,
            now=first_day - timedelta(hours=1),
        )
        runtime = Runtime(
            klaviyo_url=SimWorld.klaviyo_url(KLAVIYO_BASE),
            zap_url=SimWorld.zap_url(ZAP_BASE),
            zap_api_key=world.zappost.api_key,
            zap_api_password=world.zappost.api_password,
            transport=world.transport(),
            # A limiter of the demo's own: its budget is not shared with
            # anything else in the process that talks to the same accounts.
            klaviyo_limiter=RateLimiter(),
            actor="demo",
            _secrets=SecretBox(key),
        )
        services = Services(runtime)
        services.set_setting("zap_account_name", ZAP_ACCOUNT_NAME)
        closed_shop = _pair_closed_shop(world, services)

    with _at(first_day - timedelta(minutes=30)):
        acme = services.connect_account(
            world.klaviyo.account("Acme Outdoor").private_key
        )
        connections = [_create(services, acme, plan) for plan in ACME_CONNECTIONS]

    for day in range(3):
        moment = first_day + timedelta(days=day)
        with _at(moment - timedelta(hours=3)):
            for _ in range(4):
                world.klaviyo.tick()
        for offset, (plan, connection) in enumerate(
            zip(ACME_CONNECTIONS, connections, strict=True)
        ):
            if plan.paused and day == 2:
                continue
            with _at(moment + timedelta(minutes=7 * offset)):
                services.sync_now(connection.id, trigger="scheduled")
        if day == 1:
            with _at(moment + timedelta(hours=1)):
                for plan, connection in zip(ACME_CONNECTIONS, connections, strict=True):
                    if plan.paused:
                        services.pause(connection.id)

    _revoke_closed_shop(world, services, closed_shop, first_day + timedelta(days=2))

    with _at(base - timedelta(minutes=50)):
        world.klaviyo.tick()
        services.sync_now(connections[0].id, trigger="manual")
    with _at(base - timedelta(minutes=10)):
        world.klaviyo.tick()  # so the first "Sync now" has someone new to mail

    log.info("demo built in %s", folder)
    return Demo(folder, db_url, database, world, runtime, services, key)


def _source(services: Services, account: Account, plan: DemoConnection) -> Source:
    return next(
        source
        for source in services.sources(account.id)
        if source.type == plan.source_type and source.name == plan.source_name
    )


def _create(
    services: Services, account: Account, plan: DemoConnection
) -> DataConnection:
    """Pair one source with its campaign and complete the suggested mapping."""
    source = _source(services, account, plan)
    campaign = next(
        c for c in services.campaigns() if c.get("name") == plan.campaign_name
    )
    connection = services.create_connection(
        account.id, source.type, source.id, str(campaign["id"]), name=plan.name
    )
    if plan.extra_mapping:
        mapping = services.mapping(connection.id) | plan.extra_mapping
        services.update_mapping(connection.id, mapping)
    return connection


def _pair_closed_shop(world: SimWorld, services: Services) -> DataConnection:
    """Pair Closed Shop Ltd while its key still works, and sync it once."""
    sim_account = world.klaviyo.account("Closed Shop Ltd")
    sim_account.revoked = False
    account = services.connect_account(sim_account.private_key)
    connection = _create(services, account, CLOSED_SHOP_CONNECTION)
    services.sync_now(connection.id, trigger="scheduled")
    return connection


def _revoke_closed_shop(
    world: SimWorld, services: Services, connection: DataConnection, when: datetime
) -> None:
    """Revoke Closed Shop's key in Klaviyo; its next sync fails, a re-check says why."""
    world.klaviyo.account("Closed Shop Ltd").revoked = True
    with _at(when + timedelta(minutes=40)):
        services.sync_now(connection.id, trigger="scheduled")
    with _at(when + timedelta(minutes=55)):
        services.recheck_account(connection.account_id)
