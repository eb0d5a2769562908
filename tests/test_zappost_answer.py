"""Reading ZAP~POST's answer to a submission as it arrives."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zaptui.zappost.answer import AnswerError, read_answer

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
answers = st.dictionaries(
    st.sampled_from(["submissionId", "validRecords", "invalidRecords", "x", "é"]),
    json_values,
    max_size=5,
)


async def _chunks(data: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    start = 0
    for size in sizes:
        if start >= len(data):
            break
        yield data[start : start + size]
        start += size
    if start < len(data):
        yield data[start:]


def read(data: bytes, sizes: list[int], keep: int = 50) -> Any:
    return asyncio.run(read_answer(_chunks(data, sizes), keep))


@settings(max_examples=300, deadline=None)
@given(
    answers,
    st.lists(st.integers(1, 9), max_size=200),
    st.sampled_from([None, 1, 2]),
    st.booleans(),
)
def test_an_answer_reads_as_json_loads_reads_it(
    body: dict[str, Any], sizes: list[int], indent: int | None, ascii_only: bool
) -> None:
    text = json.dumps(body, indent=indent, ensure_ascii=ascii_only)

    answer = read(text.encode(), sizes)

    expected = json.loads(text)
    listed = expected.get("validRecords")
    if isinstance(listed, list):
        assert answer.counted == len(listed)
        del expected["validRecords"]
    else:
        assert answer.counted is None
    assert answer.body == expected
    assert answer.head == text[:50]
    assert answer.length == len(text)


@settings(max_examples=200, deadline=None)
@given(answers, st.data())
def test_a_cut_off_answer_is_refused(body: dict[str, Any], data: st.DataObject):
    text = json.dumps(body)
    cut = data.draw(st.integers(1, len(text) - 1))

    with pytest.raises(AnswerError):
        read(text[:cut].encode(), [7] * 1000)


@pytest.mark.parametrize(
    "text",
    ["", "{", '{"a" 1}', '{"a": 1,}', '{"validRecords": [1,]}', '{"a": 1} x', "nul"],
)
def test_what_is_not_json_is_refused(text: str) -> None:
    with pytest.raises(AnswerError):
        read(text.encode(), [3] * 10)


def test_a_long_list_of_accepted_records_is_counted_not_kept() -> None:
    entries = [{"index": n, "customerid": f"P{n:06d}"} for n in range(20_000)]
    text = json.dumps({"submissionId": "S1", "validRecords": entries})

    answer = read(text.encode(), [65_536] * 100)

    assert answer.counted == 20_000
    assert answer.body == {"submissionId": "S1"}
