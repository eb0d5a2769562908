"""Address correction: write cleansed addresses back to the Klaviyo profiles.

Runs after a submission when the "fix address data" setting is on. Each
corrected profile gets its whole corrected location (a partial location may
clear the fields left out) and an `Address Updated` event carrying the original
and the updated address. A failed write-back is listed on the run; it never
fails the sync.
"""

from __future__ import annotations

import logging
from typing import Any

from zaptui.domain.address import Address, to_klaviyo_location
from zaptui.klaviyo.errors import KlaviyoError
from zaptui.store.models import ProfileOutcome, SyncRun

log = logging.getLogger(__name__)

ADDRESS_UPDATED = "Address Updated"
CHUNK = 500


def _address_from_record(record: dict[str, Any]) -> Address:
    return Address(
        name=" ".join(
            part for part in (record.get("firstname"), record.get("surname")) if part
        ),
        line1=record.get("address1") or "",
        line2=record.get("address2") or "",
        line3=record.get("address3") or "",
        town=record.get("city") or "",
        county="",
        postcode=record.get("postcode") or "",
        country=record.get("country") or "",
    )


async def write_back_addresses(run: SyncRun, klaviyo: Any) -> int:
    """PATCH corrected locations for the run's imported profiles; returns failures."""
    failures = 0
    last_id = 0
    while True:
        rows = list(
            ProfileOutcome.select()
            .where(
                (ProfileOutcome.run == run.id)
                & (ProfileOutcome.outcome == "imported")
                & ProfileOutcome.correction.is_null(False)
                & (ProfileOutcome.id > last_id)
            )
            .order_by(ProfileOutcome.id)
            .limit(CHUNK)
        )
        if not rows:
            break
        for row in rows:
            last_id = row.id
            correction = dict(row.correction or {})
            if correction.get("write_back") != "pending" or not row.record:
                continue
            original = correction.get("original") or {}
            updated = to_klaviyo_location(_address_from_record(row.record), original)
            try:
                await klaviyo.update_profile_location(row.profile_id, updated)
                await klaviyo.create_event(
                    row.profile_id,
                    ADDRESS_UPDATED,
                    {
                        "original_address": original,
                        "updated_address": updated,
                        "sync_id": run.id,
                        "submission_id": run.submission_id,
                    },
                )
            except KlaviyoError as error:
                failures += 1
                correction["write_back"] = f"failed: {error}"
                log.warning(
                    "address write-back failed for profile %s: %s",
                    row.profile_id,
                    error,
                )
            else:
                correction["write_back"] = "done"
                correction["updated"] = updated
            ProfileOutcome.update(correction=correction).where(
                ProfileOutcome.id == row.id
            ).execute()
    if failures:
        SyncRun.update(
            address_updates_failed=SyncRun.address_updates_failed + failures
        ).where(SyncRun.id == run.id).execute()
    return failures
