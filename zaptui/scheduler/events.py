"""What the scheduler tells the console and the log about its work."""

from __future__ import annotations

from dataclasses import dataclass

EVENT_KINDS = (
    "sync_started",
    "sync_finished",
    "sync_failed",
    "skipped_busy",
    "alert_failing",
    "alert_recovered",
    "alert_undelivered",
)


@dataclass(frozen=True)
class SchedulerEvent:
    """One thing the scheduler did or noticed, in a sentence an operator can read."""

    kind: str
    connection_id: int | None
    message: str
    run_id: int | None = None
