"""Sync History and Logs open as fast with 100,000 rows as with 10.

Run: .venv/bin/python bench/history.py [--rows 100000] [--rounds 15]
     [--console-rounds 5]

For each size (10 rows, 1,000, then --rows) a fresh SQLite database is filled with
that many sync runs and as many API log entries, then:

- queries: the first page (`queries.run_page()` / `queries.log_page()`) and
  the five pages after it, each timed as the median of --rounds; with 10 rows
  the later pages are empty but still asked for, after the last row;
- console: the Sync History tab in a headless Textual app, from start until
  the first page is in the table, then five Ctrl+End presses, each waiting
  for the next page to land (median of --console-rounds; Textual's start-up
  and key handling are in the figure);
- for contrast, the last page of the largest table read with OFFSET and with
  the cursor;
- the SQLite query plans, which must search an index and never sort.

With 10 rows a page holds 10 rows, so the cost per page is smaller there for
that reason alone; 1,000 rows fill the first page and five more, which makes
the 100,000-vs-1,000 ratio the one that shows whether the size of the table
matters. Goal: that ratio within 1.5x.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zaptui.store import queries  # noqa: E402
from zaptui.store.db import open_database  # noqa: E402
from zaptui.store.models import ApiLogEntry, SyncRun, database_proxy  # noqa: E402

BASE = datetime(2026, 1, 1, tzinfo=UTC)
CHUNK = 5_000
# Enough rows for the first page and five more to be full.
FULL_PAGES = 1_000


def fill(count: int) -> None:
    """`count` sync runs and `count` API log entries, a minute apart."""
    for start in range(0, count, CHUNK):
        stop = min(count, start + CHUNK)
        with database_proxy.atomic():
            SyncRun.insert_many(
                [
                    {
                        "reference": f"bench-{i}",
                        "trigger": "scheduled",
                        "status": "succeeded" if i % 7 else "partial",
                        "campaign_name": f"Campaign {i % 13}",
                        "source_name": f"Segment {i % 29}",
                        "source_type": "segment",
                        "started_at": BASE + timedelta(minutes=i),
                        "fetched": i % 5000,
                        "submission_url": f"https://app.zappost.com/submissions/{i}",
                        "rejected_records": [{"customerid": str(i)}],
                    }
                    for i in range(start, stop)
                ]
            ).execute()
            ApiLogEntry.insert_many(
                [
                    {
                        "service": "klaviyo" if i % 3 else "zappost",
                        "at": BASE + timedelta(minutes=i),
                        "method": "GET",
                        "url": f"https://a.klaviyo.com/api/segments/S/profiles?c={i}",
                        "status": 200,
                        "duration_ms": 100.0,
                        "response_body": '{"data": []}' * 20,
                    }
                    for i in range(start, stop)
                ]
            ).execute()


def median_ms(action: Callable[[], Any], rounds: int) -> float:
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def five_pages(read: Callable[..., queries.Page[Any]], first: queries.Page[Any]):
    """Read the five pages after `first`, going on after the last row at the end."""

    def action() -> None:
        page = first
        for _ in range(5):
            last = page.rows[-1] if page.rows else None
            cursor = page.next
            if cursor is None and last is not None:
                cursor = queries.Cursor(
                    getattr(last, "started_at", None) or last.at, last.id
                )
            page = read(cursor) if cursor is not None else page

    return action


def plan(query: Any) -> str:
    sql, params = query.sql()
    rows = database_proxy.execute_sql(f"EXPLAIN QUERY PLAN {sql}", params)
    return "; ".join(str(row[-1]) for row in rows)


def plans() -> dict[str, str]:
    cursor = queries.Cursor(BASE, 5)
    runs = (
        SyncRun.select(SyncRun.id)
        .where(*queries._after(SyncRun.started_at, SyncRun.id, cursor))
        .order_by(SyncRun.started_at.desc(), SyncRun.id.desc())
        .limit(101)
    )
    logs = (
        ApiLogEntry.select(ApiLogEntry.id)
        .where(
            *queries._after(ApiLogEntry.at, ApiLogEntry.id, cursor),
            ApiLogEntry.service == "zappost",
        )
        .order_by(ApiLogEntry.at.desc(), ApiLogEntry.id.desc())
        .limit(101)
    )
    return {"sync runs": plan(runs), "API log (one service)": plan(logs)}


def deep_page(rounds: int) -> tuple[float, float]:
    """Milliseconds for the last page of runs: OFFSET, then the cursor."""
    total = SyncRun.select().count()
    depth = max(0, total - queries.PAGE_SIZE - 1)
    order = (SyncRun.started_at.desc(), SyncRun.id.desc())
    row = (
        SyncRun.select(SyncRun.id, SyncRun.started_at)
        .order_by(*order)
        .offset(depth)
        .limit(1)
        .get()
    )
    cursor = queries.Cursor(row.started_at, row.id)
    columns = (SyncRun.id, SyncRun.campaign_name, SyncRun.started_at)

    def by_offset() -> None:
        query = SyncRun.select(*columns).order_by(*order)
        list(query.offset(depth + 1).limit(queries.PAGE_SIZE).tuples())

    def by_cursor() -> None:
        query = SyncRun.select(*columns).order_by(*order)
        condition = queries._after(SyncRun.started_at, SyncRun.id, cursor)
        list(query.where(*condition).limit(queries.PAGE_SIZE).tuples())

    return median_ms(by_offset, rounds), median_ms(by_cursor, rounds)


async def console_open() -> tuple[float, float]:
    """Milliseconds to the first page in the Sync History tab, then to 5 more."""
    from textual.app import App, ComposeResult
    from textual.widgets import DataTable

    from zaptui.runtime import Runtime
    from zaptui.services import Services
    from zaptui.ui.paths import stylesheets
    from zaptui.ui.tabs.history import SyncHistoryTab

    class Host(App[None]):
        CSS_PATH = stylesheets()

        def compose(self) -> ComposeResult:
            yield SyncHistoryTab(Services(Runtime()), id="history-tab")

    async def rows_at_least(table: DataTable, count: int, pilot: Any) -> None:
        while table.row_count < count:
            await pilot.pause(0.001)

    started = time.perf_counter()
    app = Host()
    async with app.run_test(size=(120, 36)) as pilot:
        table = app.query_one("#history-table", DataTable)
        total = SyncRun.select().count()
        await rows_at_least(table, min(total, queries.PAGE_SIZE), pilot)
        opened = (time.perf_counter() - started) * 1000
        table.focus()
        started = time.perf_counter()
        for page in range(2, 7):
            await pilot.press("ctrl+end")
            await rows_at_least(table, min(total, page * queries.PAGE_SIZE), pilot)
        paged = (time.perf_counter() - started) * 1000
    return opened, paged


def measure(
    count: int, rounds: int, console_rounds: int, folder: Path
) -> dict[str, Any]:
    url = f"sqlite:///{folder / f'history-{count}.db'}"
    db = open_database(url)
    started = time.perf_counter()
    fill(count)
    filled = time.perf_counter() - started
    # Read from the database file, not a fresh write-ahead log, at every size.
    db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    first_runs = queries.run_page()
    first_logs = queries.log_page()
    result = {
        "rows": count,
        "fill_s": filled,
        "runs_first": median_ms(queries.run_page, rounds),
        "runs_five": median_ms(five_pages(queries.run_page, first_runs), rounds),
        "logs_first": median_ms(queries.log_page, rounds),
        "logs_five": median_ms(five_pages(queries.log_page, first_logs), rounds),
        "logs_service_first": median_ms(
            lambda: queries.log_page(service="zappost"), rounds
        ),
        "deep": deep_page(rounds),
        "plans": plans(),
    }
    console = [asyncio.run(console_open()) for _ in range(console_rounds)]
    result["console_open"] = statistics.median(opened for opened, _ in console)
    result["console_paged"] = statistics.median(paged for _, paged in console)
    db.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--console-rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault(
        "ZAPTUI_SECRET_KEY_FILE", str(Path(tempfile.gettempdir()) / "bench-key")
    )

    with tempfile.TemporaryDirectory() as folder:
        small, full, large = (
            measure(count, args.rounds, args.console_rounds, Path(folder))
            for count in (10, FULL_PAGES, args.rows)
        )

    print(
        f"Sync History and Logs paging: queries the median of {args.rounds} rounds, "
        f"the console of {args.console_rounds}"
    )
    print(
        f"(filling {large['rows']:,} runs and {large['rows']:,} log entries took "
        f"{large['fill_s']:.1f} s; with 10 rows a page holds 10 rows, with "
        f"{FULL_PAGES:,} or more it holds {queries.PAGE_SIZE})"
    )
    print()
    rows = [
        ("sync runs: first page", "runs_first"),
        ("sync runs: 5 more pages", "runs_five"),
        ("API log: first page", "logs_first"),
        ("API log: 5 more pages", "logs_five"),
        ("API log, ZAP~POST only: first page", "logs_service_first"),
        ("console: start to first page", "console_open"),
        ("console: 5 more pages (Ctrl+End)", "console_paged"),
    ]
    width = max(len(label) for label, _ in rows) + 1
    sizes = [f"{size['rows']:,} rows" for size in (small, full, large)]
    print(
        f"{'ms':{width}}{sizes[0]:>10}{sizes[1]:>12}{sizes[2]:>14}"
        f"{'vs 10':>8}{f'vs {FULL_PAGES:,}':>10}"
    )
    worst_full = 0.0
    for label, key in rows:
        vs_small = large[key] / small[key]
        vs_full = large[key] / full[key]
        worst_full = max(worst_full, vs_full)
        print(
            f"{label:{width}}{small[key]:>10.2f}{full[key]:>12.2f}{large[key]:>14.2f}"
            f"{vs_small:>7.2f}x{vs_full:>9.2f}x"
        )
    print()
    offset, keyset = large["deep"]
    print(
        f"the last page of {large['rows']:,} runs: OFFSET {offset:.2f} ms, "
        f"cursor {keyset:.2f} ms ({offset / keyset:.0f}x)"
    )
    print()
    ok = True
    for name, text in large["plans"].items():
        uses_index = "USING" in text and "INDEX" in text
        sorts = "TEMP B-TREE" in text
        ok = ok and uses_index and not sorts
        print(f"plan, {name}: {text}")
    print()
    print(
        f"worst ratio {large['rows']:,} vs {FULL_PAGES:,} rows: {worst_full:.2f}x "
        f"(goal 1.5x); query plans search an index without sorting: {ok}"
    )
    if worst_full > 1.5 or not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
