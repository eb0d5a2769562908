"""Exactly once, whatever happens: syncs killed with SIGKILL at random points.

The simulators run in this process over loopback, so what ZAP~POST mailed
survives every kill. A worker process (kill_worker.py) recovers and syncs the
data connection on a SQLite file; the test kills it after a random delay, at a
random page, while it submits, or while it recovers, then starts another. New
members join between kills. At the end everyone mailable has been mailed
exactly once and every run is finished, the killed ones marked interrupted.
Set ZAPTUI_KILL_SEED to replay a sequence of kill points.
"""

from __future__ import annotations

import os
import queue
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

from sync_world import UNMAILABLE, build_world

from zaptui.clock import utcnow
from zaptui.sim.zappost import COMMITTED_SERVICE
from zaptui.store.models import ProfileOutcome, SyncRun
from zaptui.sync.engine import needs_recovery

KILLS = 24  # kill points that hit a live worker
MAX_WORKERS = 60
WORKER = Path(__file__).with_name("kill_worker.py")
MODES = ("delay", "page", "page", "submitting", "submitting", "recovering")


class Worker:
    """One worker process and the lines it has printed."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def wait_for(self, wanted: str, timeout: float = 20.0) -> bool:
        """Read lines until one starts with `wanted`; False if the worker ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.05)
            except queue.Empty:
                continue
            if line is None:
                return False
            self.seen.append(line)
            if line.startswith(wanted):
                return True
        raise AssertionError(f"worker stuck; it printed {self.seen}")

    def kill(self) -> bool:
        """SIGKILL it if it still runs; True when the kill hit a live process."""
        alive = self.process.poll() is None
        if alive:
            self.process.kill()
        self.process.wait(10)
        return alive

    def finish(self, timeout: float = 30.0) -> tuple[int, str]:
        """Let it run to the end: its exit status and its output."""
        out, err = self.process.communicate(timeout=timeout)
        while True:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
        return self.process.returncode, "\n".join(self.seen) + out + err


def test_killed_syncs_leave_everyone_mailed_exactly_once(db, db_url, tmp_path):
    seed = int(os.environ.get("ZAPTUI_KILL_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    replay = f"(replay with ZAPTUI_KILL_SEED={seed})"
    for world in build_world(seed=21, clean=560, faults=UNMAILABLE * 2):
        connection = world.connect()
        # Widen the windows worth killing in: each page takes a little while,
        # and ZAP~POST answers a while after it stored a submission.
        world.sim.faults.add("klaviyo", "segment_profiles", "slow", None, delay=0.02)
        world.sim.faults.add(COMMITTED_SERVICE, "submit", "slow", None, delay=0.15)
        args = [db_url, world.server.url, world.sim.zappost.api_key, str(connection.id)]
        env = dict(os.environ)
        env["ZAPTUI_ZAP_API_PASSWORD"] = world.sim.zappost.api_password
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).parent.parent), env.get("PYTHONPATH", "")]
        )

        hits: Counter[str] = Counter()
        workers = 0
        while sum(hits.values()) < KILLS:
            workers += 1
            assert workers <= MAX_WORKERS, f"too few kills landed: {hits} {replay}"
            if rng.random() < 0.5:
                world.add_members(rng.randint(1, 6), at=utcnow())
            if rng.random() < 0.2:
                world.add_members(1, at=utcnow() - timedelta(hours=1))  # a late joiner
            worker = Worker(args, env)
            mode = rng.choice(MODES)
            if mode == "delay":
                time.sleep(rng.uniform(0.1, 1.2))
                reached = True
            elif mode == "page":
                reached = worker.wait_for(f"progress fetching {rng.randint(1, 6)}")
                time.sleep(rng.uniform(0, 0.02))
            elif mode == "submitting":
                reached = worker.wait_for("progress submitting")
                time.sleep(rng.uniform(0, 0.25))
            else:
                reached = worker.wait_for("ready")
                time.sleep(rng.uniform(0, 0.08))
            if worker.kill() and reached:
                hits[mode] += 1

        world.sim.faults.clear()
        status, output = Worker(args, env).finish()
        assert status == 0 and "done " in output, f"{output} {replay}"
        status, output = Worker(args, env).finish()
        assert status == 0 and "done succeeded" in output, f"{output} {replay}"

        mailed = world.mailed()
        assert world.sim.zappost.duplicates() == [], replay
        assert sorted(mailed) == sorted(world.members.mailable), replay
        runs = list(SyncRun.select())
        assert not SyncRun.select().where(needs_recovery()).exists(), replay
        assert (
            not ProfileOutcome.select()
            .where(ProfileOutcome.outcome == "staged")
            .exists()
        ), replay
        interrupted = [r for r in runs if r.status == "interrupted"]
        assert interrupted and all("interrupted" in r.error for r in interrupted)
        # Every submission ZAP~POST holds belongs to a run in the history.
        by_reference = {r.reference: r for r in runs}
        for submission in world.sim.zappost.submissions():
            run = by_reference[submission.reference]
            assert run.submission_id == submission.id, replay
        assert sum(hits.values()) >= 20
        print(f"kill points: {dict(hits)} over {workers} workers; seed {seed}")
