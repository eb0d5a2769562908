"""Keyset-paged reads of sync runs, failed profiles and the API log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from zaptui.store import queries
from zaptui.store.models import ApiLogEntry, ProfileOutcome, SyncRun

BASE = datetime(2026, 12, 4, 1, 0, tzinfo=UTC)


def _runs(count: int, same_minute_pairs: bool = True) -> None:
    """Runs started a minute apart, two at a time (ties broken by id)."""
    SyncRun.insert_many(
        [
            {
                "reference": f"run-{i}",
                "trigger": "scheduled",
                "status": "succeeded",
                "campaign_name": f"Campaign {i}",
                "started_at": BASE
                + timedelta(minutes=i // 2 if same_minute_pairs else i),
                "fetched": i,
            }
            for i in range(count)
        ]
    ).execute()


def _all_pages(read, **kwargs) -> list[list[int]]:
    pages, cursor = [], None
    while True:
        page = read(cursor, **kwargs)
        pages.append([row.id for row in page.rows])
        cursor = page.next
        if cursor is None:
            return pages


def test_run_pages_are_newest_first_with_ties_broken_by_id(db):
    _runs(7)

    first = queries.run_page(limit=3)

    assert [row.campaign_name for row in first.rows] == [
        "Campaign 6",
        "Campaign 5",
        "Campaign 4",
    ]
    assert first.rows[0].started_at == BASE + timedelta(minutes=3)
    assert first.rows[0].fetched == 6
    assert first.next == queries.Cursor(first.rows[-1].started_at, first.rows[-1].id)


def test_paging_runs_visits_every_run_once_and_ends(db):
    _runs(250)

    pages = _all_pages(queries.run_page, limit=100)

    assert [len(page) for page in pages] == [100, 100, 50]
    ids = [run_id for page in pages for run_id in page]
    assert len(set(ids)) == 250
    expected = [
        run.id
        for run in SyncRun.select().order_by(
            SyncRun.started_at.desc(), SyncRun.id.desc()
        )
    ]
    assert ids == expected


def test_a_page_that_fills_exactly_has_no_next_cursor(db):
    _runs(100)

    page = queries.run_page(limit=100)

    assert len(page.rows) == 100
    assert page.next is None


def test_an_empty_history_is_one_empty_page(db):
    page = queries.run_page()

    assert page.rows == []
    assert page.next is None


def test_a_run_started_after_the_first_page_does_not_shift_the_next_page(db):
    _runs(6, same_minute_pairs=False)
    first = queries.run_page(limit=3)
    SyncRun.create(
        reference="newest", trigger="manual", started_at=BASE + timedelta(days=1)
    )

    second = queries.run_page(first.next, limit=3)

    assert [row.campaign_name for row in second.rows] == [
        "Campaign 2",
        "Campaign 1",
        "Campaign 0",
    ]


def test_run_paging_searches_the_started_at_index(db):
    _runs(10)
    cursor = queries.Cursor(BASE, 5)
    query = (
        SyncRun.select(SyncRun.id)
        .where(*queries._after(SyncRun.started_at, SyncRun.id, cursor))
        .order_by(SyncRun.started_at.desc(), SyncRun.id.desc())
        .limit(101)
    )
    sql, params = query.sql()

    plan = " ".join(
        str(row[-1]) for row in db.execute_sql(f"EXPLAIN QUERY PLAN {sql}", params)
    )

    assert "sync_run_started_at" in plan
    assert "TEMP B-TREE" not in plan


def test_run_detail_has_what_the_panel_shows(db):
    run = SyncRun.create(
        reference="ref-1",
        trigger="manual",
        status="partial",
        imported=9,
        failed=1,
        submission_id="sub-1",
        submission_url="https://app.zappost.com/submissions/sub-1",
    )

    detail = queries.run_detail(run.id)

    assert detail is not None
    assert (detail.reference, detail.trigger, detail.status) == (
        "ref-1",
        "manual",
        "partial",
    )
    assert (detail.imported, detail.failed, detail.submission_id) == (9, 1, "sub-1")
    assert queries.run_detail(run.id + 1) is None


def test_failed_profiles_lists_only_failures_and_counts_the_rest(db):
    run = SyncRun.create(reference="ref-1", trigger="manual")
    other = SyncRun.create(reference="ref-2", trigger="manual")
    ProfileOutcome.insert_many(
        [
            {
                "run": run.id,
                "profile_id": f"p{i}",
                "display_name": f"Person {i}",
                "email": f"p{i}@example.com",
                "outcome": "failed" if i % 2 else "imported",
                "reason": f"postcode {i} not found",
            }
            for i in range(20)
        ]
        + [{"run": other.id, "profile_id": "x", "outcome": "failed", "reason": "r"}]
    ).execute()

    some = queries.failed_profiles(run.id, limit=4)
    every = queries.failed_profiles(run.id)

    assert [row.profile_id for row in some.rows] == ["p1", "p3", "p5", "p7"]
    assert (some.total, some.more) == (10, 6)
    assert (len(every.rows), every.total, every.more) == (10, 10, 0)
    assert every.rows[0] == queries.FailedProfile(
        "p1", "Person 1", "p1@example.com", "postcode 1 not found"
    )


def _log(count: int, service_of=lambda i: "klaviyo") -> None:
    ApiLogEntry.insert_many(
        [
            {
                "service": service_of(i),
                "at": BASE + timedelta(seconds=i // 3),
                "method": "GET",
                "url": f"https://a.klaviyo.com/api/lists/{i}",
                "status": 200,
                "duration_ms": 12.5,
                "request_body": "x" * 1000,
            }
            for i in range(count)
        ]
    ).execute()


def test_log_pages_are_newest_first_and_visit_every_entry_once(db):
    _log(230)

    pages = _all_pages(queries.log_page, limit=100)

    ids = [entry_id for page in pages for entry_id in page]
    expected = [
        entry.id
        for entry in ApiLogEntry.select().order_by(
            ApiLogEntry.at.desc(), ApiLogEntry.id.desc()
        )
    ]
    assert [len(page) for page in pages] == [100, 100, 30]
    assert ids == expected


def test_log_pages_can_show_one_service(db):
    _log(50, service_of=lambda i: "zappost" if i % 5 == 0 else "klaviyo")

    pages = _all_pages(queries.log_page, limit=4, service="zappost")

    rows = [ApiLogEntry.get_by_id(i) for page in pages for i in page]
    assert len(rows) == 10
    newest = queries.log_page(service="zappost").rows[0]
    assert (newest.service, newest.method, newest.status) == ("zappost", "GET", 200)
    assert newest.at == BASE + timedelta(seconds=15)
    assert {row.service for row in rows} == {"zappost"}


def test_log_entry_reads_one_entry_with_its_bodies(db):
    _log(2)
    newest = queries.log_page().rows[0]

    entry = queries.log_entry(newest.id)

    assert entry is not None and entry.request_body == "x" * 1000
    assert queries.log_entry(newest.id + 100) is None


def test_reading_the_first_page_again_keeps_what_was_loaded_below_it(db):
    _runs(250, same_minute_pairs=False)
    first = queries.run_page(limit=100)
    second = queries.run_page(first.next, limit=100)
    shown = first.rows + second.rows
    newest = SyncRun.create(
        reference="newest", trigger="manual", started_at=BASE + timedelta(days=1)
    )
    SyncRun.delete().where(SyncRun.reference == "run-240").execute()

    again = queries.after_first_page(
        queries.run_page(limit=100), shown, second.next, queries.run_cursor
    )

    ids = [row.id for row in again.rows]
    assert ids[0] == newest.id
    assert len(ids) == 200  # one new, one pruned
    assert ids[1:] == [row.id for row in shown if row.campaign_name != "Campaign 240"]
    assert again.next == second.next
    after = queries.run_page(again.next, limit=100)
    assert after.rows[0].campaign_name == "Campaign 49"


def test_reading_a_short_history_again_shows_it_all(db):
    _runs(5)
    shown = queries.run_page().rows
    SyncRun.delete().where(SyncRun.reference == "run-2").execute()

    again = queries.after_first_page(
        queries.run_page(), shown, None, queries.run_cursor
    )

    assert [row.campaign_name for row in again.rows] == [
        "Campaign 4",
        "Campaign 3",
        "Campaign 1",
        "Campaign 0",
    ]
    assert again.next is None
