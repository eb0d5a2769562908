"""Map data: the mapping editor of a data connection, driven from the keyboard
against the demo (choose a profile field, a custom property or none, save,
be refused, cancel)."""

from __future__ import annotations

from textual.widgets import Input, OptionList
from ui_support import cell_text, console, go_to_row, settle, static_text, stop_blinking

from zaptui.demo import Demo
from zaptui.sim.zappost import field_definition
from zaptui.store.models import AuditEntry, DataConnection, FieldMapping
from zaptui.ui.confirm import ConfirmScreen
from zaptui.ui.screens.mapping import MappingScreen
from zaptui.ui.screens.profile_field import ProfileFieldScreen
from zaptui.ui.widgets.keyed_table import KeyedTable

SPRING_CAMPAIGN = "Spring Sale A5 Postcard"


def spring() -> DataConnection:
    return DataConnection.get(DataConnection.name == "Spring postcards")


def spring_fields(demo: Demo) -> list[dict]:
    """The Spring campaign's own fields in the simulated ZAP~POST, to change."""
    return demo.world.zappost.campaign_named(SPRING_CAMPAIGN).fields


def make_required(demo: Demo, name: str) -> None:
    for field in spring_fields(demo):
        if field["name"] == name:
            field["required"] = True


def map_audits() -> list[AuditEntry]:
    return list(AuditEntry.select().where(AuditEntry.action == "connection.map"))


def mapping_table(pilot) -> KeyedTable:
    return pilot.app.screen.query_one("#mapping-table", KeyedTable)


def source_of(pilot, name: str) -> str:
    return cell_text(mapping_table(pilot), name, "source")


def dialog_text(pilot, selector: str) -> str:
    """The text of a Static on the screen in view (a dialog, not the tabs)."""
    return static_text(pilot.app.screen, selector)


def toasts(pilot) -> list[str]:
    return [f"{n.title}: {n.message}" for n in pilot.app._notifications]


async def open_mapping(pilot, connection: DataConnection) -> MappingScreen:
    await settle(pilot)
    await pilot.press("2")
    await settle(pilot)
    table = pilot.app.query_one("#connections-table", KeyedTable)
    await go_to_row(pilot, table, str(connection.id))
    await pilot.press("m")
    await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, MappingScreen)
    return screen


async def open_chooser(pilot, field: str) -> ProfileFieldScreen:
    await go_to_row(pilot, mapping_table(pilot), field)
    await pilot.press("enter")
    await settle(pilot)
    chooser = pilot.app.screen
    assert isinstance(chooser, ProfileFieldScreen)
    return chooser


async def pick(pilot, field: str, path: str) -> None:
    """Choose a standard profile field for a campaign field from the list."""
    chooser = await open_chooser(pilot, field)
    options = chooser.query_one(OptionList)
    target = chooser.choices.index(path)
    while options.highlighted != target:
        await pilot.press("down" if options.highlighted < target else "up")
    await pilot.press("enter")
    await settle(pilot)


async def type_custom(pilot, field: str, text: str) -> ProfileFieldScreen:
    """Type a path into the chooser's custom property field and press enter."""
    chooser = await open_chooser(pilot, field)
    await pilot.press("tab")
    custom = chooser.query_one("#custom-path", Input)
    assert custom.has_focus
    custom.value = ""
    await pilot.press(*text)
    await pilot.press("enter")
    await settle(pilot)
    return chooser


async def test_choosing_a_profile_field_and_saving_stores_it(demo):
    connection = spring()
    audits_before = len(map_audits())

    async with console(demo).run_test(size=(120, 36)) as pilot:
        screen = await open_mapping(pilot, connection)
        assert source_of(pilot, "salutation") == "not mapped"
        await pick(pilot, "salutation", "title")
        assert pilot.app.screen is screen
        assert source_of(pilot, "salutation") == "title  was not mapped"
        assert "Not saved yet: 1 change." in dialog_text(pilot, "#mapping-detail")
        assert demo.services.mapping(connection.id).get("salutation") is None
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert not isinstance(pilot.app.screen, MappingScreen)
        shown = toasts(pilot)

    mapping = demo.services.mapping(connection.id)
    assert mapping["salutation"] == "title"
    assert mapping["tier"] == "properties.tier"  # the rest kept as it was
    assert "Mapping of Spring postcards saved: 1 campaign field changed." in shown
    audits = map_audits()
    assert len(audits) == audits_before + 1
    assert audits[-1].after["salutation"] == "title"
    assert "salutation" not in audits[-1].before


async def test_a_required_field_left_unmapped_is_refused_and_the_edits_kept(demo):
    make_required(demo, "tier")
    connection = spring()
    audits_before = len(map_audits())

    async with console(demo).run_test(size=(120, 36)) as pilot:
        screen = await open_mapping(pilot, connection)
        assert cell_text(mapping_table(pilot), "tier", "required") == "yes"
        await pick(pilot, "salutation", "first_name")
        await go_to_row(pilot, mapping_table(pilot), "tier")
        await pilot.press("delete")
        await pilot.pause()
        assert source_of(pilot, "tier") == "not mapped: required  was properties.tier"
        detail = dialog_text(pilot, "#mapping-detail")
        assert "Required but not mapped: tier." in detail
        assert "Not saved yet: 2 changes." in detail

        await pilot.press("ctrl+s")
        await settle(pilot)
        assert pilot.app.screen is screen
        error = dialog_text(pilot, "#mapping-error")
        edits = dict(screen.edits)
        kept = source_of(pilot, "salutation")

    assert "Not saved: map every required campaign field first: tier." in error
    assert edits["tier"] == "" and edits["salutation"] == "first_name"
    assert kept == "first_name  was not mapped"
    assert demo.services.mapping(connection.id)["tier"] == "properties.tier"
    assert len(map_audits()) == audits_before


async def test_a_refused_mapping_can_be_corrected_and_saved(demo):
    make_required(demo, "tier")
    connection = spring()

    async with console(demo).run_test(size=(120, 36)) as pilot:
        await open_mapping(pilot, connection)
        await go_to_row(pilot, mapping_table(pilot), "tier")
        await pilot.press("delete")
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "required" in dialog_text(pilot, "#mapping-error")
        await type_custom(pilot, "tier", "properties.loyalty")
        assert dialog_text(pilot, "#mapping-error").strip() == ""
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert not isinstance(pilot.app.screen, MappingScreen)

    assert demo.services.mapping(connection.id)["tier"] == "properties.loyalty"


async def test_cancel_with_changes_asks_and_leaves_the_mapping_unchanged(demo):
    connection = spring()
    before = demo.services.mapping(connection.id)
    audits_before = len(map_audits())

    async with console(demo).run_test(size=(120, 36)) as pilot:
        screen = await open_mapping(pilot, connection)
        await pick(pilot, "firstname", "last_name")
        await pilot.press("escape")
        await settle(pilot)
        confirm = pilot.app.screen
        assert isinstance(confirm, ConfirmScreen) and confirm.danger
        assert "firstname" in confirm.body_text
        await pilot.press("n")  # go back: the change is still there
        await settle(pilot)
        assert pilot.app.screen is screen
        assert screen.edits["firstname"] == "last_name"

        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert not isinstance(pilot.app.screen, (MappingScreen, ConfirmScreen))

    assert demo.services.mapping(connection.id) == before
    assert len(map_audits()) == audits_before


async def test_cancel_without_changes_closes_at_once(demo):
    async with console(demo).run_test(size=(120, 36)) as pilot:
        await open_mapping(pilot, spring())
        await pilot.click("#cancel")
        await settle(pilot)
        assert not isinstance(pilot.app.screen, (MappingScreen, ConfirmScreen))


async def test_an_automatic_field_cannot_be_changed_and_says_why(demo):
    connection = spring()

    async with console(demo).run_test(size=(120, 36)) as pilot:
        screen = await open_mapping(pilot, connection)
        edits = dict(screen.edits)
        await go_to_row(pilot, mapping_table(pilot), "postcode")
        detail = dialog_text(pilot, "#mapping-detail")
        await pilot.press("enter")
        await settle(pilot)
        assert pilot.app.screen is screen  # no chooser
        await pilot.press("delete")
        await go_to_row(pilot, mapping_table(pilot), "customerid")
        await pilot.press("enter")
        await settle(pilot)
        assert pilot.app.screen is screen
        shown = toasts(pilot)
        cells = source_of(pilot, "postcode"), source_of(pilot, "customerid")

    assert "cleansed address on every record: it cannot be mapped" in detail
    assert any("Postcode (postcode) is filled from the cleansed" in t for t in shown)
    assert any("Customer ID (customerid) is filled from" in t for t in shown)
    assert screen.edits == edits and "postcode" not in edits
    assert cells == ("the cleansed address", "the Klaviyo profile id")


async def test_a_custom_property_path_is_accepted(demo):
    connection = spring()

    async with console(demo).run_test(size=(120, 36)) as pilot:
        await open_mapping(pilot, connection)
        chooser = await open_chooser(pilot, "offer_code")
        await pilot.press("tab")
        custom = chooser.query_one("#custom-path", Input)
        assert custom.value == "properties."  # the prefix is written already
        await pilot.press(*"code")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(pilot.app.screen, MappingScreen)
        assert source_of(pilot, "offer_code") == "properties.code  was not mapped"
        await pilot.click("#save")
        await settle(pilot)

    assert demo.services.mapping(connection.id)["offer_code"] == "properties.code"


async def test_a_path_that_is_not_a_profile_field_is_refused_with_a_message(demo):
    connection = spring()

    async with console(demo).run_test(size=(120, 36)) as pilot:
        screen = await open_mapping(pilot, connection)
        chooser = await type_custom(pilot, "offer_code", "offer")
        assert pilot.app.screen is chooser
        error = dialog_text(pilot, "#profile-field-error")
        custom = chooser.query_one("#custom-path", Input)
        custom.value = "properties."
        await pilot.press("enter")
        await settle(pilot)
        empty_name = dialog_text(pilot, "#profile-field-error")
        await pilot.press("escape")
        await settle(pilot)
        assert pilot.app.screen is screen
        assert screen.edits["offer_code"] == ""
        assert source_of(pilot, "offer_code") == "not mapped"

    assert "offer is not a profile field" in error
    assert "properties.<name>" in error
    assert "Write the custom property's name after properties." in empty_name


async def test_a_stored_path_that_is_no_profile_field_is_shown_and_refused(demo):
    connection = spring()
    FieldMapping.update(profile_field="loyalty.tier").where(
        (FieldMapping.connection == connection.id)
        & (FieldMapping.campaign_field == "tier")
    ).execute()

    async with console(demo).run_test(size=(120, 36)) as pilot:
        screen = await open_mapping(pilot, connection)
        shown = source_of(pilot, "tier")
        await pick(pilot, "salutation", "first_name")
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert pilot.app.screen is screen
        error = dialog_text(pilot, "#mapping-error")

    assert shown == "loyalty.tier (not a profile field)"
    assert "Loyalty tier (tier) maps to unknown profile path" in error
    assert "loyalty.tier" in error


async def test_field_names_labels_and_paths_with_markup_are_shown_literally(demo):
    spring_fields(demo).append(field_definition("[bold]promo[/]", "[red]Promo[/]"))
    connection = spring()
    hostile = "[bold]promo[/]"

    async with console(demo).run_test(size=(120, 36)) as pilot:
        await open_mapping(pilot, connection)
        name = cell_text(mapping_table(pilot), hostile, "field")
        chooser = await open_chooser(pilot, hostile)
        title = dialog_text(pilot, "#profile-field-dialog .dialog-title")
        await pilot.press("escape")
        await settle(pilot)
        await type_custom(pilot, hostile, "properties.[i]x[/i]")
        source = source_of(pilot, hostile)
        await pilot.press("ctrl+s")
        await settle(pilot)

    assert isinstance(chooser, ProfileFieldScreen)
    assert name == "[bold]promo[/]  [red]Promo[/]"
    assert title.strip() == "Fill [red]Promo[/] ([bold]promo[/]) from"
    assert source == "properties.[i]x[/i]  was not mapped"
    assert demo.services.mapping(connection.id)[hostile] == "properties.[i]x[/i]"


# -- snapshots -----------------------------------------------------------------


def test_snapshot_profile_field_chooser(full_demo, snap_compare):
    """The editor with one change made and the chooser open on another field."""

    async def run_before(pilot) -> None:
        await open_mapping(pilot, spring())
        await pick(pilot, "salutation", "title")
        await open_chooser(pilot, "offer_code")
        stop_blinking(pilot)
        await pilot.pause()

    assert snap_compare(
        console(full_demo), terminal_size=(80, 24), run_before=run_before
    )
