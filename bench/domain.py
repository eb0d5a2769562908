"""The per-profile domain work of a sync: parse, cleanse, build, encode.

Run: .venv/bin/python bench/domain.py [--profiles 100000] [--rounds 5]
     [--campaign "Welcome Letter"]

The Klaviyo simulator's world is built in process (seed 1, as `zaptui
simulate` serves it, a tenth of the profiles faulty) and the members of "All
UK customers" are rendered as the JSON:API `profile` resources the sync engine
receives, `attributes.joined_group_at` included, in pages of 100. The
campaign's fields come from the ZAP~POST simulator and the mapping from
`suggest_mapping`, as a new data connection gets them.

Printed, in microseconds per call, best of --rounds, single thread, with the
garbage collector held off while a round runs (so that what is measured is the
domain code, not when a collection happens to fall):

- from_resource: `Profile.from_resource` on every resource;
- cleanse: `cleanse(profile)` with the default rules verifier;
- build: `RecordBuilder.build` on every profile whose address passed;
- encode: the compact JSON text of every record built;
- total: the four added up, what one profile costs.

Each figure is given for every profile and for the clean ones alone (no
planted fault), the typical profile of a real list.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zaptui.domain.address import cleanse  # noqa: E402
from zaptui.domain.mapping import (  # noqa: E402
    RecordBuilder,
    campaign_fields,
    suggest_mapping,
)
from zaptui.domain.profile import Profile  # noqa: E402
from zaptui.sim.klaviyo import KlaviyoSim  # noqa: E402
from zaptui.sim.zappost import ZapPostSim  # noqa: E402

SEGMENT = "All UK customers"
PAGE_SIZE = 100
NOW = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


def resources(count: int) -> tuple[list[dict[str, Any]], list[bool]]:
    """The segment's members as the engine gets them, and which are clean.

    Each page of 100 is one JSON text decoded at once, as the client decodes
    a response, so the resources of a page share their key strings.
    """
    sim = KlaviyoSim.seeded(1, count, now=NOW)
    account = sim.account("Acme Outdoor")
    source = sim.source(account, SEGMENT)
    members = [profile_id for _, profile_id in source.keys]
    rendered: list[dict[str, Any]] = []
    for start in range(0, len(members), PAGE_SIZE):
        items = ",".join(
            f'{{"type":"profile","id":"{profile_id}","attributes":'
            f"{sim.profiles[profile_id].attributes_json()},"
            f'"joined_group_at":"{source.stamps[profile_id]}"}}}}'
            for profile_id in members[start : start + PAGE_SIZE]
        )
        rendered += json.loads(f'{{"data":[{items}]}}')["data"]
    clean = [sim.profiles[profile_id].fault is None for profile_id in members]
    return rendered, clean


def builder_for(campaign_name: str, sample: Sequence[Profile]) -> RecordBuilder:
    """A record builder for the campaign, mapped as a new connection would be."""
    campaign = ZapPostSim.seeded(1).campaign_named(campaign_name)
    fields = campaign_fields(campaign.detail())
    names = {name: None for profile in sample for name in profile.properties}
    mapping = suggest_mapping(fields, names)
    return RecordBuilder(mapping, fields, "ZT-BENCH-0001")


def best(rounds: int, work: Callable[[], object], calls: int) -> float:
    """The fastest of `rounds` runs of `work`, in microseconds per call."""
    fastest = float("inf")
    for _ in range(rounds):
        gc.collect()
        gc.disable()
        try:
            started = time.perf_counter()
            work()
            fastest = min(fastest, time.perf_counter() - started)
        finally:
            gc.enable()
    return fastest / max(calls, 1) * 1e6


def measure(
    raw: list[dict[str, Any]], builder: RecordBuilder, rounds: int
) -> dict[str, float]:
    """Microseconds per call of each step over these resources."""
    profiles = [Profile.from_resource(resource) for resource in raw]
    results = [cleanse(profile) for profile in profiles]
    passed = [(p, r.address) for p, r in zip(profiles, results, strict=True) if r.ok]
    records = [builder.build(p, a)[0] for p, a in passed]
    built = [record for record in records if record is not None]
    encode = getattr(builder, "encode", None)
    if encode is None:
        encoder = json.JSONEncoder(separators=(",", ":"), sort_keys=True)
        encode = encoder.encode

    figures = {
        "from_resource": best(
            rounds, lambda: [Profile.from_resource(r) for r in raw], len(raw)
        ),
        "cleanse": best(rounds, lambda: [cleanse(p) for p in profiles], len(raw)),
        "build": best(
            rounds, lambda: [builder.build(p, a) for p, a in passed], len(passed)
        ),
        "encode": best(rounds, lambda: [encode(r) for r in built], len(built)),
    }
    figures["total"] = sum(figures.values())
    figures["passed"] = len(passed)
    figures["built"] = len(built)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--campaign", default="Welcome Letter")
    args = parser.parse_args()

    started = time.perf_counter()
    raw, clean = resources(args.profiles)
    sample = [Profile.from_resource(resource) for resource in raw[:100]]
    builder = builder_for(args.campaign, sample)
    setup = time.perf_counter() - started
    everyone = measure(raw, builder, args.rounds)
    typical = measure(
        [r for r, ok in zip(raw, clean, strict=True) if ok], builder, args.rounds
    )

    print(
        f"{len(raw):,} profiles of {SEGMENT!r} ({sum(clean):,} clean), campaign "
        f"{args.campaign!r}; best of {args.rounds} rounds (set-up {setup:.1f} s)"
    )
    print(
        f"addresses passed {everyone['passed']:,}, records built {everyone['built']:,}"
    )
    print()
    print(f"{'µs per profile':16}{'all':>10}{'clean':>10}")
    for step in ("from_resource", "cleanse", "build", "encode", "total"):
        print(f"{step:16}{everyone[step]:>10.2f}{typical[step]:>10.2f}")


if __name__ == "__main__":
    main()
