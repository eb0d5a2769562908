"""Paging a 100,000-member segment: the Klaviyo client against a bare httpx loop.

Run: .venv/bin/python bench/paging.py [--profiles 100000] [--rounds 3]

The simulator runs in its own process (`python -m zaptui simulate
--no-rate-limits`), so its CPU does not share a GIL with the client being
measured. Klaviyo's real L tier (75/s, 700-750/m) would make 1,000 pages take
well over a minute whatever the client does, so the simulator's rate limits
are off and the client's limiter is given tiers it never reaches: the limiter
still runs on every call, it just never waits.

Three loops page the same segment ("All UK customers") at page[size]=100,
sorted by joined_group_at, following links.next:

- bare: httpx.AsyncClient, GET, .json(), next link; nothing else.
- client + SQLite API log: KlaviyoClient writing every call to a real SQLite
  database through DatabaseApiLog, as in production.
- client + NullApiLog: the client with API logging switched off.

Each loop runs once to warm up, then `--rounds` times interleaved. For each,
the best and the median wall-clock run are reported with the client-to-bare
ratios; the verdict uses the best runs, the least disturbed by whatever else
the machine is doing (the load average is printed before and after). The
CPU seconds this process spent in each loop are reported too: the simulator
runs elsewhere, so they are the loop's own cost, and they barely depend on
the machine's load. Goal: the client with the SQLite API log within 1.3x of
the bare loop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from zaptui.apilog import ApiLog, DatabaseApiLog, NullApiLog
from zaptui.klaviyo.client import JSON_API, REVISION, KlaviyoClient
from zaptui.klaviyo.limiter import TIERS, RateLimiter, Tier
from zaptui.store.db import open_database
from zaptui.store.models import ApiLogEntry

SEGMENT = "All UK customers"
UNREACHABLE = 10**9


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_simulator(profiles: int, port: int) -> subprocess.Popen[bytes]:
    """`zaptui simulate` in a child process, rate limits off."""
    command = [
        sys.executable,
        "-m",
        "zaptui",
        "simulate",
        "--no-rate-limits",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--profiles",
        str(profiles),
    ]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def wait_for_world(base: str, child: subprocess.Popen[bytes]) -> dict[str, Any]:
    """Poll the control API until the simulator answers; its accounts."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(f"the simulator exited with status {child.returncode}")
        try:
            answer = httpx.get(f"{base}/_sim/klaviyo/accounts", timeout=2)
            return answer.json()
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("the simulator did not start within 300 s")


async def bare_loop(url: str, key: str, first: str) -> int:
    """Page with httpx alone; the number of profiles read."""
    headers = {
        "Authorization": f"Klaviyo-API-Key {key}",
        "revision": REVISION,
        "Accept": JSON_API,
    }
    count = 0
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        next_url: str | None = first
        while next_url:
            response = await http.get(next_url)
            response.raise_for_status()
            body = response.json()
            count += len(body["data"])
            next_url = body["links"]["next"]
    return count


def wide_limiter() -> RateLimiter:
    """A limiter with every tier out of reach: it counts but never waits."""
    return RateLimiter(
        {name: Tier(name, UNREACHABLE, UNREACHABLE) for name in TIERS},
    )


async def client_loop(
    url: str, key: str, source_id: str, api_log: ApiLog
) -> tuple[int, float]:
    """Page with KlaviyoClient; profiles read and seconds its limiter waited."""
    limiter = wide_limiter()
    count = 0
    async with KlaviyoClient(
        key, base_url=url, api_log=api_log, limiter=limiter
    ) as client:
        async for page in client.iter_member_pages("segment", source_id):
            count += len(page)
    return count, limiter.waited


async def timed(run: Callable[[], Awaitable[Any]]) -> tuple[float, float, Any]:
    """Wall-clock and CPU seconds of one run, and what it returned."""
    started, cpu = time.perf_counter(), time.process_time()
    result = await run()
    return time.perf_counter() - started, time.process_time() - cpu, result


async def measure(
    base: str, child: subprocess.Popen[bytes], rounds: int, db_path: Path
) -> None:
    """Run the three loops against the simulator and print the figures."""
    world = wait_for_world(base, child)
    acme = next(a for a in world["accounts"] if a["name"] == "Acme Outdoor")
    segment = next(s for s in acme["segments"] if s["name"] == SEGMENT)
    key, source_id, members = acme["private_key"], segment["id"], segment["members"]
    url = f"{base}/klaviyo"
    first = f"/api/segments/{source_id}/profiles/?page[size]=100&sort=joined_group_at"
    pages = -(-members // 100)

    open_database(f"sqlite:///{db_path}")
    db_log = DatabaseApiLog()
    loops: dict[str, Callable[[], Awaitable[Any]]] = {
        "bare httpx loop": lambda: bare_loop(url, key, first),
        "client + SQLite API log": lambda: client_loop(url, key, source_id, db_log),
        "client + NullApiLog": lambda: client_loop(url, key, source_id, NullApiLog()),
    }
    times: dict[str, list[float]] = {name: [] for name in loops}
    cpu: dict[str, list[float]] = {name: [] for name in loops}

    print(f"simulator: separate process, {members:,} members in {SEGMENT!r}")
    print("simulator rate limits: OFF (--no-rate-limits); the real L tier is 75/s,")
    print("  700-750/m, i.e. >80 s for these pages whatever the client does")
    print("client limiter: on, with every tier widened so it never has to wait")
    print(f"pages per run: {pages:,} at page[size]=100; 1 warm-up + {rounds} rounds")
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print()
    for round_number in range(rounds + 1):
        for name, run in loops.items():
            seconds, cpu_seconds, result = await timed(run)
            count = result[0] if isinstance(result, tuple) else result
            if count != members:
                raise SystemExit(f"{name} read {count:,} profiles, not {members:,}")
            if isinstance(result, tuple) and result[1]:
                raise SystemExit(f"{name}: the limiter waited {result[1]:.2f} s")
            if round_number:
                times[name].append(seconds)
                cpu[name].append(cpu_seconds)
            label = "warm-up" if round_number == 0 else f"round {round_number}"
            print(
                f"  {label:<8} {name:<24} {seconds:7.2f} s  ({cpu_seconds:.2f} s CPU)"
            )

    rows = ApiLogEntry.select().count()
    print()
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(f"API log rows written to SQLite: {rows:,} ({db_path.stat().st_size:,} B)")
    print("seconds per full paging run (best / median):")
    best_bare = min(times["bare httpx loop"])
    median_bare = statistics.median(times["bare httpx loop"])
    for name, values in times.items():
        best, median = min(values), statistics.median(values)
        print(
            f"  {name:<24} {best:6.2f} / {median:6.2f} s  {pages / best:5.0f} pages/s  "
            f"{best / best_bare:5.2f}x / {median / median_bare:5.2f}x bare"
        )
    best_ratio = min(times["client + SQLite API log"]) / best_bare
    median_ratio = statistics.median(times["client + SQLite API log"]) / median_bare
    null_ratio = min(times["client + NullApiLog"]) / best_bare
    verdict = "meets" if best_ratio <= 1.3 else "MISSES"
    print(
        f"client + SQLite API log / bare = {best_ratio:.2f}x best, "
        f"{median_ratio:.2f}x median ({verdict} the 1.3x goal)"
    )
    print(f"client + NullApiLog / bare = {null_ratio:.2f}x best")
    print("CPU seconds in this process per run (best), and per page:")
    best_cpu_bare = min(cpu["bare httpx loop"])
    for name, values in cpu.items():
        best = min(values)
        print(
            f"  {name:<24} {best:6.2f} s  {best / pages * 1000:5.2f} ms/page  "
            f"{best / best_cpu_bare:5.2f}x bare"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    port = free_port()
    child = start_simulator(args.profiles, port)
    try:
        with tempfile.TemporaryDirectory() as folder:
            asyncio.run(
                measure(
                    f"http://127.0.0.1:{port}",
                    child,
                    args.rounds,
                    Path(folder) / "apilog.db",
                )
            )
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()


if __name__ == "__main__":
    main()
