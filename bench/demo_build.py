"""How long `zaptui --demo` takes to build its database before the console opens.

Run: .venv/bin/python bench/demo_build.py [--rounds 3] [--profiles 300]

Each round builds the demo from nothing in a fresh folder: the simulated
world, the accounts, the data connections and every sync run of its history.
The best and the median wall-clock times are printed with the load average.
Goal: under 3 seconds, so the loading indicator is only glimpsed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from zaptui.clock import set_clock
from zaptui.demo import DEMO_PROFILES, build_demo
from zaptui.store.models import ApiLogEntry, SyncRun
from zaptui.store.secrets import new_key

GOAL_SECONDS = 3.0


def build_once(profiles: int) -> tuple[float, int, int]:
    """Build one demo; (seconds, sync runs, API calls)."""
    with tempfile.TemporaryDirectory(prefix="zaptui-bench-") as folder:
        started = time.perf_counter()
        demo = build_demo(Path(folder), profiles=profiles, secret_key=new_key())
        seconds = time.perf_counter() - started
        runs, calls = SyncRun.select().count(), ApiLogEntry.select().count()
        demo.close()
        set_clock(None)
    return seconds, runs, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profiles", type=int, default=DEMO_PROFILES)
    args = parser.parse_args()

    print(f"load average before: {os.getloadavg()[0]:.2f}")
    build_once(args.profiles)  # warm up imports and caches
    times = []
    for _ in range(args.rounds):
        seconds, runs, calls = build_once(args.profiles)
        times.append(seconds)
    print(f"demo of {args.profiles} profiles: {runs} sync runs, {calls} API calls")
    print(f"best {min(times):.2f} s, median {statistics.median(times):.2f} s")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    verdict = "met" if min(times) < GOAL_SECONDS else "missed"
    print(f"goal (under {GOAL_SECONDS:.0f} s): {verdict}")


if __name__ == "__main__":
    main()
