"""The sync scheduler: polls due data connections, in the console or headless.

No Textual here: the console and the headless mode both drive this package.
"""

from __future__ import annotations

from zaptui.scheduler.events import SchedulerEvent
from zaptui.scheduler.heartbeat import scheduler_state
from zaptui.scheduler.scheduler import SyncScheduler

__all__ = ["SchedulerEvent", "SyncScheduler", "scheduler_state"]
