"""A simulated world for scheduler and worker tests: many accounts, real HTTP.

`Fleet` serves a Klaviyo and ZAP~POST simulator on loopback from the test
process and pairs any number of Klaviyo accounts and lists with one campaign,
writing the rows directly (the services would ask Klaviyo for every list).
Headless schedulers are started as real processes against it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from zaptui.clock import utcnow
from zaptui.domain.mapping import campaign_fields, suggest_mapping
from zaptui.runtime import Runtime
from zaptui.services import Services
from zaptui.sim.klaviyo import SimAccount, Source
from zaptui.sim.serve import ServerHandle, serve_in_thread
from zaptui.sim.server import SimWorld
from zaptui.store.db import connect
from zaptui.store.models import (
    ALL_MODELS,
    Account,
    DataConnection,
    FieldMapping,
    SyncRun,
)

CAMPAIGN = "Welcome Letter"
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Fleet:
    """A served simulator, a runtime pointed at it, and the paired connections."""

    sim: SimWorld
    server: ServerHandle
    runtime: Runtime
    sources: dict[int, tuple[SimAccount, Source]] = field(default_factory=dict)

    @classmethod
    def serve(cls, seed: int = 11, rate_limits: bool = False) -> Fleet:
        """A simulator with no members yet, served on loopback."""
        sim = SimWorld.seeded(
            seed, profiles=0, faulty_share=0.0, rate_limits=rate_limits
        )
        server = serve_in_thread(sim.app)
        runtime = Runtime(
            klaviyo_url=SimWorld.klaviyo_url(server.url),
            zap_url=SimWorld.zap_url(server.url),
            zap_api_key=sim.zappost.api_key,
            zap_api_password=sim.zappost.api_password,
        )
        return cls(sim, server, runtime)

    def stop(self) -> None:
        """Stop serving."""
        self.server.stop()

    @property
    def services(self) -> Services:
        """Services over this fleet's runtime."""
        return Services(self.runtime)

    @property
    def campaign_id(self) -> str:
        """The campaign every connection mails."""
        return self.sim.zappost.campaign_named(CAMPAIGN).id

    def pair(self, accounts: int, lists_per_account: int, members: int) -> list[int]:
        """New Klaviyo accounts with lists of fresh members, each list paired
        with the campaign; returns the data connection ids."""
        campaign = self.sim.zappost.campaign_named(CAMPAIGN)
        fields = campaign_fields(campaign.detail())
        mapping = suggest_mapping(fields)
        klaviyo = self.sim.klaviyo
        now = utcnow()
        ids = []
        for _ in range(accounts):
            number = len(klaviyo.accounts) + 1
            sim_account = klaviyo.add_account(f"Shop {number}")
            account = Account.create(
                klaviyo_id=sim_account.id,
                name=sim_account.name,
                api_key_encrypted=self.runtime.secrets.encrypt(sim_account.private_key),
                key_hint=sim_account.private_key[-4:],
                status="connected",
                checked_at=now,
            )
            for n in range(lists_per_account):
                source = klaviyo.add_source(sim_account, "list", f"List {n + 1}")
                klaviyo.join(sim_account, source, count=members)
                connection = DataConnection.create(
                    account=account,
                    source_type="list",
                    source_id=source.id,
                    source_name=source.name,
                    name=f"{sim_account.name} {source.name} → {campaign.name}",
                    campaign_id=campaign.id,
                    campaign_name=campaign.name,
                    created_at=now,
                    next_sync_at=now,
                )
                FieldMapping.insert_many(
                    [
                        {
                            "connection": connection.id,
                            "campaign_field": name,
                            "profile_field": path,
                        }
                        for name, path in mapping.items()
                    ]
                ).execute()
                self.sources[connection.id] = (sim_account, source)
                ids.append(connection.id)
        return ids

    def mailed(self) -> list[str]:
        """Customer ids mailed, once per mailing."""
        return [m.customerid for m in self.sim.zappost.mailed()]

    def members(self, connection_ids: Iterable[int]) -> list[str]:
        """Every member of the lists behind the connections."""
        return [
            profile_id
            for connection_id in connection_ids
            for profile_id, _ in self.sim.klaviyo.members(*self.sources[connection_id])
        ]

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a headless scheduler needs to reach this world."""
        values = dict(os.environ)
        values.update(
            ZAPTUI_KLAVIYO_URL=self.runtime.klaviyo_url,
            ZAPTUI_ZAP_URL=self.runtime.zap_url,
            ZAPTUI_ZAP_API_KEY=self.sim.zappost.api_key,
            ZAPTUI_ZAP_API_PASSWORD=self.sim.zappost.api_password,
            PYTHONPATH=str(REPO),
        )
        values.update(extra)
        return values

    def secrets(self) -> list[str]:
        """Every secret that must never appear in output."""
        keys = [account.private_key for account in self.sim.klaviyo.accounts.values()]
        return keys + [self.sim.zappost.api_password]


def start_headless(
    db_url: str,
    env: dict[str, str],
    *,
    once: bool = False,
    log_format: str = "text",
    stderr: Any = subprocess.PIPE,
) -> subprocess.Popen[str]:
    """Start `zaptui --run-scheduler` as a process of its own.

    A long-running one should log to a file (`stderr`): a pipe nobody reads
    fills up and blocks the process's logging.
    """
    command = [sys.executable, "-m", "zaptui", "--run-scheduler", "--db", db_url]
    if once:
        command.append("--once")
    command += ["--log-format", log_format]
    return subprocess.Popen(
        command,
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
    )


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, every: float = 0.1
) -> Any:
    """Wait until `condition()` is true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def finished_runs(connection_ids: Iterable[int] | None = None) -> list[SyncRun]:
    """Runs that have ended, optionally of some connections."""
    query = SyncRun.select().where(SyncRun.finished_at.is_null(False))
    if connection_ids is not None:
        query = query.where(SyncRun.connection << list(connection_ids))
    return list(query)


def overlapping(runs: Iterable[SyncRun], key: Callable[[SyncRun], Any]) -> list[str]:
    """Pairs of runs with the same key whose start-to-finish times overlap."""
    groups: dict[Any, list[SyncRun]] = defaultdict(list)
    for run in runs:
        groups[key(run)].append(run)
    found = []
    for group_key, group in groups.items():
        group.sort(key=lambda run: run.started_at)
        for before, after in zip(group, group[1:], strict=False):
            end: datetime = before.finished_at or utcnow()
            if after.started_at < end:
                found.append(
                    f"{group_key}: run {before.id} ({before.owner}) and run "
                    f"{after.id} ({after.owner})"
                )
    return found


def account_of(run: SyncRun) -> int:
    """The Klaviyo account a run synced."""
    return DataConnection.get_by_id(run.connection_id).account_id


def process_of(owner: str) -> str:
    """host:pid of a lease owner, without its random tail."""
    return ":".join(owner.split(":")[:2])


def private_pg_url(shared_url: str, name: str) -> str:
    """A PostgreSQL database of our own beside the shared test one, created if
    missing and emptied of zaptui's tables, so others' table drops in the
    shared database cannot disturb a long multi-process test."""
    import psycopg2
    from psycopg2 import errors

    parsed = urlparse(shared_url)
    admin = psycopg2.connect(
        dbname=(parsed.path or "/").lstrip("/") or "postgres",
        user=parsed.username,
        password=parsed.password,
        host=parsed.hostname,
        port=parsed.port,
    )
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                try:
                    cursor.execute(f'CREATE DATABASE "{name}"')
                except (errors.DuplicateDatabase, errors.UniqueViolation):
                    pass  # created meanwhile by another run
    finally:
        admin.close()
    url = parsed._replace(path=f"/{name}").geturl()
    database = connect(url)
    database.connect()
    with database.bind_ctx(ALL_MODELS):
        database.drop_tables(ALL_MODELS, safe=True, cascade=True)
    database.close()
    return url


class Workers:
    """Headless schedulers running as processes, stopped with SIGTERM."""

    def __init__(self, db_url: str, env: dict[str, str], count: int) -> None:
        self.logs = [tempfile.TemporaryFile("w+") for _ in range(count)]
        self.processes = [start_headless(db_url, env, stderr=log) for log in self.logs]

    @property
    def pids(self) -> list[int]:
        """The workers' process ids."""
        return [process.pid for process in self.processes]

    def kill(self, pid: int) -> None:
        """SIGKILL one worker, as a crash would end it."""
        process = next(p for p in self.processes if p.pid == pid)
        process.kill()
        process.wait(timeout=30)

    def stop(self) -> dict[int, int]:
        """SIGTERM every live worker and wait; exit status by pid."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        statuses = {}
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
            statuses[process.pid] = process.returncode
        return statuses

    def output(self) -> str:
        """Everything the workers logged."""
        texts = []
        for log in self.logs:
            log.seek(0)
            texts.append(log.read())
        return "\n".join(texts)


def live_headless_schedulers() -> int:
    """How many headless schedulers have a live heartbeat."""
    from zaptui.scheduler.heartbeat import live_schedulers

    return sum(1 for row in live_schedulers() if row.mode == "headless")


def activate(connection_ids: Iterable[int]) -> None:
    """Make paused connections active and due at once, all at the same moment."""
    now = utcnow()
    DataConnection.update(status="active", resumed_at=now).where(
        DataConnection.id << list(connection_ids)
    ).execute()


# Workers in tests poll often and hold briefly, so a takeover is quick.
WORKER_ENV = {"ZAPTUI_SCHEDULER_POLL_SECONDS": "0.3", "ZAPTUI_LEASE_SECONDS": "5"}


def all_runs_over() -> bool:
    runs = list(SyncRun.select())
    return bool(runs) and all(run.finished_at is not None for run in runs)


def assert_killed_work_is_taken_over(fleet: Fleet, db_url: str, phase: str) -> None:
    """SIGKILL the worker syncing a connection in `phase`; the other finishes."""
    (connection_id,) = fleet.pair(1, 1, members=250)
    DataConnection.update(status="paused").execute()
    if phase == "fetching":
        fleet.sim.faults.add("klaviyo", "list_profiles", "slow", 2, delay=1.0)
    else:
        fleet.sim.faults.add("zappost", "submit", "slow", 1, delay=2.0)
    workers = Workers(db_url, fleet.env(**WORKER_ENV), 2)
    try:
        wait_for(lambda: live_headless_schedulers() == 2, 30, "both workers")
        activate([connection_id])
        if phase == "fetching":
            running = wait_for(
                lambda: SyncRun.get_or_none(SyncRun.fetched > 0), 30, "a page"
            )
        else:
            running = wait_for(
                lambda: SyncRun.get_or_none(SyncRun.phase == "submitting"),
                30,
                "the submission",
            )
        victim = int(running.owner.split(":")[1])
        workers.kill(victim)
        wait_for(
            lambda: len(fleet.mailed()) >= 250 and all_runs_over(),
            45,
            "the other worker to finish the work",
        )
        wait_for(all_runs_over, 10, "the last run to end")
        # The killed worker's request may still reach ZAP~POST after its delay:
        # wait it out, so a second mailing would be seen.
        time.sleep(2.5 if phase == "submitting" else 0.5)
    finally:
        statuses = workers.stop()

    survivor = next(pid for pid in workers.pids if pid != victim)
    assert statuses[victim] == -signal.SIGKILL
    assert statuses[survivor] == 0
    runs = list(SyncRun.select().order_by(SyncRun.id))
    assert all(run.finished_at is not None for run in runs)
    assert any(process_of(run.owner).endswith(f":{survivor}") for run in runs)
    assert sorted(fleet.mailed()) == sorted(fleet.members([connection_id]))
    assert fleet.sim.zappost.duplicates() == []
