"""The ZAP~POST client against the simulator over real loopback HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from zaptui.apilog import MAX_BODY_CHARS, DatabaseApiLog
from zaptui.sim.serve import ServerHandle, serve_in_thread
from zaptui.sim.zappost import COMMITTED_SERVICE, ZapPostSim
from zaptui.store.db import open_database
from zaptui.store.models import ApiLogEntry
from zaptui.zappost import (
    InvalidRequest,
    NotFound,
    RetryPolicy,
    Unauthorized,
    Unavailable,
    ZapPostClient,
    ZapPostError,
)
from zaptui.zappost.client import (
    CHUNK_BYTES,
    REFERENCE_FIELD,
    EncodedRecord,
    _StreamStats,
)


class Sleeps:
    """Records requested back-off delays instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[ZapPostSim, ServerHandle]]:
    sim = ZapPostSim.seeded(seed=7)
    handle = serve_in_thread(sim.app)
    yield sim, handle
    handle.stop()


@pytest.fixture
def sim(server: tuple[ZapPostSim, ServerHandle]) -> Iterator[ZapPostSim]:
    sim = server[0]
    sim.reset()
    sim.faults.clear()
    yield sim
    sim.faults.clear()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def client(
    server: tuple[ZapPostSim, ServerHandle], sim: ZapPostSim, sleeps: Sleeps
) -> Any:
    async with ZapPostClient(
        sim.api_key,
        sim.api_password,
        base_url=server[1].url,
        retry=RetryPolicy(attempts=4, base_delay=0.01),
        timeout=5.0,
        sleep=sleeps,
    ) as zap:
        yield zap


def record(number: int, **overrides: Any) -> dict[str, Any]:
    """A valid record for the Spring Sale campaign."""
    base = {
        "customerid": f"cust-{number}",
        "email": f"person{number}@example.com",
        "firstname": "Ada",
        "surname": f"Lovelace{number}",
        "address1": f"{number} High Street",
        "city": "London",
        "postcode": "SW1A 1AA",
        "country": "GB",
        "customdata": {"offer_code": "SPR123", "tier": "Gold"},
    }
    base.update(overrides)
    return base


def spring(sim: ZapPostSim) -> str:
    return sim.campaign_named("Spring Sale A5 Postcard").id


async def test_campaigns_are_listed_and_detail_carries_fields(
    client: ZapPostClient, sim: ZapPostSim
) -> None:
    campaigns = await client.get_campaigns()

    names = {c["name"] for c in campaigns}
    assert {"Spring Sale A5 Postcard", "Welcome Letter", "Win-back Postcard"} <= names
    detail = await client.get_campaign(spring(sim))
    fields = {f["name"]: f for f in detail["fields"]}
    assert fields["offer_code"]["validationExpression"] == "^[A-Z0-9]{6}$"
    assert fields["tier"]["expectedValues"] == ["Gold", "Silver", "Bronze"]
    assert detail["status"] == "Published"
    assert detail["paperStockName"] == "A5 Postcard"


async def test_scheduled_sends_are_listed(client: ZapPostClient) -> None:
    sends = await client.get_scheduled_sends()

    assert len(sends) == 3
    assert all(send["id"] and send["sendDate"] for send in sends)


async def test_unknown_campaign_is_not_found(client: ZapPostClient) -> None:
    with pytest.raises(NotFound) as caught:
        await client.get_campaign("00000000-0000-4000-8000-000000000000")

    assert "404" in str(caught.value)


async def test_submission_accepts_valid_records_and_reports_invalid_ones(
    client: ZapPostClient, sim: ZapPostSim
) -> None:
    records = [
        record(1),
        record(2, postcode=""),
        record(3, customdata={"offer_code": "spring", "tier": "Platinum"}),
        record(4),
    ]

    result = await client.create_submission(spring(sim), records, reference="run-1")

    assert result.accepted == 2
    assert not result.replayed
    assert result.submission_id in result.url
    by_customer = {i["record"]["customerid"]: i["errors"] for i in result.invalid}
    assert set(by_customer) == {"cust-2", "cust-3"}
    assert any("postcode" in error for error in by_customer["cust-2"])
    assert any("Gold, Silver, Bronze" in error for error in by_customer["cust-3"])
    assert [m.customerid for m in sim.mailed()] == ["cust-1", "cust-4"]


async def test_reference_rides_in_every_records_customdata(
    client: ZapPostClient, sim: ZapPostSim
) -> None:
    await client.create_submission(
        spring(sim), [record(1), record(2, customdata=None)], reference="run-ref"
    )

    (submission,) = sim.submissions()
    assert submission.reference == "run-ref"
    assert all(
        r["customdata"][REFERENCE_FIELD] == "run-ref" for _, r in submission.valid
    )


async def test_stored_record_text_is_sent_as_it_is_or_tagged_when_untagged(
    client: ZapPostClient, sim: ZapPostSim
) -> None:
    tagged = record(1)
    tagged["customdata"] = {**tagged["customdata"], REFERENCE_FIELD: "run-ref"}
    stored = EncodedRecord(json.dumps(tagged, separators=(",", ":")))
    untagged = EncodedRecord(json.dumps(record(2), separators=(",", ":")))

    await client.create_submission(spring(sim), [stored, untagged], reference="run-ref")

    (submission,) = sim.submissions()
    received = {r["customerid"]: r for _, r in submission.valid}
    assert received["cust-1"] == tagged
    assert received["cust-2"]["customdata"] == {
        "offer_code": "SPR123",
        "tier": "Gold",
        REFERENCE_FIELD: "run-ref",
    }
    assert [m.customerid for m in sim.mailed()] == ["cust-1", "cust-2"]


async def test_stored_text_tagged_for_another_run_is_tagged_for_this_one(
    client: ZapPostClient, sim: ZapPostSim
) -> None:
    other = record(3)
    other["customdata"] = {**other["customdata"], REFERENCE_FIELD: "old-run"}

    await client.create_submission(
        spring(sim), [EncodedRecord(json.dumps(other))], reference="run-ref"
    )

    ((_, received),) = sim.submissions()[0].valid
    assert received["customdata"][REFERENCE_FIELD] == "run-ref"


async def test_only_valid_records_refuses_a_batch_with_any_invalid_record(
    client: ZapPostClient, sim: ZapPostSim
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await client.create_submission(
            spring(sim),
            [record(1), record(2, city="")],
            reference="run-strict",
            only_valid_records=True,
        )

    assert [i["record"]["customerid"] for i in caught.value.invalid_records] == [
        "cust-2"
    ]
    assert any("city" in message for message in caught.value.messages)
    assert sim.mailed() == []
    ok = await client.create_submission(
        spring(sim), [record(1)], reference="run-strict-2", only_valid_records=True
    )
    assert ok.accepted == 1


async def test_same_reference_twice_makes_one_submission_mailed_once(
    client: ZapPostClient, sim: ZapPostSim
) -> None:
    records = [record(n) for n in range(5)]

    first = await client.create_submission(spring(sim), records, reference="run-twice")
    second = await client.create_submission(spring(sim), records, reference="run-twice")

    assert second.replayed and not first.replayed
    assert second.submission_id == first.submission_id
    assert second.accepted == 5
    assert len(sim.submissions()) == 1
    assert len(sim.mailed()) == 5
    assert sim.duplicates() == []


async def test_find_submission_by_reference(
    client: ZapPostClient, sim: ZapPostSim
) -> None:
    made = await client.create_submission(
        spring(sim), [record(1), record(2, address1="")], reference="run-find"
    )

    found = await client.find_submission(spring(sim), "run-find")
    missing = await client.find_submission(spring(sim), "run-never-sent")

    assert found is not None and found.submission_id == made.submission_id
    assert found.accepted == 1
    assert [i["record"]["customerid"] for i in found.invalid] == ["cust-2"]
    assert missing is None


async def test_rejected_records_list_the_invalid_ones_with_errors(
    client: ZapPostClient, sim: ZapPostSim
) -> None:
    made = await client.create_submission(
        spring(sim),
        [record(1), record(2, postcode="NOT A POSTCODE")],
        reference="run-rejected",
    )

    rejected = await client.get_rejected_records(made.submission_id)

    assert len(rejected) == 1
    assert rejected[0]["record"]["customerid"] == "cust-2"
    assert any("not a valid UK postcode" in e for e in rejected[0]["errors"])


async def test_wrong_password_is_unauthorized_and_never_revealed(
    server: tuple[ZapPostSim, ServerHandle], sim: ZapPostSim, tmp_path: Any
) -> None:
    open_database(f"sqlite:///{tmp_path / 'zaptui.db'}")
    wrong = "zp-wrong-password-1234"
    async with ZapPostClient(
        sim.api_key,
        wrong,
        base_url=server[1].url,
        api_log=DatabaseApiLog(),
        retry=RetryPolicy(attempts=1),
    ) as zap:
        with pytest.raises(Unauthorized) as caught:
            await zap.get_campaigns()
        with pytest.raises(Unauthorized):
            await zap.create_submission(spring(sim), [record(1)], reference="run-401")
        shown = repr(zap)

    assert "401" in str(caught.value)
    rows = list(ApiLogEntry.select().where(ApiLogEntry.service == "zappost"))
    assert len(rows) == 2
    assert [row.status for row in rows] == [401, 401]
    stored = json.dumps([row.__data__ for row in rows], default=str)
    for secret in (wrong, sim.api_password, sim.api_key):
        assert secret not in stored
        assert secret not in str(caught.value)
        assert secret not in shown
    assert rows[1].method == "POST"
    assert sim.mailed() == []


async def test_server_errors_are_retried_without_duplicate_mailing(
    client: ZapPostClient, sim: ZapPostSim, sleeps: Sleeps
) -> None:
    sim.faults.add("zappost", "submit", "5xx", count=2, status=503)

    result = await client.create_submission(
        spring(sim), [record(n) for n in range(10)], reference="run-5xx"
    )

    assert result.accepted == 10
    assert len(sleeps.delays) == 2
    assert len(sim.mailed()) == 10
    assert sim.duplicates() == []


async def test_lost_answer_after_creation_is_found_not_resent(
    client: ZapPostClient, sim: ZapPostSim
) -> None:
    sim.faults.add(COMMITTED_SERVICE, "submit", "5xx", count=1, status=502)

    result = await client.create_submission(
        spring(sim), [record(n) for n in range(10)], reference="run-lost"
    )

    assert result.replayed
    assert result.accepted == 10
    assert len(sim.submissions()) == 1
    assert len(sim.mailed()) == 10


async def test_dropped_connection_is_retried_without_duplicate_mailing(
    client: ZapPostClient, sim: ZapPostSim
) -> None:
    sim.faults.add("zappost", "submit", "drop", count=1)
    sim.faults.add(COMMITTED_SERVICE, "submit", "drop", count=1)

    result = await client.create_submission(
        spring(sim), lambda: (record(n) for n in range(10)), reference="run-drop"
    )

    assert result.submission_id
    assert len(sim.submissions()) == 1
    assert len(sim.mailed()) == 10
    assert sim.duplicates() == []


async def test_slow_answer_times_out_and_the_submission_is_found(
    server: tuple[ZapPostSim, ServerHandle], sim: ZapPostSim, sleeps: Sleeps
) -> None:
    sim.faults.add(COMMITTED_SERVICE, "submit", "slow", count=1, delay=1.0)

    async with ZapPostClient(
        sim.api_key,
        sim.api_password,
        base_url=server[1].url,
        retry=RetryPolicy(attempts=3, base_delay=0.01),
        timeout=0.3,
        sleep=sleeps,
    ) as zap:
        result = await zap.create_submission(
            spring(sim), [record(n) for n in range(3)], reference="run-slow"
        )

    assert result.replayed and result.accepted == 3
    assert len(sim.mailed()) == 3


async def test_lasting_outage_raises_unavailable(
    client: ZapPostClient, sim: ZapPostSim
) -> None:
    sim.faults.add("zappost", "*", "5xx", count=None, status=500)

    with pytest.raises(Unavailable) as caught:
        await client.create_submission(spring(sim), [record(1)], reference="run-down")

    assert "500" in str(caught.value)
    sim.faults.clear()
    assert sim.mailed() == []


async def test_one_shot_iterator_is_not_resent_blindly(
    client: ZapPostClient, sim: ZapPostSim
) -> None:
    sim.faults.add("zappost", "submit", "5xx", count=1)

    with pytest.raises(Unavailable) as caught:
        await client.create_submission(
            spring(sim), iter([record(1), record(2)]), reference="run-once"
        )

    assert "one-shot" in str(caught.value)
    assert sim.mailed() == []


async def test_html_page_and_malformed_json_give_clear_errors(
    client: ZapPostClient, sim: ZapPostSim
) -> None:
    sim.faults.add("zappost", "campaigns", "html403", count=1)
    sim.faults.add("zappost", "scheduled_sends", "malformed", count=1)

    with pytest.raises(ZapPostError) as denied:
        await client.get_campaigns()
    with pytest.raises(ZapPostError) as garbled:
        await client.get_scheduled_sends()

    assert "403" in str(denied.value)
    assert "not JSON" in str(garbled.value)


async def test_unknown_scheduled_send_is_an_invalid_request(
    client: ZapPostClient, sim: ZapPostSim
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await client.create_submission(
            spring(sim),
            [record(1)],
            reference="run-send",
            scheduled_send_id="00000000-0000-4000-8000-000000000000",
        )

    assert any("scheduledSendId" in m for m in caught.value.messages)


async def test_twenty_thousand_records_are_streamed_and_all_arrive(
    server: tuple[ZapPostSim, ServerHandle], sim: ZapPostSim, tmp_path: Any
) -> None:
    open_database(f"sqlite:///{tmp_path / 'zaptui.db'}")

    async def records() -> Any:
        for n in range(20_000):
            yield record(n)

    async with ZapPostClient(
        sim.api_key, sim.api_password, base_url=server[1].url, api_log=DatabaseApiLog()
    ) as zap:
        result = await zap.create_submission(
            spring(sim), records(), reference="run-big"
        )

    assert result.accepted == 20_000
    assert len(sim.mailed()) == 20_000
    assert sim.duplicates() == []
    row = ApiLogEntry.get(ApiLogEntry.method == "POST")
    assert row.request_body.endswith("20000 records streamed")
    assert len(row.request_body) < 5_000
    # The answer lists every accepted record; it was read as a stream and
    # the log keeps its beginning.
    assert row.response_body.startswith("{")
    assert '"validRecords"' in row.response_body
    assert row.response_body.endswith("more characters]")
    assert len(row.response_body) < MAX_BODY_CHARS + 100


async def test_body_is_produced_lazily_in_bounded_chunks(
    client: ZapPostClient,
) -> None:
    pulled = 0

    def records() -> Iterator[dict[str, Any]]:
        nonlocal pulled
        for n in range(5_000):
            pulled += 1
            yield record(n)

    stats = _StreamStats()
    body = client._submission_body("c", None, False, "r", records(), stats)
    first = await anext(body)
    pulled_at_first_chunk = pulled
    rest = [chunk async for chunk in body]

    assert pulled_at_first_chunk < 1_000
    assert max(len(c) for c in [first, *rest]) < CHUNK_BYTES + 1_000
    document = json.loads(b"".join([first, *rest]))
    assert len(document["submissions"]) == 5_000 == stats.count
    assert set(document) == {
        "campaignId",
        "scheduledSendId",
        "onlyValidRecords",
        "submissions",
    }


async def test_a_failing_api_log_never_fails_a_call(
    server: tuple[ZapPostSim, ServerHandle],
    sim: ZapPostSim,
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BrokenLog:
        def record(self, call: Any, secrets: Any = ()) -> None:
            raise RuntimeError("disk full")

    async with ZapPostClient(
        sim.api_key,
        sim.api_password,
        base_url=server[1].url,
        api_log=BrokenLog(),
        timeout=5.0,
    ) as zap:
        campaigns = await zap.get_campaigns()

    assert len(campaigns) == 3
    assert "the API log refused a ZAP~POST call" in caplog.text
    assert sim.api_password not in caplog.text
