"""A sync in a process of its own, for test_kill.py to kill at random points.

Usage: kill_worker.py DB_URL SIM_URL ZAP_KEY CONNECTION_ID (the ZAP~POST
password comes in ZAPTUI_ZAP_API_PASSWORD). It recovers what an earlier
worker left, syncs the connection once and prints a line at every step, so the
test can aim its SIGKILL: "ready", "recovered N", "progress PHASE PAGES",
"done STATUS".
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    """Recover, then sync one connection, reporting each step on stdout."""
    from zaptui.klaviyo.client import RetryPolicy as KlaviyoRetry
    from zaptui.klaviyo.limiter import RateLimiter, Tier
    from zaptui.runtime import Runtime
    from zaptui.services import Services
    from zaptui.sim.server import SimWorld
    from zaptui.store.db import open_database
    from zaptui.sync.engine import Progress, RecoveryFailed, SyncBusy
    from zaptui.zappost.client import RetryPolicy as ZapRetry

    db_url, sim_url, zap_key, connection_id = argv
    open_database(db_url)
    unlimited = {n: Tier(n, 100_000, 1_000_000) for n in ("XS", "S", "M", "L", "XL")}
    runtime = Runtime(
        klaviyo_url=SimWorld.klaviyo_url(sim_url),
        zap_url=SimWorld.zap_url(sim_url),
        zap_api_key=zap_key,
        zap_api_password=os.environ["ZAPTUI_ZAP_API_PASSWORD"],
        klaviyo_retry=KlaviyoRetry(attempts=3, base_delay=0.01),
        zap_retry=ZapRetry(attempts=3, base_delay=0.01),
        klaviyo_limiter=RateLimiter(unlimited),
        klaviyo_timeout=10.0,
        zap_timeout=10.0,
        actor="kill-test",
    )
    services = Services(runtime)

    def say(text: str) -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def report(progress: Progress) -> None:
        say(f"progress {progress.phase} {progress.pages}")

    say("ready")
    say(f"recovered {len(services.recover())}")
    try:
        run = services.sync_now(int(connection_id), progress=report)
    except RecoveryFailed as error:
        say(f"refused {error}")
        return 4
    except SyncBusy as error:
        say(f"busy {error}")
        return 3
    say(f"done {run.status}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
