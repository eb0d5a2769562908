"""Headless workers on PostgreSQL: how the sync rate grows with the number of workers.

Run: .venv/bin/python bench/workers.py [--connections 400] [--accounts 40]
     [--members 60] [--klaviyo-latency 0.05] [--zap-latency 0.1]
     [--workers 1,2,4] [--pg postgresql://postgres@127.0.0.1:5432/test]

The simulators run in a process of their own (this script with --serve), with
Klaviyo's per-account rate limits on, so the workers' CPU is not shared with
them. Real Klaviyo and ZAP~POST take tens to hundreds of milliseconds to
answer; the simulator answers in under one, so "slow" faults add that latency
to every member page (--klaviyo-latency) and every submission (--zap-latency).
A sync is therefore mostly waiting on one account's API calls, which is the
work more workers can overlap.

For each worker count, a fresh database of our own beside the PostgreSQL test
database (`zaptui_bench`) gets --accounts Klaviyo accounts and --connections
data connections spread evenly over them, all paused; that many
`zaptui --run-scheduler` processes start, and once every one has a live
heartbeat all connections are made due at the same moment. The time until
every connection has a finished run gives runs per minute. Each round checks
that every connection ran exactly once and that no two runs of one account
overlapped. Goal: 4 workers at least 3x one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zaptui.clock import utcnow  # noqa: E402
from zaptui.domain.mapping import campaign_fields, suggest_mapping  # noqa: E402
from zaptui.store.db import connect, open_database  # noqa: E402
from zaptui.store.models import (  # noqa: E402
    ALL_MODELS,
    Account,
    DataConnection,
    FieldMapping,
    SchedulerHeartbeat,
    SyncRun,
    database_proxy,
)
from zaptui.store.secrets import SecretBox, new_key  # noqa: E402

CAMPAIGN = "Welcome Letter"
DATABASE = "zaptui_bench"


# -- the simulator process ------------------------------------------------------


def serve(args: argparse.Namespace) -> None:
    """In the child: build the world, print it as one JSON line, serve it."""
    from zaptui.sim.serve import serve_forever
    from zaptui.sim.server import SimWorld

    world = SimWorld.seeded(args.seed, profiles=0, faulty_share=0.0)
    rng = random.Random(args.seed)
    lists_per_account = args.connections // args.accounts
    accounts = []
    for number in range(args.accounts):
        account = world.klaviyo.add_account(f"Shop {number + 1}", rng=rng)
        lists = []
        for n in range(lists_per_account):
            source = world.klaviyo.add_source(account, "list", f"List {n + 1}", rng=rng)
            world.klaviyo.join(account, source, count=args.members)
            lists.append({"id": source.id, "name": source.name})
        accounts.append(
            {
                "id": account.id,
                "name": account.name,
                "key": account.private_key,
                "lists": lists,
            }
        )
    if args.klaviyo_latency:
        world.faults.add(
            "klaviyo", "list_profiles", "slow", None, delay=args.klaviyo_latency
        )
    if args.zap_latency:
        world.faults.add("zappost", "submit", "slow", None, delay=args.zap_latency)
    campaign = world.zappost.campaign_named(CAMPAIGN)
    print(
        json.dumps(
            {
                "accounts": accounts,
                "campaign": campaign.detail(),
                "zap_key": world.zappost.api_key,
                "zap_password": world.zappost.api_password,
            },
            default=str,
        ),
        flush=True,
    )
    serve_forever(world.app, "127.0.0.1", args.port)


def start_simulator(args: argparse.Namespace, port: int) -> tuple[Any, dict]:
    """Start the simulator process; it and the world it describes."""
    command = [
        sys.executable,
        __file__,
        "--serve",
        "--port",
        str(port),
        "--seed",
        str(args.seed),
        "--connections",
        str(args.connections),
        "--accounts",
        str(args.accounts),
        "--members",
        str(args.members),
        "--klaviyo-latency",
        str(args.klaviyo_latency),
        "--zap-latency",
        str(args.zap_latency),
    ]
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert child.stdout is not None
    world = json.loads(child.stdout.readline())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return child, world
        time.sleep(0.1)
    raise SystemExit("the simulator did not start listening within 60 s")


# -- the database ------------------------------------------------------------------


def bench_url(shared: str) -> str:
    """Our own database beside the shared one, created if missing."""
    import psycopg2
    from psycopg2 import errors

    parsed = urlparse(shared)
    admin = psycopg2.connect(
        dbname=(parsed.path or "/").lstrip("/") or "postgres",
        user=parsed.username,
        password=parsed.password,
        host=parsed.hostname,
        port=parsed.port,
    )
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
        if cursor.fetchone() is None:
            try:
                cursor.execute(f'CREATE DATABASE "{DATABASE}"')
            except (errors.DuplicateDatabase, errors.UniqueViolation):
                pass
    admin.close()
    return parsed._replace(path=f"/{DATABASE}").geturl()


def fresh_database(url: str, world: dict, box: SecretBox) -> list[int]:
    """Drop and recreate zaptui's tables; pair every list, paused; the ids."""
    database = connect(url)
    database.connect()
    with database.bind_ctx(ALL_MODELS):
        database.drop_tables(ALL_MODELS, safe=True, cascade=True)
    database.close()
    open_database(url)
    campaign = world["campaign"]
    mapping = suggest_mapping(campaign_fields(campaign))
    now = utcnow()
    ids = []
    with database_proxy.atomic():
        for sim_account in world["accounts"]:
            account = Account.create(
                klaviyo_id=sim_account["id"],
                name=sim_account["name"],
                api_key_encrypted=box.encrypt(sim_account["key"]),
                key_hint=sim_account["key"][-4:],
                checked_at=now,
            )
            for source in sim_account["lists"]:
                connection = DataConnection.create(
                    account=account,
                    source_type="list",
                    source_id=source["id"],
                    source_name=source["name"],
                    name=f"{account.name} {source['name']} → {campaign['name']}",
                    campaign_id=campaign["id"],
                    campaign_name=campaign["name"],
                    status="paused",
                    created_at=now,
                )
                FieldMapping.insert_many(
                    [
                        {
                            "connection": connection.id,
                            "campaign_field": field,
                            "profile_field": path,
                        }
                        for field, path in mapping.items()
                    ]
                ).execute()
                ids.append(connection.id)
    return ids


# -- one round -----------------------------------------------------------------------


def run_round(
    workers: int, url: str, world: dict, env: dict[str, str], box: SecretBox
) -> dict[str, Any]:
    """Sync every connection once with `workers` processes; the figures."""
    ids = fresh_database(url, world, box)
    command = [sys.executable, "-m", "zaptui", "--run-scheduler", "--db", url]
    # Logs go to files: a pipe read only at the end would fill up and block.
    logs = [tempfile.TemporaryFile("w+") for _ in range(workers)]
    processes = [
        subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log
        )
        for log in logs
    ]
    try:
        wait(lambda: SchedulerHeartbeat.select().count() == workers, 60, "workers")
        now = utcnow()
        started = time.perf_counter()
        DataConnection.update(status="active", resumed_at=now).execute()
        wait(lambda: finished() >= len(ids), 1800, "every sync")
        seconds = time.perf_counter() - started
        cpu = sum(cpu_seconds(process.pid) for process in processes)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        errors = []
        for process, log in zip(processes, logs, strict=True):
            process.wait(timeout=120)
            if process.returncode != 0:
                log.seek(0)
                errors.append(log.read()[-2000:])
    if errors:
        raise SystemExit("a worker did not stop cleanly:\n" + "\n".join(errors))
    return check_round(ids, seconds, workers) | {"cpu": cpu}


def cpu_seconds(pid: int) -> float:
    """User and system CPU a process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def finished() -> int:
    return SyncRun.select().where(SyncRun.finished_at.is_null(False)).count()


def wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def check_round(ids: list[int], seconds: float, workers: int) -> dict[str, Any]:
    """Every connection once, no overlapping runs of one account; the figures."""
    runs = list(SyncRun.select(SyncRun, DataConnection).join(DataConnection))
    per_connection = Counter(run.connection_id for run in runs)
    if sorted(per_connection) != sorted(ids) or set(per_connection.values()) != {1}:
        raise SystemExit("some connection did not run exactly once")
    if any(run.status != "succeeded" for run in runs):
        bad = Counter(run.status for run in runs)
        raise SystemExit(f"not every run succeeded: {dict(bad)}")
    by_account: dict[int, list[SyncRun]] = defaultdict(list)
    for run in runs:
        by_account[run.connection.account_id].append(run)
    for account_runs in by_account.values():
        account_runs.sort(key=lambda run: run.started_at)
        for before, after in zip(account_runs, account_runs[1:], strict=False):
            if after.started_at < before.finished_at:
                raise SystemExit(f"runs {before.id} and {after.id} overlapped")
    owners = Counter(":".join(run.owner.split(":")[:2]) for run in runs)
    if len(owners) != workers:
        raise SystemExit(f"{workers} workers but runs by {len(owners)} processes")
    return {
        "workers": workers,
        "seconds": seconds,
        "runs": len(runs),
        "per_minute": len(runs) / seconds * 60,
        "imported": sum(run.imported for run in runs),
        "share": sorted(owners.values(), reverse=True),
    }


# -- main ----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=400)
    parser.add_argument("--accounts", type=int, default=40)
    parser.add_argument("--members", type=int, default=60)
    parser.add_argument("--klaviyo-latency", type=float, default=0.05)
    parser.add_argument("--zap-latency", type=float, default=0.1)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "ZAPTUI_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    if args.connections % args.accounts:
        raise SystemExit("--connections must be a multiple of --accounts")

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    key_file = Path(tempfile.mkdtemp()) / "secret.key"
    key = new_key()
    key_file.write_text(key)
    os.environ["ZAPTUI_SECRET_KEY_FILE"] = str(key_file)
    box = SecretBox(key)
    url = bench_url(args.pg)
    simulator, world = start_simulator(args, port)
    env = dict(
        os.environ,
        ZAPTUI_KLAVIYO_URL=f"{base}/klaviyo",
        ZAPTUI_ZAP_URL=f"{base}/zap",
        ZAPTUI_ZAP_API_KEY=world["zap_key"],
        ZAPTUI_ZAP_API_PASSWORD=world["zap_password"],
        ZAPTUI_SECRET_KEY_FILE=str(key_file),
        PYTHONPATH=str(ROOT),
    )
    counts = [int(n) for n in args.workers.split(",")]
    print(
        f"{args.connections} data connections over {args.accounts} Klaviyo "
        f"accounts, {args.members} members each, on PostgreSQL ({DATABASE})"
    )
    print(
        "simulator: separate process, Klaviyo per-account rate limits ON; "
        f"latency added as 'slow' faults: {args.klaviyo_latency * 1000:.0f} ms per "
        f"Klaviyo member page, {args.zap_latency * 1000:.0f} ms per ZAP~POST "
        "submission (real APIs answer in tens to hundreds of ms)"
    )
    print("each worker: one sync at a time (ZAPTUI_SCHEDULER_PARALLEL unset)")
    print()
    results = []
    try:
        for workers in counts:
            result = run_round(workers, url, world, env, box)
            results.append(result)
            print(
                f"  {workers} worker(s): {result['runs']} runs in "
                f"{result['seconds']:6.1f} s = {result['per_minute']:6.0f} runs/min "
                f"(runs per worker {result['share']}; worker CPU "
                f"{result['cpu'] / result['runs'] * 1000:.0f} ms per run; load "
                f"average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)",
                flush=True,
            )
    finally:
        simulator.send_signal(signal.SIGINT)
        try:
            simulator.wait(timeout=10)
        except subprocess.TimeoutExpired:
            simulator.kill()
        database_proxy.close()
    one = next((r for r in results if r["workers"] == 1), None)
    if one is None:
        return
    print()
    for result in results:
        speed_up = result["per_minute"] / one["per_minute"]
        print(f"  speed-up with {result['workers']} worker(s): {speed_up:4.2f}x")
    four = next((r for r in results if r["workers"] == 4), None)
    if four is not None:
        ratio = four["per_minute"] / one["per_minute"]
        verdict = "meets" if ratio >= 3 else "MISSES"
        print(f"4 workers / 1 worker = {ratio:.2f}x ({verdict} the 3x goal)")


if __name__ == "__main__":
    main()
