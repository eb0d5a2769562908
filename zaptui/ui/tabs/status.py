"""Integration Status: the paired Klaviyo accounts and whether their keys work."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Static
from textual.worker import Worker

from zaptui.clock import format_utc
from zaptui.services import ServiceError, Services
from zaptui.store.models import Account
from zaptui.ui.confirm import ConfirmScreen
from zaptui.ui.messages import DataChanged
from zaptui.ui.screens.connect_account import ConnectAccountScreen
from zaptui.ui.tabs import (
    Command,
    Tone,
    plural,
    report_worker_failure,
    theme_tone,
    toast,
)
from zaptui.ui.text import literal
from zaptui.ui.widgets.keyed_table import KeyedTable

COLUMNS = (
    ("name", "Account"),
    ("klaviyo_id", "Account ID"),
    ("status", "Status"),
    ("connections", "Connections"),
    ("connected_at", "Connected since"),
    ("checked_at", "Last checked"),
)
STATUS_TONES = {
    "connected": "success",
    "missing scope": "warning",
    "unauthorised": "error",
    "unreachable": "warning",
}
REASON_WIDTH = 18
RELOAD_SECONDS = 15.0
RECHECK_HELP = "ask Klaviyo whether the selected account's key works"
DISCONNECT_HELP = "the selected account, removing its data connections"


@dataclass(frozen=True)
class AccountRow:
    """One paired Klaviyo account as the table shows it."""

    id: int
    name: str
    klaviyo_id: str
    status: str
    reason: str
    connection_names: tuple[str, ...]
    connected_at: datetime | None
    checked_at: datetime | None

    def cells(self, tone: Tone) -> tuple[Text, ...]:
        """The table cells, every outside value shown literally."""
        status = literal(self.status, style=tone(STATUS_TONES.get(self.status, "")))
        if self.reason:
            reason = literal(self.reason)
            reason.truncate(REASON_WIDTH, overflow="ellipsis")
            status = Text.assemble(status, ": ", reason)
        return (
            literal(self.name),
            literal(self.klaviyo_id),
            status,
            Text(str(len(self.connection_names)), justify="right"),
            Text(format_utc(self.connected_at)),
            Text(format_utc(self.checked_at)),
        )


def load_account_rows(services: Services) -> list[AccountRow]:
    """Every paired account with the names of its data connections (blocking)."""
    names: dict[int, list[str]] = {}
    for connection in services.connections():
        names.setdefault(connection.account_id, []).append(connection.name)
    return [
        AccountRow(
            id=account.id,
            name=account.name,
            klaviyo_id=account.klaviyo_id,
            status=account.status,
            reason=account.status_reason,
            connection_names=tuple(names.get(account.id, ())),
            connected_at=account.connected_at,
            checked_at=account.checked_at,
        )
        for account in services.accounts()
    ]


class IntegrationStatusTab(Widget):
    """The paired Klaviyo accounts: connect, re-check and disconnect them."""

    BINDINGS = [
        Binding("c", "connect", "Connect", tooltip="a Klaviyo account by its key"),
        Binding("r", "recheck", "Re-check", tooltip=RECHECK_HELP),
        Binding("d", "disconnect", "Disconnect", tooltip=DISCONNECT_HELP),
    ]

    class Loaded(Message):
        """The accounts were read from the database."""

        def __init__(self, rows: list[AccountRow]) -> None:
            super().__init__()
            self.rows = rows

    def __init__(self, services: Services, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.services = services
        self.rows: dict[str, AccountRow] = {}
        self._select_after_load: str | None = None

    def compose(self) -> ComposeResult:
        yield KeyedTable(COLUMNS, id="accounts-table")
        yield Static(id="account-detail", classes="detail")

    def on_mount(self) -> None:
        self.reload()
        # A re-check or a failing sync elsewhere changes an account's status.
        self.set_interval(RELOAD_SECONDS, self.reload)

    def reload(self) -> None:
        """Read the accounts again."""
        self._load()

    def commands(self) -> list[Command]:
        """Command-palette entries for this tab."""
        return [
            ("Connect a Klaviyo account", "Pair an account by its private key",
             self.action_connect),
            ("Re-check account", "Ask Klaviyo again whether the selected "
             "account's key works", self.action_recheck),
            ("Disconnect account", "Unpair the selected account and remove its "
             "data connections", self.action_disconnect),
        ]  # fmt: skip

    @property
    def table(self) -> KeyedTable:
        """The accounts table."""
        return self.query_one("#accounts-table", KeyedTable)

    def selected(self) -> AccountRow | None:
        """The account under the cursor."""
        key = self.table.selected_key()
        return self.rows.get(key) if key is not None else None

    # -- loading -------------------------------------------------------------

    @work(thread=True, exclusive=True, group="status-load", exit_on_error=False)
    def _load(self) -> None:
        self.post_message(self.Loaded(load_account_rows(self.services)))

    def on_integration_status_tab_loaded(self, message: Loaded) -> None:
        self.rows = {str(row.id): row for row in message.rows}
        tone = theme_tone(self)
        self.table.show_rows([(str(row.id), row.cells(tone)) for row in message.rows])
        if self._select_after_load in self.rows:
            self.table.select_key(self._select_after_load)
            self._select_after_load = None
        self._show_detail()

    def on_data_table_row_highlighted(self) -> None:
        self._show_detail()

    def _show_detail(self) -> None:
        detail = self.query_one("#account-detail", Static)
        row = self.selected()
        if row is None:
            detail.update(
                "No Klaviyo account is paired yet: press c to connect one "
                "with its private API key."
            )
            return
        tone = theme_tone(self)
        text = Text.assemble(
            literal(row.name, style="bold"),
            " is ",
            literal(row.status, style=tone(STATUS_TONES.get(row.status, ""))),
        )
        if row.reason:
            text.append(": ")
            text.append(literal(row.reason))
        text.append(
            f"\nConnected since {format_utc(row.connected_at)}, last checked "
            f"{format_utc(row.checked_at)}"
        )
        if row.connection_names:
            count = plural(len(row.connection_names), "data connection")
            text.append(f"\n{count}: ")
            text.append(literal(", ".join(row.connection_names)))
        else:
            text.append("\nNo data connections.")
        detail.update(text)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        report_worker_failure(self, event)

    # -- actions -------------------------------------------------------------

    def action_connect(self) -> None:
        """Open the form that pairs an account by its private key."""
        self.app.push_screen(ConnectAccountScreen(self.services), self._connected)

    def _connected(self, account: Account | None) -> None:
        if account is None:
            return
        toast(
            self,
            f"Paired Klaviyo account {account.name} ({account.status}).",
            title="Account connected",
            severity="information" if account.status == "connected" else "warning",
        )
        self._select_after_load = str(account.id)
        self.post_message(DataChanged("accounts"))

    def action_recheck(self) -> None:
        """Ask Klaviyo again whether the selected account's key works."""
        row = self._require_row("re-check")
        if row is not None:
            toast(self, f"Checking {row.name} with Klaviyo…", timeout=3)
            self._recheck(row.id)

    @work(thread=True, exclusive=True, group="status-action", exit_on_error=False)
    def _recheck(self, account_id: int) -> None:
        try:
            account = self.services.recheck_account(account_id)
        except ServiceError as error:
            toast(self, str(error), severity="error")
            return
        message = f"{account.name}: {account.status}"
        if account.status_reason:
            message += f" ({account.status_reason})"
        toast(
            self,
            message,
            title="Re-checked",
            severity="information" if account.status == "connected" else "error",
        )
        self.post_message(DataChanged("accounts"))

    def action_disconnect(self) -> None:
        """Unpair the selected account, after saying what that removes."""
        row = self._require_row("disconnect")
        if row is None:
            return
        count = len(row.connection_names)
        body = (
            f"Klaviyo account {row.name} ({row.klaviyo_id}) will be unpaired and "
            "its private key forgotten.\n\n"
        )
        if count:
            body += (
                f"This removes its {plural(count, 'data connection')}: "
                + ", ".join(row.connection_names)
                + ". They will not be synced again. Their sync history stays."
            )
        else:
            body += "It has no data connections."

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._disconnect(row)

        self.app.push_screen(
            ConfirmScreen(f"Disconnect {row.name}?", body, "Disconnect", danger=True),
            confirmed,
        )

    @work(thread=True, exclusive=True, group="status-action", exit_on_error=False)
    def _disconnect(self, row: AccountRow) -> None:
        try:
            removed = self.services.disconnect_account(row.id)
        except ServiceError as error:
            toast(self, str(error), severity="error")
            return
        toast(
            self,
            f"Disconnected {row.name} and removed "
            f"{plural(removed, 'data connection')}.",
            title="Account disconnected",
        )
        self.post_message(DataChanged("accounts"))

    def _require_row(self, verb: str) -> AccountRow | None:
        row = self.selected()
        if row is None:
            toast(
                self,
                f"There is no account to {verb}: press c to connect one.",
                severity="warning",
            )
        return row
