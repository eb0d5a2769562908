"""Both simulators as one world: Klaviyo under /klaviyo, ZAP~POST under /zap.

The same `SimWorld` serves the demo and the tests in process (through
`transport()`, an httpx ASGI transport: no socket, no network) and real HTTP
on loopback (`zaptui simulate`, or `serve_in_thread` in tests). The Klaviyo
control API (join, leave, tick, faults) lives under /_sim/klaviyo.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, TextIO

import httpx

from zaptui.sim.asgi import Mount
from zaptui.sim.faults import FaultInjector
from zaptui.sim.klaviyo import KlaviyoSim
from zaptui.sim.serve import serve_forever
from zaptui.sim.zappost import ZapPostSim

KLAVIYO_PREFIX = "/klaviyo"
ZAPPOST_PREFIX = "/zap"
CONTROL_PREFIX = "/_sim/klaviyo"


@dataclass
class SimWorld:
    """A seeded Klaviyo and ZAP~POST sharing one fault injector and one app."""

    klaviyo: KlaviyoSim
    zappost: ZapPostSim
    faults: FaultInjector

    @classmethod
    def seeded(
        cls,
        seed: int = 1,
        profiles: int = 1000,
        faulty_share: float = 0.1,
        **klaviyo_options: Any,
    ) -> SimWorld:
        """A world built from `seed`: three Klaviyo accounts, three campaigns."""
        faults = FaultInjector()
        klaviyo = KlaviyoSim.seeded(
            seed, profiles, faulty_share, faults=faults, **klaviyo_options
        )
        zappost = ZapPostSim.seeded(seed, faults=faults)
        return cls(klaviyo, zappost, faults)

    @property
    def app(self) -> Mount:
        """The ASGI app serving both APIs and the control API."""
        return Mount(
            {
                CONTROL_PREFIX: self.klaviyo.control_app,
                KLAVIYO_PREFIX: self.klaviyo.api_app,
                ZAPPOST_PREFIX: self.zappost.app,
            }
        )

    def transport(self) -> httpx.ASGITransport:
        """An in-process transport to the world (the base URL's host is ignored)."""
        return httpx.ASGITransport(app=self.app)

    @staticmethod
    def klaviyo_url(base: str) -> str:
        """The Klaviyo base URL under a server's base URL."""
        return base.rstrip("/") + KLAVIYO_PREFIX

    @staticmethod
    def zap_url(base: str) -> str:
        """The ZAP~POST base URL under a server's base URL."""
        return base.rstrip("/") + ZAPPOST_PREFIX

    def describe(self, base: str, out: TextIO) -> None:
        """Print the URLs and credentials an operator needs to point zaptui here."""
        base = base.rstrip("/")
        klaviyo_url = self.klaviyo_url(base)
        limits = "on" if self.klaviyo.rate_limits else "off"
        lines = [
            f"Simulators serving on {base} (Klaviyo rate limits {limits})",
            f"Control API: {base}{CONTROL_PREFIX}/ "
            "(accounts, join, leave, reveal, tick, churn, faults, rate-limits)",
            "",
            "ZAP~POST",
            f"  base URL:     {self.zap_url(base)}   (ZAPTUI_ZAP_URL)",
            f"  API key:      {self.zappost.api_key}   (ZAPTUI_ZAP_API_KEY)",
            f"  API password: {self.zappost.api_password}   (ZAPTUI_ZAP_API_PASSWORD)",
        ]
        lines += [
            f"  campaign {campaign.id}  {campaign.name}"
            for campaign in self.zappost.campaigns()
        ]
        for account in self.klaviyo.describe_accounts():
            state = "revoked" if account["revoked"] else ", ".join(account["scopes"])
            lines += [
                "",
                f"Klaviyo account {account['name']} ({account['id']})",
                f"  base URL:     {klaviyo_url}   (ZAPTUI_KLAVIYO_URL)",
                f"  private key:  {account['private_key']}   [{state}]",
            ]
            for kind in ("lists", "segments"):
                lines += [
                    f"  {kind[:-1]:<8} {source['id']}  {source['name']} "
                    f"({source['members']} members)"
                    for source in account[kind]
                ]
        out.write("\n".join(lines) + "\n")
        out.flush()


def run_simulator(
    host: str,
    port: int,
    *,
    seed: int = 1,
    profiles: int = 1000,
    faulty_share: float = 0.1,
    rate_limits: bool = True,
    churn_interval: float | None = None,
) -> None:
    """`zaptui simulate`: print what the world holds, then serve it until ^C."""
    world = SimWorld.seeded(
        seed,
        profiles,
        faulty_share,
        rate_limits=rate_limits,
        churn_interval=churn_interval,
    )
    world.describe(f"http://{host}:{port}", sys.stdout)
    serve_forever(world.app, host, port)
