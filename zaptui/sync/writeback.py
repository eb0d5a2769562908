"""Address correction: write cleansed addresses back to the Klaviyo profiles.

Runs after a submission when the "fix address data" setting is on. Each
profile whose cleansed address differs from its Klaviyo location gets its
whole corrected location (a partial location may clear the fields left out)
and an `Address Updated` event carrying the original and the updated address.
A failed write-back is listed on the run; it never fails the sync.

Corrections wait as "pending" on their outcome rows, so a process that ended
before writing them back leaves them for the next sync of the connection.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import peewee as pw

from zaptui.clock import utcnow
from zaptui.domain.address import Address, to_klaviyo_location
from zaptui.klaviyo.errors import KlaviyoError
from zaptui.store.models import ProfileOutcome, SyncRun, database_proxy

log = logging.getLogger(__name__)

ADDRESS_UPDATED = "Address Updated"
CHUNK = 200
CONCURRENCY = 8
# Pending corrections older than this are left alone: the profile may have
# been edited since, and writing an old correction back would undo that.
PENDING_DAYS = 7
# JsonField stores compact JSON with sorted keys, so this is exact.
_PENDING = '%"write_back":"pending"%'


def _address(data: Any) -> Address | None:
    if not isinstance(data, dict):
        return None
    try:
        return Address(**{key: str(value) for key, value in data.items()})
    except TypeError:
        return None


def _is_pending() -> pw.Expression:
    """Rows whose correction waits to be written back (the pattern is literal)."""
    return pw.Expression(
        ProfileOutcome.correction, pw.OP.ILIKE, pw.Value(_PENDING, converter=False)
    )


async def _write_one(
    klaviyo: Any, row: ProfileOutcome, run: SyncRun
) -> tuple[int, dict[str, Any], bool]:
    """Write one correction back; (row id, updated correction, failed)."""
    correction = dict(row.correction or {})
    original = correction.get("original")
    original = original if isinstance(original, dict) else {}
    address = _address(correction.get("address"))
    if address is None:
        correction["write_back"] = "failed: the corrected address was not kept"
        return row.id, correction, True
    updated = to_klaviyo_location(address, original)
    try:
        await klaviyo.update_profile_location(row.profile_id, updated)
        await klaviyo.create_event(
            row.profile_id,
            ADDRESS_UPDATED,
            {
                "original_address": original,
                "updated_address": updated,
                "changes": correction.get("changes") or [],
                "sync_id": run.id,
                "submission_id": run.submission_id,
                "campaign_name": run.campaign_name,
                "data_connection": run.connection_name,
            },
            # Klaviyo keeps one event per id: a write-back repeated after a
            # crash does not record the correction twice.
            unique_id=f"{run.reference}:{row.profile_id}",
        )
    except KlaviyoError as error:
        correction["write_back"] = f"failed: {error}"
        log.warning(
            "address write-back failed for profile %s: %s", row.profile_id, error
        )
        return row.id, correction, True
    correction["write_back"] = "done"
    correction["updated"] = updated
    return row.id, correction, False


async def write_back_addresses(run_id: int, connection_id: int, klaviyo: Any) -> int:
    """Write back the connection's pending corrections; returns how many failed."""
    since = utcnow() - timedelta(days=PENDING_DAYS)
    runs = SyncRun.select().where(
        (SyncRun.id == run_id)
        | (
            (SyncRun.connection == connection_id)
            & (SyncRun.started_at >= since)
            & SyncRun.submission_id.is_null(False)
        )
    )
    failures = 0
    for run in runs.order_by(SyncRun.id):
        failures += await _write_back_run(run, klaviyo)
    return failures


async def _write_back_run(run: SyncRun, klaviyo: Any) -> int:
    """Write back one run's pending corrections, a chunk at a time."""
    failures = 0
    last_id = 0
    while True:
        # One run at a time, in id order: SQLite walks that run's rows from
        # where the last chunk ended and stops at the chunk's end.
        rows = list(
            ProfileOutcome.select()
            .where(
                (ProfileOutcome.run == run.id)
                & (ProfileOutcome.id > last_id)
                & (ProfileOutcome.outcome == "imported")
                & _is_pending()
            )
            .order_by(ProfileOutcome.id)
            .limit(CHUNK)
        )
        if not rows:
            return failures
        last_id = rows[-1].id
        for start in range(0, len(rows), CONCURRENCY):
            group = rows[start : start + CONCURRENCY]
            results = await asyncio.gather(
                *(_write_one(klaviyo, row, run) for row in group)
            )
            failed = sum(1 for _, _, did_fail in results if did_fail)
            with database_proxy.atomic():
                for row_id, correction, _ in results:
                    ProfileOutcome.update(correction=correction).where(
                        ProfileOutcome.id == row_id
                    ).execute()
                if failed:
                    SyncRun.update(
                        address_updates_failed=SyncRun.address_updates_failed + failed
                    ).where(SyncRun.id == run.id).execute()
            failures += failed
