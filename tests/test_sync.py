"""Sync runs against the Klaviyo and ZAP~POST simulators over loopback HTTP."""

from __future__ import annotations

import copy
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import httpx
import pytest
from sync_world import (
    REPAIRABLE,
    UNMAILABLE,
    World,
    build_world,
    outcomes,
)

from zaptui import settings
from zaptui.clock import utcnow
from zaptui.domain.address import Address, VerificationResult
from zaptui.sim import seed
from zaptui.sim.zappost import COMMITTED_SERVICE, field_definition
from zaptui.store.models import (
    ApiLogEntry,
    DataConnection,
    ProfileOutcome,
    SubmittedProfile,
    SyncRun,
)
from zaptui.sync.engine import (
    FULL_READ_EVERY,
    Progress,
    SyncBusy,
    SyncEngine,
    SyncRefused,
)


@pytest.fixture
def world(db) -> Iterator[World]:
    yield from build_world()


def sync(world: World, connection_id: int, **options) -> SyncRun:
    return world.services.sync_now(connection_id, **options)


def test_first_sync_mails_every_mailable_member_once(world: World) -> None:
    connection = world.connect()

    run = sync(world, connection.id)

    assert sorted(world.mailed()) == sorted(world.members.mailable)
    assert world.sim.zappost.duplicates() == []
    assert (run.status, run.trigger) == ("partial", "manual")
    assert (run.fetched, run.imported, run.failed, run.skipped_duplicate) == (
        244,
        240,
        4,
        0,
    )
    assert run.started_at <= run.finished_at
    (submission,) = world.sim.zappost.submissions()
    assert run.submission_id == submission.id
    assert submission.reference == run.reference


def test_each_failed_profile_is_listed_with_its_reason(world: World) -> None:
    connection = world.connect()

    run = sync(world, connection.id)

    failed = {
        row.profile_id: row.reason
        for row in outcomes(run).values()
        if row.outcome == "failed"
    }
    assert sorted(failed) == sorted(world.members.unmailable)
    reasons = " | ".join(failed.values())
    assert "is not a valid UK postcode" in reasons
    assert "town is missing" in reasons
    assert "more than 35" in reasons
    assert "is outside the UK" in reasons


class GoneAway:
    """An address check plugged into cleansing, as a gone-away file would be."""

    def __init__(self, postcodes: set[str]) -> None:
        self.postcodes = postcodes

    def verify(self, address: Address) -> VerificationResult:
        if address.postcode in self.postcodes:
            return VerificationResult(None, ("the addressee has gone away",))
        return VerificationResult(address)


def test_a_plugged_in_verifier_rejects_addresses_with_its_reason(
    world: World,
) -> None:
    gone = world.members.mailable[:3]
    postcodes = {
        world.sim.klaviyo.profiles[p].attributes["location"]["zip"] for p in gone
    }
    world.runtime = replace(world.runtime, address_verifier=GoneAway(postcodes))
    connection = world.connect()

    run = sync(world, connection.id)

    rows = outcomes(run)
    rejected = {p for p, row in rows.items() if "gone away" in row.reason}
    assert set(gone) <= rejected
    assert not rejected & set(world.mailed())
    assert run.imported == 240 - len(rejected)


def test_submission_link_opens_the_submission_in_zappost(world: World) -> None:
    connection = world.connect()

    run = sync(world, connection.id)

    page = httpx.get(run.submission_url)
    assert page.status_code == 200
    assert f"Submission {run.submission_id}" in page.text
    assert "240 records accepted" in page.text


def test_second_sync_adds_nothing(world: World) -> None:
    connection = world.connect()
    sync(world, connection.id)

    again = sync(world, connection.id)

    assert len(world.mailed()) == 240
    assert again.status == "succeeded"
    assert (again.imported, again.failed) == (0, 0)
    # Every member joined within the look-back window, so all are read again
    # and skipped: mailed ones, and failures already on record.
    assert again.fetched == again.skipped_duplicate == 244
    assert again.submission_id is None
    reasons = Counter(row.reason.split(":")[0] for row in outcomes(again).values())
    assert reasons["already mailed for this membership"] == 240
    assert sum(n for r, n in reasons.items() if r.startswith("already reported")) == 4


def test_new_joiners_are_picked_up(world: World) -> None:
    connection = world.connect()
    sync(world, connection.id)

    joined = world.add_members(5, at=utcnow())
    run = sync(world, connection.id)

    assert run.imported == 5
    assert sorted(world.mailed()) == sorted(world.members.mailable)
    assert set(joined.mailable) <= set(world.mailed())
    assert world.sim.zappost.duplicates() == []


def test_late_joiners_inside_the_look_back_are_picked_up(world: World) -> None:
    connection = world.connect()
    sync(world, connection.id)
    watermark = DataConnection.get_by_id(connection.id).watermark

    # Segment membership is computed late: these show up after the sync that
    # passed their joined_group_at.
    late = world.add_members(3, at=watermark - timedelta(hours=2))
    run = sync(world, connection.id)

    assert run.imported == 3
    assert set(late.mailable) <= set(world.mailed())
    assert world.sim.zappost.duplicates() == []


def test_late_joiners_older_than_the_look_back_come_with_the_daily_full_read(
    world: World,
) -> None:
    connection = world.connect()
    first = sync(world, connection.id)
    watermark = DataConnection.get_by_id(connection.id).watermark
    lookback = timedelta(hours=int(settings.get("lookback_hours")))
    # Klaviyo added them to the segment with a joined_group_at the look-back
    # window no longer reaches.
    late = world.add_members(3, at=watermark - lookback - timedelta(hours=5))

    same_day = sync(world, connection.id)
    a_day_on = utcnow() - FULL_READ_EVERY - timedelta(minutes=1)
    DataConnection.update(full_read_at=a_day_on).where(
        DataConnection.id == connection.id
    ).execute()
    next_day = sync(world, connection.id)

    assert first.full_read and not same_day.full_read and next_day.full_read
    # The look-back window holds everyone else, but not them.
    assert same_day.imported == 0 and same_day.fetched == first.fetched
    assert next_day.imported == 3
    assert next_day.fetched == first.fetched + 3
    # The failures the first run reported are not reported again.
    assert next_day.failed == 0
    assert next_day.skipped_duplicate == first.fetched
    assert sorted(world.mailed()) == sorted(world.members.mailable)
    assert set(late.mailable) <= set(world.mailed())
    assert world.sim.zappost.duplicates() == []
    refreshed = DataConnection.get_by_id(connection.id)
    assert refreshed.full_read_at == next_day.started_at


def test_leave_and_rejoin_is_mailed_again(world: World) -> None:
    connection = world.connect()
    sync(world, connection.id)
    comeback = world.members.mailable[:3]

    world.sim.klaviyo.leave(world.acme, world.segment, comeback)
    sync(world, connection.id)
    world.sim.klaviyo.join(world.acme, world.segment, comeback)
    run = sync(world, connection.id)

    assert run.imported == 3
    times = Counter(world.mailed())
    assert {who: times[who] for who in comeback} == dict.fromkeys(comeback, 2)
    assert sum(times.values()) == 243


def test_pause_stops_ingest_and_resume_takes_current_members(world: World) -> None:
    services = world.services
    connection = world.connect()
    sync(world, connection.id)

    services.pause(connection.id)
    with pytest.raises(SyncRefused, match="paused"):
        sync(world, connection.id)
    stays = world.add_members(2, at=utcnow())
    passing = world.add_members(2, at=utcnow())
    world.sim.klaviyo.leave(world.acme, world.segment, passing.mailable)
    assert DataConnection.get_by_id(connection.id).next_sync_at is None

    services.resume(connection.id)
    run = sync(world, connection.id)

    assert run.imported == 2
    mailed = set(world.mailed())
    assert set(stays.mailable) <= mailed
    assert not set(passing.mailable) & mailed


def test_pause_during_a_sync_stops_it_before_submitting(world: World) -> None:
    services = world.services
    connection = world.connect()

    def pause_once(progress: Progress) -> None:
        if progress.pages == 1:
            services.pause(connection.id)

    run = sync(world, connection.id, progress=pause_once)

    assert run.status == "interrupted"
    assert "paused" in run.error
    assert world.mailed() == []
    services.resume(connection.id)
    sync(world, connection.id)
    assert sorted(world.mailed()) == sorted(world.members.mailable)


def test_stop_request_ends_the_run_before_submitting(world: World) -> None:
    connection = world.connect()
    stop = threading.Event()

    run = sync(
        world,
        connection.id,
        stop=stop,
        progress=lambda progress: stop.set() if progress.pages == 2 else None,
    )

    assert run.status == "interrupted"
    assert run.phase == "done"
    assert world.mailed() == []
    assert (
        not ProfileOutcome.select().where(ProfileOutcome.outcome == "staged").exists()
    )
    finished = sync(world, connection.id)
    assert finished.imported == 240
    assert sorted(world.mailed()) == sorted(world.members.mailable)


def test_progress_reports_pages_then_the_submission(world: World) -> None:
    connection = world.connect()
    seen: list[Progress] = []

    run = sync(world, connection.id, progress=seen.append)

    fetching = [p for p in seen if p.phase == "fetching"]
    assert [p.pages for p in fetching] == [1, 2, 3]
    assert [p.fetched for p in fetching] == [100, 200, 244]
    assert [p.phase for p in seen[3:]] == ["submitting", "done"]
    assert seen[-1].imported == run.imported == 240


def corrected_world(world: World) -> tuple[list[str], list[str]]:
    """Members for write-back tests: clean ones, and ones with fixable postcodes."""
    clean = world.add_members(6, at=utcnow(), country="United Kingdom").mailable
    fixable = world.add_members(
        0, REPAIRABLE, at=utcnow(), country="United Kingdom"
    ).mailable
    return clean, fixable


def test_corrected_addresses_are_written_back_when_the_setting_is_on(
    world: World,
) -> None:
    connection = world.connect()
    sync(world, connection.id)
    clean, fixable = corrected_world(world)
    world.services.set_setting("fix_address_data", True)

    run = sync(world, connection.id)

    assert run.imported == 9
    updates = {u.profile_id: u.location for u in world.sim.klaviyo.location_updates}
    assert sorted(updates) == sorted(fixable)
    for profile_id, location in updates.items():
        original = world.sim.klaviyo.profiles[profile_id].attributes["location"]
        assert location["zip"] == original["zip"]  # the PATCH took effect
        assert location["zip"] == location["zip"].upper()
        assert " " in location["zip"]
        assert location["region"]  # the whole location, region included
    events = [e for e in world.sim.klaviyo.events if e.metric == "Address Updated"]
    assert sorted(e.profile_id for e in events) == sorted(fixable)
    for event in events:
        before = event.properties["original_address"]["zip"]
        after = event.properties["updated_address"]["zip"]
        assert before != after
        assert event.properties["submission_id"] == run.submission_id
    assert run.address_updates_failed == 0
    assert not set(clean) & set(updates)


def test_nothing_is_written_back_when_the_setting_is_off(world: World) -> None:
    connection = world.connect()
    sync(world, connection.id)
    _, fixable = corrected_world(world)

    run = sync(world, connection.id)

    assert run.imported == 9
    assert world.sim.klaviyo.location_updates == []
    assert world.sim.klaviyo.events == []
    rows = outcomes(run)
    assert {rows[p].correction["write_back"] for p in fixable} == {"off"}


def test_a_failed_write_back_is_listed_and_the_sync_still_succeeds(
    world: World,
) -> None:
    connection = world.connect()
    sync(world, connection.id)
    _, fixable = corrected_world(world)
    world.services.set_setting("fix_address_data", True)
    world.sim.faults.add("klaviyo", "update_profile", "5xx", None, status=500)

    run = sync(world, connection.id)

    assert run.status == "succeeded"
    assert run.imported == 9
    assert run.address_updates_failed == len(fixable)
    rows = outcomes(run)
    for profile_id in fixable:
        assert rows[profile_id].correction["write_back"].startswith("failed: ")
    assert world.sim.klaviyo.location_updates == []


class Crash(BaseException):
    """The process ending at a given point, as a kill would end it."""


def test_corrections_left_pending_by_an_ended_process_are_written_next_time(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = world.connect()
    sync(world, connection.id)
    _, fixable = corrected_world(world)
    world.services.set_setting("fix_address_data", True)

    def crash(*args: object) -> None:
        raise Crash

    with monkeypatch.context() as patch:
        patch.setattr("zaptui.sync.engine.write_back_addresses", crash)
        with pytest.raises(Crash):
            sync(world, connection.id)
    assert world.sim.klaviyo.location_updates == []
    nothing_new = sync(world, connection.id)

    assert nothing_new.imported == 0
    updated = sorted(u.profile_id for u in world.sim.klaviyo.location_updates)
    assert updated == sorted(fixable)
    assert len(world.mailed()) == 240 + 9


def test_hold_back_skips_people_mailed_by_another_connection(world: World) -> None:
    shared = world.members.mailable[:20]
    book_club = world.sim.klaviyo.add_source(world.acme, "list", "Test list")
    world.sim.klaviyo.join(world.acme, book_club, shared)
    first = world.connect()
    second = world.connect("Win-back Postcard", source=book_club)
    sync(world, first.id)
    world.services.set_setting("hold_back_days", 30)

    run = sync(world, second.id)

    assert world.mailed("Win-back Postcard") == []
    assert run.skipped_duplicate == 20
    reasons = {row.outcome for row in outcomes(run).values()}
    assert reasons == {"held_back"}


def test_hold_back_is_off_by_default(world: World) -> None:
    shared = world.members.mailable[:20]
    book_club = world.sim.klaviyo.add_source(world.acme, "list", "Test list")
    world.sim.klaviyo.join(world.acme, book_club, shared)
    first = world.connect()
    second = world.connect("Win-back Postcard", source=book_club)
    sync(world, first.id)

    run = sync(world, second.id)

    assert run.imported == 20
    assert sorted(world.mailed("Win-back Postcard")) == sorted(shared)


def another_account_sharing(world: World, shared: list[str]) -> DataConnection:
    """A second Klaviyo account whose list holds the people of `shared` (the
    same emails under its own profile ids), paired to the win-back campaign."""
    klaviyo = world.sim.klaviyo
    harbour = klaviyo.add_account("Harbour Goods", rng=world.rng)
    copies = [
        seed.SeedProfile(
            seed.profile_id(world.rng), copy.deepcopy(klaviyo.profiles[p].attributes)
        )
        for p in shared
    ]
    customers = klaviyo.add_source(harbour, "list", "Harbour customers")
    klaviyo.join(harbour, customers, klaviyo.add_profiles(harbour, copies))
    account = world.services.connect_account(harbour.private_key)
    return world.services.create_connection(
        account.id, "list", customers.id, world.campaign_id("Win-back Postcard")
    )


def mailings_by_email(world: World) -> Counter[str]:
    """How many times each person was mailed, whatever the account or campaign."""
    profiles = world.sim.klaviyo.profiles
    return Counter(
        profiles[m.customerid].attributes["email"].casefold()
        for m in world.sim.zappost.mailed()
    )


def sync_while_another_waits(
    world: World, waiting_id: int, phase: str, syncing_id: int
) -> SyncRun:
    """Sync one connection while another's sync, in a thread, waits at its
    first report of `phase`; then let that one finish. The first one's run."""
    reached, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def wait_there(progress: Progress) -> None:
        if progress.phase == phase and not reached.is_set():
            reached.set()
            release.wait(10)

    def run() -> None:
        try:
            sync(world, waiting_id, progress=wait_there)
        except BaseException as error:  # surfaced below
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert reached.wait(10), f"the sync never reached {phase}"
        synced = sync(world, syncing_id)
    finally:
        release.set()
        thread.join(10)
    assert errors == []
    return synced


def hold_back_across_accounts(world: World) -> tuple[DataConnection, DataConnection]:
    """The hold-back rule on; Acme's segment, and another account's list of 20
    of the same people."""
    world.services.set_setting("hold_back_days", 30)
    harbour = another_account_sharing(world, world.members.mailable[:20])
    return world.connect(), harbour


def test_hold_back_holds_a_person_another_account_is_submitting_now(
    world: World,
) -> None:
    check_hold_back_of_a_submission_in_flight(world)


def test_hold_back_holds_a_person_mailed_while_the_run_was_fetching(
    world: World,
) -> None:
    check_hold_back_of_a_mailing_made_while_fetching(world)


@pytest.mark.postgres
def test_hold_back_holds_back_across_accounts_on_postgresql(pg_db) -> None:
    for world in build_world(seed=7, clean=60):
        check_hold_back_of_a_submission_in_flight(world)
    for world in build_world(seed=8, clean=60):
        check_hold_back_of_a_mailing_made_while_fetching(world)


def check_hold_back_of_a_submission_in_flight(world: World) -> None:
    """Of two accounts' runs that staged one person, the second to submit
    holds them back while the first is sending."""
    acme, harbour = hold_back_across_accounts(world)

    # Acme's sync has staged everyone and is about to send its submission.
    run = sync_while_another_waits(world, acme.id, "submitting", harbour.id)

    assert run.imported == 0
    assert run.skipped_duplicate == 20
    rows = outcomes(run).values()
    reasons = {row.reason for row in rows}
    assert reasons == {"being mailed by another sync now (hold-back of 30 days)"}
    assert [row.record for row in rows if row.record is not None] == []  # not sent
    mailings = mailings_by_email(world)
    assert len(mailings) == len(world.members.mailable)
    assert set(mailings.values()) == {1}


def check_hold_back_of_a_mailing_made_while_fetching(world: World) -> None:
    """A run holds back whoever another account mailed after its look at the
    ledger, before it submitted."""
    acme, harbour = hold_back_across_accounts(world)

    # Harbour's sync has looked at the ledger for its one page and staged all
    # 20; Acme mails them before Harbour gets to submit.
    sync_while_another_waits(world, harbour.id, "fetching", acme.id)

    run = SyncRun.get(SyncRun.connection == harbour.id)
    assert (run.status, run.imported, run.skipped_duplicate) == ("succeeded", 0, 20)
    assert {row.reason for row in outcomes(run).values()} == {
        "mailed within the last 30 days"
    }
    assert run.submission_id is None
    assert set(mailings_by_email(world).values()) == {1}


def test_new_joiners_only_connection_skips_current_members(world: World) -> None:
    connection = world.connect(new_joiners_only=True)

    first = sync(world, connection.id)
    joined = world.add_members(3, at=utcnow() + timedelta(seconds=1))
    second = sync(world, connection.id)

    assert (first.fetched, first.imported) == (0, 0)
    assert second.imported == 3
    assert sorted(world.mailed()) == sorted(joined.mailable)


def test_campaign_checks_fail_records_before_submitting(world: World) -> None:
    connection = world.connect("Spring Sale A5 Postcard")
    world.services.update_mapping(
        connection.id,
        {"offer_code": "properties.favourite_category", "tier": "properties.tier"},
    )

    run = sync(world, connection.id)

    assert run.status == "failed"
    assert (run.imported, run.failed) == (0, 244)
    assert world.sim.zappost.submissions() == []
    reasons = {row.reason for row in outcomes(run).values()}
    assert any("Offer code must be six capital letters or digits" in r for r in reasons)


def test_expected_values_are_sent_in_the_campaigns_spelling(world: World) -> None:
    connection = world.connect("Spring Sale A5 Postcard")
    assert world.services.mapping(connection.id)["tier"] == "properties.tier"

    run = sync(world, connection.id)

    assert run.imported == 240
    (submission,) = world.sim.zappost.submissions()
    tiers = {record["customdata"]["tier"] for _, record in submission.valid}
    assert tiers == {"Gold", "Silver", "Bronze"}


def test_records_zappost_rejects_are_recorded_on_the_run(world: World) -> None:
    connection = world.connect("Spring Sale A5 Postcard")
    campaign = world.sim.zappost.campaign_named("Spring Sale A5 Postcard")
    gold_only = replace(
        campaign,
        fields=[
            field_definition("tier", "Loyalty tier", expected_values=["Gold"]),
        ],
    )

    def change_campaign(progress: Progress) -> None:
        # The campaign changes in ZAP~POST while the members are being read.
        if progress.pages == 1:
            world.sim.zappost.add_campaign(gold_only)

    run = sync(world, connection.id, progress=change_campaign)

    rows = outcomes(run)
    gold = {
        p
        for p in world.members.mailable
        if world.sim.klaviyo.profiles[p].attributes["properties"]["tier"] == "gold"
    }
    assert run.status == "partial"
    assert sorted(world.mailed("Spring Sale A5 Postcard")) == sorted(gold)
    rejected = {r["customerid"] for r in run.rejected_records}
    assert rejected == set(world.members.mailable) - gold
    for profile_id in rejected:
        assert rows[profile_id].outcome == "failed"
        assert rows[profile_id].reason.startswith("rejected by ZAP~POST: tier")
    ledger = {row.profile_id for row in SubmittedProfile.select()}
    assert ledger == gold


def test_unmapped_required_field_fails_the_run_and_says_what_to_do(
    world: World,
) -> None:
    campaign = world.sim.zappost.campaign_named("Welcome Letter")
    connection = world.connect()
    world.sim.zappost.add_campaign(
        replace(
            campaign,
            fields=[field_definition("store", "Nearest store", required=True)],
        )
    )

    run = sync(world, connection.id)

    assert run.status == "failed"
    assert "required campaign fields are not mapped: store" in run.error
    assert "mapping" in run.error
    assert world.mailed() == []


def test_sync_is_refused_while_another_process_holds_the_connection(
    world: World,
) -> None:
    connection = world.connect()
    other = f"{world.runtime.owner.split(':')[0]}:1:elsewhere"  # pid 1 is alive
    DataConnection.update(
        lease_owner=other, lease_expires_at=utcnow() + timedelta(minutes=1)
    ).where(DataConnection.id == connection.id).execute()

    with pytest.raises(SyncBusy, match="another process"):
        sync(world, connection.id)
    assert SyncRun.select().count() == 0


def test_two_syncs_of_one_connection_in_one_process_do_not_overlap(
    world: World,
) -> None:
    connection = world.connect()
    errors: list[BaseException] = []
    started = threading.Event()
    release = threading.Event()

    def slow_progress(progress: Progress) -> None:
        started.set()
        release.wait(5)

    def first() -> None:
        try:
            sync(world, connection.id, progress=slow_progress)
        except BaseException as error:  # surfaced below
            errors.append(error)

    thread = threading.Thread(target=first)
    thread.start()
    assert started.wait(5)
    try:
        with pytest.raises(SyncBusy):
            sync(world, connection.id)
    finally:
        release.set()
        thread.join(10)
    assert errors == []
    assert sorted(world.mailed()) == sorted(world.members.mailable)


def test_names_are_data_never_markup(world: World) -> None:
    seeds = world.profiles(2, country="United Kingdom")
    seeds[0].attributes["first_name"] = "[bold red]Eve[/]"
    seeds[1].attributes["last_name"] = "\x1b[2J\x1b[HTrent"
    ids = world.sim.klaviyo.add_profiles(world.acme, seeds)
    world.sim.klaviyo.join(world.acme, world.segment, ids, at=utcnow())
    connection = world.connect()

    run = sync(world, connection.id)

    rows = outcomes(run)
    assert rows[ids[0]].display_name.startswith("[bold red]Eve[/] ")
    assert rows[ids[1]].display_name.endswith(" Trent")
    (submission,) = world.sim.zappost.submissions()
    records = {r["customerid"]: r for _, r in submission.valid}
    assert records[ids[0]]["firstname"] == "[bold red]Eve[/]"
    assert records[ids[1]]["surname"] == "Trent"


def test_secrets_never_reach_logs_or_the_api_log(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    world.sim.faults.add("klaviyo", "segment_profiles", "5xx", 1, skip=1)
    connection = world.connect()

    run = sync(world, connection.id)

    secrets = [world.acme.private_key, world.sim.zappost.api_password]
    assert run.imported == 240
    for secret in secrets:
        assert secret not in caplog.text
        assert secret not in (run.error or "")
    rows = list(ApiLogEntry.select().tuples())
    assert len(rows) > 5
    for row in rows:
        text = " ".join(str(value) for value in row)
        for secret in secrets:
            assert secret not in text


def test_unfinished_runs_are_not_reported_as_staged_after_a_failure(
    world: World,
) -> None:
    connection = world.connect()
    world.sim.faults.add("klaviyo", "segment_profiles", "5xx", None, skip=1)

    run = sync(world, connection.id)

    assert run.status == "failed"
    assert run.phase == "done"
    counts = Counter(row.outcome for row in outcomes(run).values())
    assert "staged" not in counts
    assert DataConnection.get_by_id(connection.id).failing


@pytest.mark.postgres
def test_sync_on_postgresql_mails_once_and_resyncs_nothing(pg_db) -> None:
    for world in build_world(seed=5, clean=120):
        connection = world.connect()
        first = sync(world, connection.id)
        again = sync(world, connection.id)

        assert (first.imported, first.failed) == (120, len(UNMAILABLE))
        assert (again.imported, again.failed) == (0, 0)
        assert sorted(world.mailed()) == sorted(world.members.mailable)
        assert world.sim.zappost.duplicates() == []


@pytest.mark.postgres
def test_unconfirmed_submission_is_settled_once_on_postgresql(pg_db) -> None:
    for world in build_world(seed=6, clean=60):
        connection = world.connect()
        world.sim.faults.add(COMMITTED_SERVICE, "submit", "html403", 1)
        unconfirmed = sync(world, connection.id)
        world.sim.faults.clear()
        world.add_members(4, at=utcnow())

        follow_up = sync(world, connection.id)

        assert (unconfirmed.status, unconfirmed.phase) == ("failed", "submitting")
        assert SyncRun.get_by_id(unconfirmed.id).imported == 60
        assert follow_up.imported == 4
        assert sorted(world.mailed()) == sorted(world.members.mailable)
        assert world.sim.zappost.duplicates() == []


def test_engine_runs_scheduled_syncs_with_their_trigger(world: World) -> None:
    connection = world.connect()

    run = SyncEngine(world.runtime).sync(connection.id, trigger="scheduled")

    assert run.trigger == "scheduled"
    assert run.status == "partial"
