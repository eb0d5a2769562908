"""ZAP~POST's answer to a submission, read as it arrives.

The answer lists every accepted record (`validRecords`, about 55 bytes each:
5.5 MB for 100,000 records), and only their number is needed. Reading it as a
stream, counting those entries as they pass and decoding everything else as
usual keeps a sync's memory flat whatever the size of its submission.

The reader accepts exactly the JSON texts `json.loads` accepts, with the same
result for every member but `validRecords`, which comes back as a count.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

_WHITESPACE = " \t\n\r"
_NUMBER_TAIL = re.compile(r"[0-9.eE+\-]*")
_SEPARATOR = re.compile(r"[ \t\n\r]*([,\]])[ \t\n\r]*")
_DECODER = json.JSONDecoder()
COUNTED_KEY = "validRecords"


class AnswerError(ValueError):
    """The answer is not JSON (the text says where it went wrong)."""


@dataclass
class Answer:
    """What was read: the members of the answer, and how its text began."""

    body: Any = None
    counted: int | None = None  # entries of validRecords, when it was a list
    head: str = ""  # the first characters, for the API log
    length: int = 0  # characters in the whole answer


class _Text:
    """The answer's text, a window of it at a time, decoded as it arrives."""

    def __init__(self, chunks: AsyncIterator[bytes], answer: Answer, keep: int):
        self._chunks = chunks
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._answer = answer
        self._keep = keep
        self.buffer = ""
        self.pos = 0
        self.ended = False

    async def more(self, target: int = 0) -> bool:
        """Read at least one more chunk, and on until `target` characters wait.

        False at the end of the answer. The new text is joined to what waits
        once per call, so a long value costs a few joins, not one per chunk.
        """
        parts = [self.buffer[self.pos :]]
        size = len(parts[0])
        grew = False
        while not self.ended and (not grew or size < target):
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self.ended = True
                text = self._decoder.decode(b"", final=True)
            else:
                text = self._decoder.decode(chunk)
            if text:
                self._note(text)
                parts.append(text)
                size += len(text)
                grew = True
        if grew:
            self.buffer = "".join(parts)
            self.pos = 0
        return grew

    def _note(self, text: str) -> None:
        answer = self._answer
        room = self._keep - len(answer.head)
        if room > 0:
            answer.head += text[:room]
        answer.length += len(text)

    async def peek(self) -> str:
        """The next character that is not whitespace ("" at the end)."""
        while True:
            while self.pos < len(self.buffer) and self.buffer[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.buffer):
                return self.buffer[self.pos]
            if not await self.more():
                return ""

    async def expect(self, characters: str) -> str:
        """Take one of `characters`, the next thing in the text."""
        found = await self.peek()
        if not found or found not in characters:
            raise AnswerError(
                f"expected {' or '.join(repr(c) for c in characters)} "
                f"at character {self._answer.length - len(self.buffer) + self.pos}"
            )
        self.pos += 1
        return found

    async def value(self) -> Any:
        """The next whole JSON value, reading on until it is complete."""
        await self.peek()
        while True:
            waiting = len(self.buffer) - self.pos
            try:
                value, end = _DECODER.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as error:
                # Only more text tells an unfinished value from a wrong one;
                # twice as much is read before trying again.
                if not await self.more(2 * waiting):
                    raise AnswerError(str(error)) from None
                continue
            # A number that reaches the end of what waits ("12" of "123", "1"
            # of "1.5") may go on.
            unfinished = _NUMBER_TAIL.fullmatch(self.buffer, end) is not None
            if not unfinished or not await self.more(2 * waiting):
                self.pos = end
                return value


async def read_answer(
    chunks: AsyncIterator[bytes], keep: int, answer: Answer | None = None
) -> Answer:
    """Read a submission's answer; `keep` characters of it are kept as `head`.

    Raises AnswerError when the text is not JSON; `answer`, when given, is
    filled as far as the text was read.
    """
    answer = answer if answer is not None else Answer()
    text = _Text(chunks, answer, keep)
    if await text.peek() != "{":
        answer.body = await text.value()
    else:
        answer.body = await _read_object(text, answer)
    if await text.peek():
        raise AnswerError("extra data after the answer")
    return answer


async def _read_object(text: _Text, answer: Answer) -> dict[str, Any]:
    """The top-level object, its validRecords counted rather than kept."""
    members: dict[str, Any] = {}
    await text.expect("{")
    if await text.peek() == "}":
        text.pos += 1
        return members
    while True:
        if await text.peek() != '"':
            raise AnswerError("expected a member name in the answer")
        name = await text.value()
        await text.expect(":")
        if name == COUNTED_KEY and await text.peek() == "[":
            members.pop(name, None)
            answer.counted = await _count_items(text)
        else:
            if name == COUNTED_KEY:
                answer.counted = None
            members[name] = await text.value()
        if await text.expect(",}") == "}":
            return members


async def _count_items(text: _Text) -> int:
    """How many values a list holds, each read and let go."""
    await text.expect("[")
    if await text.peek() == "]":
        text.pos += 1
        return 0
    count = 0
    while True:
        # What the buffer holds whole is counted in one tight loop...
        buffer, pos = text.buffer, text.pos
        try:
            while True:
                _, end = _DECODER.raw_decode(buffer, pos)
                separator = _SEPARATOR.match(buffer, end)
                if separator is None:
                    break  # the value may go on past the buffer's end
                count += 1
                pos = separator.end()
                if separator.group(1) == "]":
                    text.pos = pos
                    return count
                if pos == len(buffer):
                    break
        except json.JSONDecodeError:
            pass
        text.pos = pos
        # ...and a value the buffer's end cuts through is read on.
        await text.value()
        count += 1
        if await text.expect(",]") == "]":
            return count
