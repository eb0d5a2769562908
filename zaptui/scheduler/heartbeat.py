"""Whether a scheduler runs, here or in another process, from heartbeat rows."""

from __future__ import annotations


def scheduler_state(owner: str | None = None) -> str:
    """ "running here", "running elsewhere" or "stopped", from the database."""
    # TODO(scheduler): read the heartbeat rows once the table exists.
    return "stopped"
