"""The console: a header, the five tabs and a footer over the operator services."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Footer, LoadingIndicator, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from zaptui.services import Services
from zaptui.sync.engine import Progress
from zaptui.ui.commands import ConsoleCommands
from zaptui.ui.header import ConsoleHeader
from zaptui.ui.help import HelpScreen, KeySection, binding_lines
from zaptui.ui.messages import DataChanged
from zaptui.ui.paths import stylesheets
from zaptui.ui.tabs import Command, report_worker_failure, toast
from zaptui.ui.tabs.connections import DataConnectionsTab
from zaptui.ui.tabs.history import SyncHistoryTab
from zaptui.ui.tabs.logs import LogsTab
from zaptui.ui.tabs.settings import SettingsTab
from zaptui.ui.tabs.status import IntegrationStatusTab

log = logging.getLogger(__name__)

TABS: tuple[tuple[str, str, type[Widget], str], ...] = (
    ("status", "Integration Status", IntegrationStatusTab, "status-tab"),
    ("connections", "Data Connections", DataConnectionsTab, "connections-tab"),
    ("history", "Sync History", SyncHistoryTab, "history-tab"),
    ("settings", "Settings", SettingsTab, "settings-tab"),
    ("logs", "Logs", LogsTab, "logs-tab"),
)
"""(pane id, title, tab class, tab id), in the order of keys 1 to 5."""

EVENT_SEVERITY = {
    "sync_failed": "error",
    "alert_failing": "error",
    "alert_undelivered": "error",
    "skipped_busy": "warning",
}
ENDED = ("sync_finished", "sync_failed")
FIRST_BEAT_SECONDS = 1.5
FORM_KEYS = (
    ("tab / shift+tab", "next / previous field or button"),
    ("enter", "press the button or submit the form"),
    ("y / n", "answer a confirmation"),
    ("escape", "cancel or close"),
)
TABLE_KEYS = (
    ("↑ ↓ pgup pgdn", "move through the rows"),
    ("home / end", "first / last row"),
)


class SchedulerNotice(Message):
    """The scheduler did or noticed something (may come from any thread)."""

    def __init__(self, event: Any) -> None:
        super().__init__()
        self.event = event


class SchedulerProgress(Message):
    """A scheduled sync got further (may come from any thread)."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress


class ServicesReady(Message):
    """The services the console runs on are ready (after the demo is built)."""

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services


class ZapTuiApp(App[int]):
    """The operator console over the services: five tabs, keyboard first."""

    TITLE = "zaptui"
    CSS_PATH = stylesheets()
    # One provider: the tab in view's commands come first, then the console's.
    COMMANDS = {ConsoleCommands}
    BINDINGS = [
        *(
            Binding(str(number), f"show_tab('{pane}')", title, show=False)
            for number, (pane, title, _, _) in enumerate(TABS, start=1)
        ),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        services: Services | None = None,
        *,
        prepare: Callable[[], Services] | None = None,
        preparing: str = "Starting…",
        start_scheduler: bool = False,
        quit_on_hangup: bool = False,
    ) -> None:
        super().__init__()
        if services is None and prepare is None:
            raise ValueError("the console needs services, or a way to prepare them")
        self.services = services
        self.scheduler: Any = None
        self.tabs: dict[str, Widget] = {}
        self._prepare = prepare
        self._preparing = preparing
        self._start_scheduler = start_scheduler
        self._quit_on_hangup = quit_on_hangup

    # -- composing -------------------------------------------------------------

    def compose(self) -> ComposeResult:
        if self.services is None:
            with Vertical(id="preparing"):
                yield LoadingIndicator()
                yield Static(self._preparing, id="preparing-text")
            return
        yield ConsoleHeader(self.services, id="header")
        self.tabs = {}
        with TabbedContent(initial="status", id="tabs"):
            for number, (pane, title, tab_class, tab_id) in enumerate(TABS, 1):
                with TabPane(f"{number} {title}", id=pane):
                    self.tabs[pane] = tab_class(self.services, id=tab_id)
                    yield self.tabs[pane]
        yield Footer(compact=True)

    def on_mount(self) -> None:
        if self._quit_on_hangup:
            # A closed terminal (a dropped SSH connection) or SIGTERM quits the
            # way `q` does, so a sync stops at a safe point and the demo's
            # folder is removed, instead of the process dying mid-step.
            loop = asyncio.get_running_loop()
            for number in (signal.SIGHUP, signal.SIGTERM):
                loop.add_signal_handler(number, self.exit)
        if self.services is None:
            self._prepare_services()
        else:
            self._console_ready()

    @work(thread=True, exclusive=True, group="prepare", exit_on_error=False)
    def _prepare_services(self) -> None:
        assert self._prepare is not None
        self.post_message(ServicesReady(self._prepare()))

    async def on_services_ready(self, message: ServicesReady) -> None:
        self.services = message.services
        await self.recompose()
        self._console_ready()

    def _console_ready(self) -> None:
        self.call_after_refresh(self._focus_pane, "status")
        if self._start_scheduler:
            self.start_scheduler()
            # Its first heartbeat lands within a moment: show it without waiting.
            header = self.query_one(ConsoleHeader)
            self.set_timer(FIRST_BEAT_SECONDS, header.refresh_facts)

    # -- tabs ------------------------------------------------------------------

    @property
    def active_pane(self) -> str:
        """The id of the tab pane in view."""
        return self.screen_stack[0].query_one("#tabs", TabbedContent).active

    def action_show_tab(self, pane: str) -> None:
        """Bring a tab into view and give it the focus."""
        self.screen_stack[0].query_one("#tabs", TabbedContent).active = pane
        self.call_after_refresh(self._focus_pane, pane)

    def on_tabbed_content_tab_activated(
        self, event: TabbedContent.TabActivated
    ) -> None:
        if event.pane.id:
            self.call_after_refresh(self._focus_pane, event.pane.id)

    def _focus_pane(self, pane: str) -> None:
        tab = self.tabs.get(pane)
        if tab is None or not tab.is_mounted:
            return
        if self.focused is not None and tab in self.focused.ancestors_with_self:
            return
        for widget in tab.query("*"):
            if widget.focusable:
                widget.focus()
                return

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool:
        """Tab keys and help only on the main screen, not over a form or dialog."""
        if action in ("show_tab", "help") and len(self.screen_stack) > 1:
            return False
        return True

    def on_data_changed(self, message: DataChanged) -> None:
        self._reload_tabs()
        if message.what == "settings":
            self.screen_stack[0].query_one(ConsoleHeader).refresh_facts()
        # The Settings tab tells the scheduler itself (and shows if it could
        # not); the other changes are told here.
        if self.scheduler is not None and message.what not in ("runs", "settings"):
            self.scheduler.refresh()

    # -- help and the command palette ------------------------------------------

    def action_help(self) -> None:
        """Show the keys of the tab in view and the console's own."""
        self.push_screen(HelpScreen(self.key_sections()))

    def key_sections(self) -> list[KeySection]:
        """The help screen's sections: this tab, everywhere, tables, forms."""
        pane = self.active_pane
        title = next(title for pane_id, title, _, _ in TABS if pane_id == pane)
        tab = self.tabs[pane]
        everywhere = [
            ("1 … 5", "switch tab: " + ", ".join(t for _, t, _, _ in TABS)),
            ("?", "this help"),
            ("ctrl+p", "command palette: every action, searchable"),
            ("q", "quit"),
        ]
        return [
            (title, binding_lines(tab.BINDINGS, self.get_key_display)),
            ("Everywhere", everywhere),
            ("Tables", TABLE_KEYS),
            ("Forms and confirmations", FORM_KEYS),
        ]

    def palette_commands(self) -> list[Command]:
        """The tab in view's commands, then going to each tab and help."""
        commands: list[Command] = []
        tab = self.tabs.get(self.active_pane) if self.tabs else None
        offered = getattr(tab, "commands", None)
        if callable(offered):
            commands.extend(offered())
        for number, (pane, title, _, _) in enumerate(TABS, 1):
            commands.append((f"Go to {title}", f"Show tab {number}", self._go_to(pane)))
        commands.append(("Show keys", "Every key of the tab in view", self.action_help))
        commands.append(
            ("Change theme", "Pick the console's colours", self.action_change_theme)
        )
        commands.append(("Quit", "Leave the console", self.action_quit))
        return commands

    def _go_to(self, pane: str) -> Callable[[], None]:
        return lambda: self.action_show_tab(pane)

    # -- the scheduler -----------------------------------------------------------

    def start_scheduler(self) -> None:
        """Start the sync scheduler in this process, if the package is installed."""
        assert self.services is not None
        try:
            from zaptui.scheduler import SyncScheduler
        except ImportError:
            log.warning("the scheduler is not available: syncs run only on demand")
            return
        scheduler = SyncScheduler(
            self.services,
            mode="console",
            on_event=self.scheduler_event,
            on_progress=self.scheduler_progress,
        )
        try:
            scheduler.start()
        except Exception as error:  # the console works without it
            log.exception("the scheduler did not start")
            toast(
                self,
                f"The scheduler did not start: {error}",
                severity="error",
            )
            return
        self.scheduler = scheduler

    def scheduler_event(self, event: Any) -> None:
        """Receive a SchedulerEvent from any thread."""
        self.post_message(SchedulerNotice(event))

    def scheduler_progress(self, progress: Progress) -> None:
        """Receive a scheduled sync's Progress from any thread."""
        self.post_message(SchedulerProgress(progress))

    def on_scheduler_progress(self, message: SchedulerProgress) -> None:
        connections = self.tabs.get("connections")
        if isinstance(connections, DataConnectionsTab):
            connections.show_progress(message.progress)

    def on_scheduler_notice(self, message: SchedulerNotice) -> None:
        event = message.event
        toast(
            self,
            str(event.message),
            title="Scheduler",
            severity=EVENT_SEVERITY.get(event.kind, "information"),
        )
        connections = self.tabs.get("connections")
        if isinstance(connections, DataConnectionsTab) and event.connection_id:
            if event.kind == "sync_started":
                connections.show_started(event.connection_id)
            elif event.kind in ENDED:
                connections.sync_ended_elsewhere(event.connection_id)
        self._reload_tabs()

    def _reload_tabs(self) -> None:
        for tab in self.tabs.values():
            reload = getattr(tab, "reload", None)
            if callable(reload):
                reload()

    async def on_unmount(self) -> None:
        scheduler, self.scheduler = self.scheduler, None
        if scheduler is None:
            return
        scheduler.shutdown()
        drain = getattr(scheduler, "drain", None)
        if drain is not None:  # let a sync in flight reach its safe point
            await drain()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "prepare" and event.state is WorkerState.ERROR:
            log.error("the console could not start", exc_info=event.worker.error)
            self.exit(1, message=f"zaptui could not start: {event.worker.error}")
            return
        report_worker_failure(self, event)
