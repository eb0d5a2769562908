"""Integration Status: the accounts table, connect, re-check and disconnect."""

from __future__ import annotations

import pytest
from textual import events
from textual.widgets import Input
from ui_support import (
    FIXED_NOW,
    cell_text,
    console,
    go_to_row,
    row_texts,
    screen_text,
    settle,
    stop_blinking,
)

from zaptui.store.models import Account, AuditEntry, DataConnection
from zaptui.store.secrets import SecretBox, new_key
from zaptui.ui.confirm import ConfirmScreen
from zaptui.ui.screens.connect_account import ConnectAccountScreen
from zaptui.ui.widgets.keyed_table import KeyedTable


async def paste(pilot, text: str) -> None:
    """Paste into the focused field, as an operator pastes a key."""
    pilot.app.focused.post_message(events.Paste(text))
    await pilot.pause()


def table_of(pilot) -> KeyedTable:
    return pilot.app.query_one("#accounts-table", KeyedTable)


def account_named(name: str) -> Account:
    return Account.get(Account.name == name)


async def test_table_lists_accounts_with_status_reason_counts_and_utc_dates(demo):
    async with console(demo).run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        rows = {row[0]: row for row in row_texts(table_of(pilot))}
        detail = screen_text(pilot)

    acme, closed = rows["Acme Outdoor"], rows["Closed Shop Ltd"]
    assert acme[1] == account_named("Acme Outdoor").klaviyo_id
    assert acme[2] == "connected"
    assert acme[3] == "4"
    assert acme[4] == "2026-12-01 11:00 UTC"
    assert closed[2].startswith("unauthorised: Klaviyo refused")
    assert closed[3] == "1"
    assert closed[5] == "2026-12-03 12:25 UTC"
    # The full reason of the account under the cursor is spelt out below.
    assert "The API key specified is invalid." in detail


async def test_connect_pairs_an_account_from_a_masked_key(demo):
    key = demo.world.klaviyo.account("Borough Books").private_key

    async with console(demo).run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(pilot.app.screen, ConnectAccountScreen)
        field = pilot.app.screen.query_one("#api-key", Input)
        assert field.password
        await paste(pilot, key)
        typed = screen_text(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert not isinstance(pilot.app.screen, ConnectAccountScreen)
        names = [row[0] for row in row_texts(table_of(pilot))]
        selected = table_of(pilot).selected_key()
        after = screen_text(pilot)

    books = account_named("Borough Books")
    assert books.status == "missing scope"
    assert demo.runtime.secrets.decrypt(books.api_key_encrypted) == key
    assert "Borough Books" in names and selected == str(books.id)
    assert AuditEntry.get_or_none(AuditEntry.action == "account.connect")
    assert key not in typed and key[-8:] not in typed
    assert key not in after


async def test_a_refused_key_keeps_the_form_open_with_what_was_typed(demo):
    wrong = "pk_" + "0" * 34
    accounts = Account.select().count()

    async with console(demo).run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await pilot.press("c")
        await pilot.pause()
        await paste(pilot, wrong)
        await pilot.press("enter")
        await settle(pilot)
        screen = pilot.app.screen
        error = str(screen.query_one("#connect-error").render())
        value = screen.query_one("#api-key", Input).value
        shown = screen_text(pilot)

    assert isinstance(screen, ConnectAccountScreen)
    assert error.startswith("Klaviyo refused the key")
    assert value == wrong
    assert wrong not in shown
    assert Account.select().count() == accounts


async def test_recheck_asks_klaviyo_again_and_shows_the_answer(demo):
    acme = account_named("Acme Outdoor")
    demo.world.klaviyo.account("Acme Outdoor").revoked = True

    async with console(demo).run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        table = table_of(pilot)
        await go_to_row(pilot, table, str(acme.id))
        await pilot.press("r")
        await settle(pilot)
        status = cell_text(table, str(acme.id), "status")
        checked = cell_text(table, str(acme.id), "checked_at")

    rechecked = account_named("Acme Outdoor")
    assert rechecked.status == "unauthorised"
    assert rechecked.checked_at == FIXED_NOW
    assert status.startswith("unauthorised: Klaviyo refused")
    assert checked == "2026-12-04 09:30 UTC"
    assert AuditEntry.get_or_none(AuditEntry.action == "account.recheck")


async def test_disconnect_names_connections_removed(demo):
    acme = account_named("Acme Outdoor")

    async with console(demo).run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        table = table_of(pilot)
        await go_to_row(pilot, table, str(acme.id))
        await pilot.press("d")
        await pilot.pause()
        confirm = pilot.app.screen
        assert isinstance(confirm, ConfirmScreen) and confirm.danger
        body = confirm.body_text
        await pilot.press("y")
        await settle(pilot)
        names = [row[0] for row in row_texts(table)]
        toasts = [n.message for n in pilot.app._notifications]

    assert "This removes its 4 data connections" in body
    for name in ("Welcome pack", "Spring postcards", "Win back", "VIP preview"):
        assert name in body
    assert Account.get_or_none(Account.name == "Acme Outdoor") is None
    assert DataConnection.select().where(DataConnection.account == acme.id).count() == 0
    assert names == ["Closed Shop Ltd"]
    assert "Disconnected Acme Outdoor and removed 4 data connections." in toasts


async def test_cancelling_disconnect_changes_nothing(demo):
    closed = account_named("Closed Shop Ltd")

    async with console(demo).run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await go_to_row(pilot, table_of(pilot), str(closed.id))
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("enter")  # the danger dialog's focus starts on Cancel
        await settle(pilot)

    assert Account.get_or_none(Account.id == closed.id) is not None
    assert DataConnection.select().where(DataConnection.account == closed.id).count()


async def test_an_unreadable_secret_is_a_toast_not_a_crash(demo):
    demo.runtime._secrets = SecretBox(new_key())  # not the key it was stored with
    acme = account_named("Acme Outdoor")

    async with console(demo).run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await go_to_row(pilot, table_of(pilot), str(acme.id))
        await pilot.press("r")
        await settle(pilot)
        toasts = [(n.severity, n.message) for n in pilot.app._notifications]
        running = pilot.app.is_running

    assert running
    assert any(
        severity == "error" and "cannot be decrypted with this key" in message
        for severity, message in toasts
    )


# -- snapshots -----------------------------------------------------------------


@pytest.mark.parametrize("size", [(80, 24), (120, 36)], ids=["80x24", "120x36"])
def test_snapshot_integration_status(full_demo, snap_compare, size):
    async def run_before(pilot) -> None:
        await settle(pilot)

    assert snap_compare(console(full_demo), terminal_size=size, run_before=run_before)


def test_snapshot_disconnect_confirmation(full_demo, snap_compare):
    acme = str(account_named("Acme Outdoor").id)

    async def run_before(pilot) -> None:
        await settle(pilot)
        await go_to_row(pilot, table_of(pilot), acme)
        await pilot.press("d")
        await settle(pilot)

    assert snap_compare(
        console(full_demo), terminal_size=(80, 24), run_before=run_before
    )


def test_snapshot_connect_form_with_a_refused_key(full_demo, snap_compare):
    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press("c")
        await pilot.pause()
        await pilot.press(*"pk_not_a_real_key", "enter")
        await settle(pilot)
        stop_blinking(pilot)

    assert snap_compare(
        console(full_demo), terminal_size=(80, 24), run_before=run_before
    )
