"""A full sync of a 100,000-member segment, against a bare httpx loop paging it.

Run: .venv/bin/python bench/sync.py [--profiles 100000] [--small 10000]
     [--joiners 100] [--rounds 1]

The simulators run in their own processes (`python -m zaptui simulate
--no-rate-limits`), so they do not share a GIL with what is measured. Klaviyo's
real L tier (75/s, 750/m) would hold 1,000 pages to over 80 s whatever the
engine does, so the simulator's rate limits are off and the client's limiter
gets tiers it never reaches (it still runs on every call). Everything else is
production: the SQLite database, the API log, the default retry policies.

Figures printed:

- bare: httpx.AsyncClient paging "All UK customers" at page[size]=100,
  .json() on every page, following links.next.
- sync: `Services.sync_now` in a fresh process on a fresh SQLite file: fetch,
  cleanse, map, store and submit one ZAP~POST submission. Goal: within 1.5x
  of bare. Split into its two phases: fetching (with cleansing, mapping and
  storing each page) until the submission starts, then submitting and
  recording the outcome, with the CPU the sync itself spent there (the rest
  is the simulated ZAP~POST reading, validating and answering 100,000
  records).
- memory: peak RSS (ru_maxrss) of that process after a 100,000-member sync
  and after a 10,000-member one, each in a fresh process. Goal: within 1.2x.
  `--tracemalloc` adds the peak of Python allocations during the sync.
- floor: the same records sent by httpx alone as one submission (json.dumps,
  POST, .json() of the answer) under a fresh reference. Bare paging plus this
  bare submission is the least any sync that fetches and then submits once
  can take; the ratio of the sync to it is the engine's own cost. The
  simulators' CPU is printed beside each figure: on a machine of few cores
  they compete with the measured process for them.
- re-sync: after `--joiners` new members join, a second sync of the same
  connection; it reads only the look-back window and the joiners (the page
  count is printed).

`--rate-limited` instead runs both loops against a simulator that enforces
Klaviyo's L tier, the bare loop waiting for the same limiter the client uses:
the comparison that holds against the real API (1,000 pages take over 80 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SEGMENT = "All UK customers"
CAMPAIGN = "Welcome Letter"
UNREACHABLE = 10**9


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _printed_value(line: str, variable: str) -> str:
    """The value on a line `zaptui simulate` printed for an environment variable.

    Both `VAR=value` and `label: value   (VAR)` are understood.
    """
    labels = {variable, "API", "key:", "password:"}
    words = [w for w in re.split(r"[\s=()]+", line.strip()) if w and w not in labels]
    return words[0] if words else ""


class Simulator:
    """`zaptui simulate` in a child process, and what it serves."""

    def __init__(self, profiles: int, rate_limits: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zaptui",
                "simulate",
                *([] if rate_limits else ["--no-rate-limits"]),
                "--port",
                str(self.port),
                "--profiles",
                str(profiles),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.zap_key = self.zap_password = ""
        self.campaigns: dict[str, str] = {}
        assert self.process.stdout is not None
        for line in self.process.stdout:
            words = line.split()
            if "ZAPTUI_ZAP_API_KEY" in line:
                self.zap_key = _printed_value(line, "ZAPTUI_ZAP_API_KEY")
            elif "ZAPTUI_ZAP_API_PASSWORD" in line:
                self.zap_password = _printed_value(line, "ZAPTUI_ZAP_API_PASSWORD")
            elif words[:1] == ["campaign"]:
                self.campaigns[" ".join(words[2:])] = words[1]
            elif line.startswith("Klaviyo account") and self.campaigns:
                break  # the ZAP~POST part is printed
        self.accounts = self._wait()
        acme = next(a for a in self.accounts if a["name"] == "Acme Outdoor")
        self.acme_id = acme["id"]
        self.acme_key = acme["private_key"]
        segment = next(s for s in acme["segments"] if s["name"] == SEGMENT)
        self.segment_id = segment["id"]
        self.members = segment["members"]

    def _wait(self) -> list[dict[str, Any]]:
        import httpx

        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the simulator exited ({self.process.returncode})")
            try:
                answer = httpx.get(f"{self.url}/_sim/klaviyo/accounts", timeout=5)
                return answer.json()["accounts"]
            except httpx.HTTPError:
                time.sleep(0.2)
        raise SystemExit("the simulator did not start within 600 s")

    def join(self, count: int) -> None:
        """New members join the segment now."""
        import httpx

        httpx.post(
            f"{self.url}/_sim/klaviyo/join",
            json={"account": self.acme_id, "source": self.segment_id, "count": count},
            timeout=60,
        ).raise_for_status()

    def cpu_seconds(self) -> float:
        """CPU the simulator process has used so far (Linux: /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2]
        user, system = fields.split()[11:13]
        return (int(user) + int(system)) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """End the simulator process."""
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def bare_loop(
    sim: Simulator, limited: bool = False
) -> tuple[float, float, int, int]:
    """Page the segment with httpx alone: seconds, CPU seconds, profiles, pages.

    `limited` waits for Klaviyo's rate limits before each call, as any client
    of the real API must.
    """
    import httpx

    from zaptui.klaviyo.client import JSON_API, REVISION
    from zaptui.klaviyo.limiter import RateLimiter

    limiter = RateLimiter() if limited else None

    headers = {
        "Authorization": f"Klaviyo-API-Key {sim.acme_key}",
        "revision": REVISION,
        "Accept": JSON_API,
    }
    count = pages = 0
    started = time.perf_counter()
    cpu = time.process_time()
    async with httpx.AsyncClient(headers=headers, timeout=60) as http:
        url: str | None = (
            f"{sim.url}/klaviyo/api/segments/{sim.segment_id}/profiles/"
            "?page[size]=100&sort=joined_group_at"
        )
        while url:
            slot = await limiter.acquire("GET", url.split("?")[0]) if limiter else None
            response = await http.get(url)
            if limiter and slot:
                limiter.release(slot)
            response.raise_for_status()
            body = response.json()
            count += len(body["data"])
            pages += 1
            url = body["links"]["next"]
    return time.perf_counter() - started, time.process_time() - cpu, count, pages


def sent_records(db_path: Path, run_id: int, reference: str) -> list[dict[str, Any]]:
    """The records a run sent to ZAP~POST, carrying `reference` instead of its own."""
    import sqlite3

    from zaptui.store.models import ProfileOutcome
    from zaptui.zappost.client import REFERENCE_FIELD

    table = ProfileOutcome._meta.table_name
    with sqlite3.connect(db_path) as database:
        rows = database.execute(
            f'SELECT record FROM "{table}" WHERE run_id = ? AND record IS NOT NULL '
            "ORDER BY id",
            (run_id,),
        ).fetchall()
    records = [json.loads(record) for (record,) in rows]
    for record in records:
        record["customdata"][REFERENCE_FIELD] = reference
    return records


async def bare_submission(
    sim: Simulator, records: list[dict[str, Any]]
) -> tuple[float, float, float]:
    """Send records as one submission with httpx alone: seconds, CPU, sim CPU."""
    import httpx

    from zaptui.sim.server import SimWorld

    campaign = sim.campaigns[CAMPAIGN]
    auth = (sim.zap_key, sim.zap_password)
    async with httpx.AsyncClient(auth=auth, timeout=600) as http:
        sim_cpu = sim.cpu_seconds()
        started = time.perf_counter()
        cpu = time.process_time()
        body = json.dumps(
            {
                "campaignId": campaign,
                "scheduledSendId": None,
                "onlyValidRecords": False,
                "submissions": records,
            },
            separators=(",", ":"),
        )
        response = await http.post(
            f"{SimWorld.zap_url(sim.url)}/api/v1/submissions",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        response.raise_for_status()
        answer = response.json()
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
        sim_cpu = sim.cpu_seconds() - sim_cpu
    answered = len(answer["validRecords"]) + len(answer["invalidRecords"])
    if answered != len(records):
        raise SystemExit("the bare submission's answer does not count every record")
    return seconds, cpu, sim_cpu


def prepare(sim: Simulator, db_path: Path, key_file: Path) -> int:
    """A fresh database with Acme paired to the segment; the connection id."""
    os.environ["ZAPTUI_SECRET_KEY_FILE"] = str(key_file)
    from zaptui.runtime import Runtime
    from zaptui.services import Services
    from zaptui.store.db import open_database

    database = open_database(f"sqlite:///{db_path}")
    services = Services(runtime(sim.url, sim.zap_key, sim.zap_password))
    account = services.connect_account(sim.acme_key)
    connection = services.create_connection(
        account.id, "segment", sim.segment_id, sim.campaigns[CAMPAIGN]
    )
    database.close()
    assert isinstance(Runtime, type)
    return connection.id


def runtime(url: str, zap_key: str, zap_password: str) -> Any:
    """A production runtime pointed at the simulator, its limiter never waiting
    (unless BENCH_RATE_LIMITED is set: then Klaviyo's real tiers apply)."""
    from zaptui.klaviyo.limiter import TIERS, RateLimiter, Tier
    from zaptui.runtime import Runtime
    from zaptui.sim.server import SimWorld

    return Runtime(
        klaviyo_url=SimWorld.klaviyo_url(url),
        zap_url=SimWorld.zap_url(url),
        zap_api_key=zap_key,
        zap_api_password=zap_password,
        klaviyo_limiter=None
        if os.environ.get("BENCH_RATE_LIMITED")
        else RateLimiter(
            {name: Tier(name, UNREACHABLE, UNREACHABLE) for name in TIERS}
        ),
        zap_timeout=600.0,
        actor="bench",
    )


def run_worker(
    sim: Simulator, db_path: Path, key_file: Path, connection_id: int, trace: bool
) -> dict[str, Any]:
    """One sync in a fresh process; what it measured."""
    env = dict(os.environ)
    env["ZAPTUI_SECRET_KEY_FILE"] = str(key_file)
    env["BENCH_ZAP_PASSWORD"] = sim.zap_password
    command = [
        sys.executable,
        __file__,
        "--worker",
        f"sqlite:///{db_path}",
        sim.url,
        sim.zap_key,
        str(connection_id),
    ]
    if trace:
        command.append("--tracemalloc")
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"the sync worker failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def worker(argv: list[str]) -> None:
    """In a fresh process: open the database, sync once, print JSON figures."""
    trace = "--tracemalloc" in argv
    db_url, url, zap_key, connection_id = [a for a in argv if a != "--tracemalloc"]
    import tracemalloc

    from zaptui.services import Services
    from zaptui.store.db import open_database

    open_database(db_url)
    services = Services(runtime(url, zap_key, os.environ["BENCH_ZAP_PASSWORD"]))
    if trace:
        tracemalloc.start()
    submitting: list[tuple[float, float]] = []

    def progress(report: Any) -> None:
        if report.phase == "submitting" and not submitting:
            submitting.append((time.perf_counter(), time.process_time()))

    started = time.perf_counter()
    cpu = time.process_time()
    run = services.sync_now(int(connection_id), progress=progress)
    ended = (time.perf_counter(), time.process_time())
    seconds = ended[0] - started
    cpu = ended[1] - cpu
    fetched_at = submitting[0] if submitting else ended
    peak = tracemalloc.get_traced_memory()[1] if trace else None
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu,
                "fetch_seconds": fetched_at[0] - started,
                "submit_seconds": ended[0] - fetched_at[0],
                "submit_cpu_seconds": ended[1] - fetched_at[1],
                "run_id": run.id,
                "reference": run.reference,
                "status": run.status,
                "pages": run.pages,
                "fetched": run.fetched,
                "imported": run.imported,
                "failed": run.failed,
                "skipped": run.skipped_duplicate,
                "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "tracemalloc_peak": peak,
            }
        )
    )


def fresh_sync(
    sim: Simulator, folder: Path, name: str, trace: bool = False
) -> tuple[dict[str, Any], Path, Path, int]:
    """Pair the segment in a new database and sync it once in a fresh process."""
    db_path = folder / f"{name}.db"
    key_file = folder / f"{name}.key"
    connection_id = prepare(sim, db_path, key_file)
    sim_cpu = sim.cpu_seconds()
    figures = run_worker(sim, db_path, key_file, connection_id, trace)
    figures["sim_cpu_seconds"] = sim.cpu_seconds() - sim_cpu
    return figures, db_path, key_file, connection_id


def floor_figures(
    sim: Simulator, db_path: Path, figures: dict[str, Any], rounds: int
) -> dict[str, Any]:
    """The median bare submission of the records a sync sent, each under a
    reference of its own (the simulator replays a reference it has seen)."""
    times = []
    count = 0
    for number in range(rounds):
        records = sent_records(
            db_path, figures["run_id"], f"{figures['reference']}-bare{number}"
        )
        count = len(records)
        times.append(asyncio.run(bare_submission(sim, records)))
        del records
    return {
        "records": count,
        "seconds": statistics.median(t[0] for t in times),
        "cpu": statistics.median(t[1] for t in times),
        "sim_cpu": statistics.median(t[2] for t in times),
    }


def describe(label: str, figures: dict[str, Any]) -> str:
    """One line of a sync's figures."""
    return (
        f"{label}: {figures['seconds']:.2f} s ({figures['cpu_seconds']:.2f} s CPU), "
        f"{figures['pages']} pages, "
        f"fetched {figures['fetched']:,}, imported {figures['imported']:,}, "
        f"failed {figures['failed']:,}, skipped {figures['skipped']:,} "
        f"({figures['status']}), peak RSS {figures['maxrss_kb'] / 1024:.0f} MiB"
        + (
            f", Python peak {figures['tracemalloc_peak'] / 2**20:.1f} MiB"
            if figures.get("tracemalloc_peak")
            else ""
        )
    )


def rate_limited(profiles: int) -> None:
    """Both loops under Klaviyo's L tier, as against the real API."""
    os.environ["BENCH_RATE_LIMITED"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        print(f"starting a rate-limited simulator with {profiles:,} profiles")
        sim = Simulator(profiles, rate_limits=True)
        try:
            seconds, cpu, count, pages = asyncio.run(bare_loop(sim, limited=True))
            print(f"bare httpx loop, rate-limited: {seconds:.2f} s for {pages} pages")
            time.sleep(61)  # a fresh steady window for the sync
            figures = fresh_sync(sim, Path(tmp), "limited")[0]
            print(describe(f"full sync of {sim.members:,}, rate-limited", figures))
            print(f"sync / bare under rate limits: {figures['seconds'] / seconds:.2f}x")
        finally:
            sim.stop()


def main() -> None:
    """Measure and print the figures and their ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--joiners", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument(
        "--rate-limited",
        action="store_true",
        help="only compare under Klaviyo's real rate limits (1,000 pages take "
        "over 80 s per loop)",
    )
    args = parser.parse_args()
    if args.rate_limited:
        rate_limited(args.profiles)
        return

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"starting simulators with {args.profiles:,} and {args.small:,} profiles")
        big, small = Simulator(args.profiles), Simulator(args.small)
        try:
            bare_times = []
            for _ in range(args.rounds + 1):  # the first warms up
                sim_cpu = big.cpu_seconds()
                seconds, cpu, count, pages = asyncio.run(bare_loop(big))
                bare_times.append((seconds, cpu, big.cpu_seconds() - sim_cpu))
            bare = statistics.median(t for t, _, _ in bare_times[1:])
            bare_cpu = statistics.median(c for _, c, _ in bare_times[1:])
            bare_sim_cpu = statistics.median(s for _, _, s in bare_times[1:])
            print(
                f"bare httpx loop: {bare:.2f} s ({bare_cpu:.2f} s CPU; the "
                f"simulator {bare_sim_cpu:.2f} s) for {count:,} members, {pages} pages"
            )

            syncs = []
            for round_number in range(args.rounds):
                figures, db_path, key_file, connection_id = fresh_sync(
                    big, folder, f"big{round_number}"
                )
                syncs.append(figures)
                print(describe(f"full sync of {big.members:,}", figures))
                meanwhile = figures["sim_cpu_seconds"]
                print(f"  the simulator's CPU meanwhile: {meanwhile:.2f} s")
            full = statistics.median(f["seconds"] for f in syncs)
            full_cpu = statistics.median(f["cpu_seconds"] for f in syncs)
            print(f"sync / bare: {full / bare:.2f}x (goal: within 1.5x)")
            print(
                f"sync / bare, CPU of the measured process: {full_cpu / bare_cpu:.2f}x"
            )
            fetch = statistics.median(f["fetch_seconds"] for f in syncs)
            submit = statistics.median(f["submit_seconds"] for f in syncs)
            submit_cpu = statistics.median(f["submit_cpu_seconds"] for f in syncs)
            print(
                f"  fetch, cleanse, map and store: {fetch:.2f} s "
                f"({fetch / bare:.2f}x the bare loop); submit and record: "
                f"{submit:.2f} s, {submit_cpu:.2f} s of it our CPU, the rest "
                "waiting for ZAP~POST to take the submission"
            )
            little, _, _, _ = fresh_sync(small, folder, "small")
            print(describe(f"full sync of {small.members:,}", little))
            ratio = syncs[0]["maxrss_kb"] / little["maxrss_kb"]
            print(
                f"peak RSS {big.members:,} / {small.members:,}: {ratio:.2f}x "
                "(goal: within 1.2x)"
            )
            if args.tracemalloc:
                traced_big = fresh_sync(big, folder, "trace_big", trace=True)[0]
                traced_small = fresh_sync(small, folder, "trace_small", trace=True)[0]
                print(describe(f"traced sync of {big.members:,}", traced_big))
                print(describe(f"traced sync of {small.members:,}", traced_small))
                traced = (
                    traced_big["tracemalloc_peak"] / traced_small["tracemalloc_peak"]
                )
                print(f"Python peak {big.members:,} / {small.members:,}: {traced:.2f}x")

            big.join(args.joiners)
            again = run_worker(big, db_path, key_file, connection_id, False)
            print(describe(f"re-sync after {args.joiners} joiners", again))
            print(
                f"re-sync read {again['pages']} pages for {again['fetched']} members "
                f"(a full read is {pages} pages)"
            )
            # Last: it holds every record in this process, which a fresh
            # process started after it would count in its peak RSS.
            floor = floor_figures(big, db_path, syncs[-1], args.rounds)
            print(
                f"bare submission of the {floor['records']:,} records sent: "
                f"{floor['seconds']:.2f} s ({floor['cpu']:.2f} s CPU; the simulator "
                f"{floor['sim_cpu']:.2f} s)"
            )
            least = bare + floor["seconds"]
            print(
                f"floor, bare paging + bare submission: {least:.2f} s; "
                f"sync / floor: {full / least:.2f}x"
            )
            if least > 1.5 * bare:
                print(
                    f"  the floor alone is {least / bare:.2f}x the bare loop: no sync "
                    "that fetches and then sends one submission meets 1.5x here"
                )
            cores = os.cpu_count() or 1
            busy = full_cpu + statistics.median(f["sim_cpu_seconds"] for f in syncs)
            print(
                f"  CPU of the sync and the simulator together: {busy:.2f} s on "
                f"{cores} cores, at least {busy / cores:.2f} s of wall time"
            )

        finally:
            big.stop()
            small.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2:])
    else:
        main()
