"""The SyncScheduler: an APScheduler AsyncIOScheduler that starts due syncs."""

from __future__ import annotations

import logging
from collections.abc import Callable

from zaptui.scheduler.events import SchedulerEvent
from zaptui.services import Services

log = logging.getLogger(__name__)


class SyncScheduler:
    """Polls the active data connections and syncs each when it is due."""

    def __init__(
        self,
        services: Services,
        *,
        mode: str = "console",
        on_event: Callable[[SchedulerEvent], None] | None = None,
    ) -> None:
        self.services = services
        self.mode = mode
        self.on_event = on_event

    def start(self) -> None:
        """Start polling; call from a running asyncio loop (AsyncIOScheduler)."""

    def refresh(self) -> None:
        """Re-read the frequency and the connections; takes effect at once."""

    def shutdown(self) -> None:
        """Stop; a sync in flight stops at a safe point."""
