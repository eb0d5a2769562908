"""`zaptui simulate`: a real process serving both simulators on one loopback port."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from zaptui.klaviyo.client import REVISION, KlaviyoClient
from zaptui.klaviyo.errors import MissingScope, Unauthorized
from zaptui.klaviyo.limiter import TIERS, RateLimiter, Tier
from zaptui.zappost import ZapPostClient

WIDE = {name: Tier(name, 10**6, 10**6) for name in TIERS}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The banner ends with the last account's last source.
LAST_LINE = "Old customers"


@dataclass
class Simulator:
    """A `zaptui simulate` process started by this test, and what it printed."""

    base: str
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def read_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def banner(self) -> dict[str, dict[str, str]]:
        """The accounts printed at start-up, once the whole banner is out."""
        deadline = time.monotonic() + 30
        while not any(LAST_LINE in line for line in self.lines):
            if time.monotonic() > deadline or self.process.poll() is not None:
                pytest.fail(f"no complete banner from zaptui simulate:\n{self.output}")
            time.sleep(0.05)
        return parse(self.output)

    def stop(self) -> str:
        """Stop the process and return everything it printed."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.reader is not None:
            self.reader.join(10)
        return self.output


def spawn(*arguments: str) -> Simulator:
    """Start `zaptui simulate` on a free port without waiting for it."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zaptui",
            "simulate",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *arguments,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    simulator = Simulator(f"http://127.0.0.1:{port}", process)
    simulator.reader = threading.Thread(target=simulator.read_output, daemon=True)
    simulator.reader.start()
    return simulator


def wait_until_serving(simulator: Simulator) -> Simulator:
    deadline = time.monotonic() + 60
    while True:
        if simulator.process.poll() is not None:
            pytest.fail(f"zaptui simulate exited early:\n{simulator.stop()}")
        try:
            httpx.get(f"{simulator.base}/_sim/klaviyo/accounts", timeout=1)
            return simulator
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                simulator.stop()
                pytest.fail("zaptui simulate did not answer within 60 s")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def simulator() -> Iterator[Simulator]:
    running = wait_until_serving(spawn("--seed", "4", "--profiles", "60"))
    yield running
    running.stop()


def parse(text: str) -> dict[str, dict[str, str]]:
    accounts: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        if match := re.match(r"^Klaviyo account (.+) \((\w+)\)$", line):
            current = accounts.setdefault(match.group(1), {"id": match.group(2)})
        elif line == "ZAP~POST":
            current = accounts.setdefault("ZAP~POST", {})
        elif current is not None and (
            match := re.match(r"^  ([\w ]+?):\s+(\S+)", line)
        ):
            current[match.group(1)] = match.group(2)
            if state := re.search(r"\[(.+)\]$", line):
                current["state"] = state.group(1)
    return accounts


@pytest.fixture(scope="module")
def banner(simulator: Simulator) -> dict[str, dict[str, str]]:
    return simulator.banner()


def test_it_prints_every_accounts_base_url_and_credentials(simulator, banner):
    assert set(banner) == {
        "ZAP~POST",
        "Acme Outdoor",
        "Borough Books",
        "Closed Shop Ltd",
    }
    for name in ("Acme Outdoor", "Borough Books", "Closed Shop Ltd"):
        assert banner[name]["base URL"] == f"{simulator.base}/klaviyo"
        assert banner[name]["private key"].startswith("pk_")
    assert banner["Closed Shop Ltd"]["state"] == "revoked"
    assert banner["ZAP~POST"]["base URL"] == f"{simulator.base}/zap"
    assert banner["ZAP~POST"]["API key"]
    assert banner["ZAP~POST"]["API password"]
    assert "Spring Sale A5 Postcard" in simulator.output
    assert "All UK customers (60 members)" in simulator.output
    assert "(Klaviyo rate limits on)" in simulator.output


async def test_the_printed_credentials_work_against_the_running_process(
    simulator, banner
):
    acme = banner["Acme Outdoor"]
    async with KlaviyoClient(
        acme["private key"], base_url=acme["base URL"], limiter=RateLimiter(WIDE)
    ) as client:
        account = await client.get_account()
        segments = await client.get_segments()
        everyone = next(
            s for s in segments if s["attributes"]["name"] == "All UK customers"
        )
        members = [
            profile
            async for page in client.iter_member_pages("segment", everyone["id"])
            for profile in page
        ]
    zap = banner["ZAP~POST"]
    async with ZapPostClient(
        zap["API key"], zap["API password"], base_url=zap["base URL"]
    ) as client:
        campaigns = await client.get_campaigns()

    assert account["id"] == acme["id"]
    assert len(members) == 60
    assert {c["name"] for c in campaigns} >= {"Welcome Letter", "Win-back Postcard"}


async def test_the_printed_scopes_and_revocation_hold(banner):
    books, closed = banner["Borough Books"], banner["Closed Shop Ltd"]
    async with KlaviyoClient(
        books["private key"], base_url=books["base URL"], limiter=RateLimiter(WIDE)
    ) as client:
        with pytest.raises(MissingScope):
            await client.get_segments()
    async with KlaviyoClient(
        closed["private key"], base_url=closed["base URL"], limiter=RateLimiter(WIDE)
    ) as client:
        with pytest.raises(Unauthorized):
            await client.get_lists()


def test_membership_changes_through_the_control_endpoint(simulator, banner):
    control = f"{simulator.base}/_sim/klaviyo"

    joined = httpx.post(
        f"{control}/join",
        json={"account": "Acme Outdoor", "source": "Newsletter", "count": 2},
    ).json()["joined"]
    accounts = httpx.get(f"{control}/accounts").json()["accounts"]

    acme = next(a for a in accounts if a["name"] == "Acme Outdoor")
    everyone = next(s for s in acme["segments"] if s["name"] == "All UK customers")
    assert len(joined) == 2
    assert everyone["members"] == 62


def test_rate_limits_are_on_unless_switched_off():
    limited = spawn("--seed", "4", "--profiles", "5")
    free = spawn("--seed", "4", "--profiles", "5", "--no-rate-limits")
    try:
        wait_until_serving(limited)
        wait_until_serving(free)
        results = {}
        for name, running in (("limited", limited), ("free", free)):
            key = running.banner()["Acme Outdoor"]["private key"]
            headers = {
                "Authorization": f"Klaviyo-API-Key {key}",
                "revision": REVISION,
            }
            results[name] = [
                httpx.get(
                    f"{running.base}/klaviyo/api/accounts/", headers=headers
                ).status_code
                for _ in range(3)
            ]
        assert 429 in results["limited"]
        assert results["free"] == [200, 200, 200]
        assert "(Klaviyo rate limits off)" in free.output
    finally:
        limited.stop()
        free.stop()


def test_bad_arguments_are_refused_before_serving():
    answer = subprocess.run(
        [sys.executable, "-m", "zaptui", "simulate", "--profiles", "-3"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert answer.returncode != 0
    assert "--profiles must be ≥ 0" in answer.stdout + answer.stderr
