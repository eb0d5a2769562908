"""The ZAP~POST API client: campaigns, scheduled sends and streamed submissions.

Submissions are streamed: the JSON body is produced record by record while it
is sent, so a submission of 100,000 records costs no more memory than one of
ten. ZAP~POST's submission request allows no properties of ours, so the run
reference travels inside every record's `customdata`; ZAP~POST (and the
simulator) recognise a reference already submitted for a campaign, which makes
a resend after an ambiguous failure safe.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import httpx

from zaptui.apilog import (
    MAX_BODY_CHARS,
    ApiLog,
    BodyHead,
    NullApiLog,
    redact_text,
    scrub_http_library_logs,
    send_recorded,
)
from zaptui.zappost.answer import Answer, AnswerError, read_answer
from zaptui.zappost.errors import (
    InvalidRequest,
    NotFound,
    Unauthorized,
    Unavailable,
    ZapPostError,
)

log = logging.getLogger(__name__)
scrub_http_library_logs()

DEFAULT_BASE_URL = "https://api.zappost.com"
REFERENCE_FIELD = "zaptui_reference"
# Records are encoded in batches so a big submission is sent in chunks of
# roughly this many bytes rather than one tiny write per record.
CHUNK_BYTES = 64 * 1024
LOGGED_SAMPLE_RECORDS = 3

Record = dict[str, Any]


class EncodedRecord(str):
    """A record already encoded as a JSON object, sent as the text it is.

    Records staged in the database are kept as JSON text; sending that text
    saves decoding and encoding every record again. Text that does not carry
    the submission's reference is decoded, tagged and encoded like any record.
    """


Records = Iterable[Record | EncodedRecord] | AsyncIterable[Record | EncodedRecord]
RecordSource = Records | Callable[[], Records]


@dataclass(frozen=True)
class SubmissionResult:
    """What ZAP~POST made of a submission: its id, what it accepted, what it refused."""

    submission_id: str
    accepted: int
    invalid: list[dict[str, Any]]  # each {"record": {...}, "errors": [...]}
    url: str  # the link an operator opens for the submission
    replayed: bool  # ZAP~POST recognised our reference and created nothing new


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry calls that failed for passing reasons."""

    attempts: int = 4
    base_delay: float = 1.0
    max_delay: float = 30.0
    jitter: float = 0.1

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (from 1)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        delay = min(self.base_delay * 2 ** (attempt - 1), self.max_delay)
        return delay * (1 + random.uniform(0, self.jitter))


@dataclass
class _StreamStats:
    """What a streamed submission body has produced so far, for the API log."""

    started: bool = False
    finished: bool = False
    count: int = 0
    sample: list[Record] = field(default_factory=list)


class _Records:
    """A records argument, opened afresh for each attempt when that is possible."""

    def __init__(self, source: RecordSource) -> None:
        self._source = source
        # A list, a callable or any iterable that is not itself an iterator can
        # be read again; a generator or iterator can be read only once.
        self.reusable = callable(source) or not isinstance(
            source, Iterator | AsyncIterator
        )

    def open(self) -> Records:
        """The records to send in this attempt."""
        if callable(self._source):
            return self._source()
        return self._source


def _retry_after(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds, when it is a number."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _transient_problem(
    response: httpx.Response | None, error: Exception | None
) -> tuple[str, float | None] | None:
    """Why an attempt is worth retrying (with any Retry-After), or None if not."""
    if isinstance(error, httpx.TimeoutException):
        return "timed out", None
    if isinstance(error, httpx.TransportError):
        return f"dropped the connection ({type(error).__name__})", None
    if response is not None and (
        response.status_code == 429 or response.status_code >= 500
    ):
        return f"answered HTTP {response.status_code}", _retry_after(response)
    return None


def _error_messages(body: Any) -> list[str]:
    """The human messages in an error body, whatever shape it takes."""
    messages: list[str] = []
    if not isinstance(body, dict):
        return messages
    errors = body.get("errors")
    if isinstance(errors, list):
        for item in errors:
            if isinstance(item, dict):
                text = item.get("message") or item.get("detail") or item.get("title")
                if text:
                    messages.append(str(text))
            elif item:
                messages.append(str(item))
    elif isinstance(errors, dict):
        # ASP.NET validation problems: {"field": ["message", ...]}
        for name, items in errors.items():
            for item in items if isinstance(items, list) else [items]:
                messages.append(f"{name}: {item}")
    if not messages:
        for key in ("message", "detail", "title"):
            if body.get(key):
                messages.append(str(body[key]))
                break
    return messages


class _AnswerReader:
    """Reads a submission's answer as it arrives (see `zaptui.zappost.answer`).

    A success is read as a stream; any other answer is read whole, as usual.
    `answer` is None when a success's body was not JSON.
    """

    def __init__(self) -> None:
        self.answer: Answer | None = None

    async def read(self, response: httpx.Response) -> str | None:
        """Read the body; what of it the API log keeps (None: the whole)."""
        if not 200 <= response.status_code < 300:
            await response.aread()
            return None
        answer = Answer()
        try:
            await read_answer(response.aiter_bytes(), MAX_BODY_CHARS + 1024, answer)
        except AnswerError as error:
            log.warning("ZAP~POST's answer to a submission is not JSON: %s", error)
        else:
            self.answer = answer
        return BodyHead(answer.head, answer.length)


def _invalid_entry(item: Any) -> dict[str, Any]:
    """One refused record as {"record": {...}, "errors": [...]}."""
    if isinstance(item, dict) and "record" in item:
        errors = item.get("errors") or []
        if not isinstance(errors, list):
            errors = [errors]
        return {"record": item["record"], "errors": [str(e) for e in errors]}
    return {"record": item, "errors": []}


def _as_list(body: Any, *keys: str) -> list[dict[str, Any]]:
    """A list from a body that is a list or wraps one under a known key."""
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        for key in keys:
            if isinstance(body.get(key), list):
                return body[key]
    raise ZapPostError("ZAP~POST answered with a body of an unexpected shape.")


def web_base_url(api_base_url: str) -> str:
    """Where operators open ZAP~POST pages, derived from the API base URL."""
    parsed = urlparse(api_base_url)
    host = parsed.hostname or ""
    if host.startswith("api."):
        # TODO(zappost-links): confirm the web app's address and submission path.
        return f"{parsed.scheme}://app.{host[4:]}"
    return api_base_url.rstrip("/")


class ZapPostClient:
    """Talks to one ZAP~POST API consumer over HTTP Basic auth."""

    def __init__(
        self,
        api_key: str,
        api_password: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_log: ApiLog | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        web_url: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.web_url = (web_url or web_base_url(self.base_url)).rstrip("/")
        self._api_key = api_key
        self._secrets = [api_key, api_password]
        self._api_log: ApiLog = api_log or NullApiLog()
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            auth=httpx.BasicAuth(api_key, api_password),
            transport=transport,
            timeout=httpx.Timeout(timeout),
            headers={"Accept": "application/json"},
        )

    def __repr__(self) -> str:
        return f"ZapPostClient(base_url={self.base_url!r})"

    async def __aenter__(self) -> ZapPostClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    def submission_url(self, campaign_id: str, submission_id: str) -> str:
        """The page an operator opens to see a submission in ZAP~POST."""
        return f"{self.web_url}/campaigns/{campaign_id}/submissions/{submission_id}"

    # -- reading ---------------------------------------------------------------

    async def get_campaigns(self) -> list[dict[str, Any]]:
        """The account's campaigns."""
        body = await self._get_json("/api/v1/campaigns", "list campaigns")
        return _as_list(body, "campaigns", "items", "data")

    async def get_campaign(self, campaign_id: str) -> dict[str, Any]:
        """One campaign with its field definitions (`fields`)."""
        body = await self._get_json(
            f"/api/v1/campaign/{campaign_id}", f"read campaign {campaign_id}"
        )
        if not isinstance(body, dict):
            raise ZapPostError("ZAP~POST answered with a body of an unexpected shape.")
        return body

    async def get_scheduled_sends(self) -> list[dict[str, Any]]:
        """Upcoming sends a submission can join."""
        body = await self._get_json("/api/v1/ScheduledSends", "list scheduled sends")
        return _as_list(body, "scheduledSends", "items", "data")

    async def get_submissions(self, campaign_id: str) -> list[dict[str, Any]]:
        """The submissions of a campaign."""
        body = await self._get_json(
            f"/api/v1/submissions/{campaign_id}",
            f"list the submissions of campaign {campaign_id}",
        )
        return _as_list(body, "submissions", "items", "data")

    async def get_rejected_records(self, submission_id: str) -> list[dict[str, Any]]:
        """Records of a submission refused by validation or cleansing."""
        body = await self._get_json(
            f"/api/v1/RejectedRecords/{submission_id}",
            f"read the rejected records of submission {submission_id}",
        )
        return _as_list(body, "submissions", "records")

    async def get_returned_zaps(self, submission_id: str) -> list[dict[str, Any]]:
        """Mail of a submission that came back, with its return reason."""
        body = await self._get_json(
            f"/api/v1/ReturnedZaps/{submission_id}",
            f"read the returned ZAPs of submission {submission_id}",
        )
        return _as_list(body, "returnedZaps", "items")

    async def find_submission(
        self, campaign_id: str, reference: str
    ) -> SubmissionResult | None:
        """The submission of a campaign made with our run reference, if any."""
        for item in await self.get_submissions(campaign_id):
            if isinstance(item, dict) and item.get("reference") == reference:
                submission_id = str(item.get("id") or item.get("submissionId") or "")
                rejected = await self.get_rejected_records(submission_id)
                return SubmissionResult(
                    submission_id=submission_id,
                    accepted=int(item.get("recordCount") or 0),
                    invalid=[_invalid_entry(entry) for entry in rejected],
                    url=self.submission_url(campaign_id, submission_id),
                    replayed=True,
                )
        return None

    # -- submitting ------------------------------------------------------------

    async def create_submission(
        self,
        campaign_id: str,
        records: RecordSource,
        *,
        reference: str,
        scheduled_send_id: str | None = None,
        only_valid_records: bool = False,
    ) -> SubmissionResult:
        """Send records to a campaign as one submission, streamed.

        `records` may be a list, any re-iterable collection, an (async)
        iterable or a zero-argument callable returning a fresh one. A one-shot
        iterator cannot be sent again, so after an ambiguous failure the call
        can only recover if ZAP~POST already holds the submission; pass a list
        or a callable to allow a full resend.
        """
        source = _Records(records)
        what = f"create a submission for campaign {campaign_id}"
        problem = "failed"
        for attempt in range(1, self._retry.attempts + 1):
            if attempt > 1:
                found = await self._find_after_failure(campaign_id, reference)
                if found is not None:
                    log.info(
                        "submission %s found after a failed attempt (reference %s)",
                        found.submission_id,
                        reference,
                    )
                    return found
                if not source.reusable:
                    raise Unavailable(
                        f"ZAP~POST {problem} while receiving the submission, and the "
                        "records came from a one-shot iterator, so they cannot be "
                        "sent again."
                    )

            stats = _StreamStats()
            answer = _AnswerReader()
            body = self._submission_body(
                campaign_id,
                scheduled_send_id,
                only_valid_records,
                reference,
                source.open(),
                stats,
            )
            response, error = await self._attempt(
                "POST",
                "/api/v1/submissions",
                content=body,
                summary=lambda s=stats: self._summary(
                    campaign_id, scheduled_send_id, only_valid_records, s
                ),
                read=answer.read,
            )
            if not stats.started and not source.reusable:
                # Nothing was read from the iterator, so it is still whole.
                source.reusable = True
            transient = _transient_problem(response, error)
            if transient is None:
                if error is not None:
                    raise error
                assert response is not None
                return self._submission_result(campaign_id, response, what, answer)

            problem, retry_after = transient
            if attempt < self._retry.attempts:
                delay = self._retry.delay(attempt, retry_after)
                log.warning(
                    "ZAP~POST %s on submission %s; retrying in %.1fs (%d of %d)",
                    problem,
                    reference,
                    delay,
                    attempt,
                    self._retry.attempts,
                )
                await self._sleep(delay)

        found = await self._find_after_failure(campaign_id, reference)
        if found is not None:
            return found
        raise Unavailable(
            f"ZAP~POST {problem} {self._retry.attempts} times; could not {what}.",
            status=response.status_code if response is not None else None,
        )

    async def _find_after_failure(
        self, campaign_id: str, reference: str
    ) -> SubmissionResult | None:
        """Look for our submission after an ambiguous failure; None if unsure."""
        try:
            return await self.find_submission(campaign_id, reference)
        except ZapPostError as exc:
            # Resending stays safe: ZAP~POST recognises the reference.
            log.warning("could not check for submission %s: %s", reference, exc)
            return None

    async def _submission_body(
        self,
        campaign_id: str,
        scheduled_send_id: str | None,
        only_valid_records: bool,
        reference: str,
        records: Records,
        stats: _StreamStats,
    ) -> AsyncIterator[bytes]:
        """The PartSubmissionRequest JSON, produced a chunk at a time."""
        stats.started = True
        head = json.dumps(
            {
                "campaignId": campaign_id,
                "scheduledSendId": scheduled_send_id,
                "onlyValidRecords": only_valid_records,
            },
            separators=(",", ":"),
        )
        buffer: list[str] = [head[:-1], ',"submissions":[']
        size = 0

        # How the reference reads inside an encoded record's customdata. Outside
        # a string a quote is never escaped, so the text cannot come from a value.
        tag = f'"{REFERENCE_FIELD}":{json.dumps(reference)}'

        def encode(record: Record | EncodedRecord) -> str:
            if isinstance(record, EncodedRecord):
                if record.startswith("{") and tag in record:
                    if len(stats.sample) < LOGGED_SAMPLE_RECORDS:
                        stats.sample.append(json.loads(record))
                    stats.count += 1
                    return str(record) if stats.count == 1 else "," + record
                record = json.loads(record)
            if not isinstance(record, dict):
                raise TypeError("each submission record must be a dict")
            customdata = record.get("customdata")
            customdata = dict(customdata) if isinstance(customdata, dict) else {}
            customdata[REFERENCE_FIELD] = reference
            tagged = {**record, "customdata": customdata}
            if len(stats.sample) < LOGGED_SAMPLE_RECORDS:
                stats.sample.append(tagged)
            text = json.dumps(tagged, separators=(",", ":"), default=str)
            stats.count += 1
            return text if stats.count == 1 else "," + text

        if isinstance(records, AsyncIterable):
            async for record in records:
                text = encode(record)
                buffer.append(text)
                size += len(text)
                if size >= CHUNK_BYTES:
                    yield "".join(buffer).encode()
                    buffer, size = [], 0
        else:
            for record in records:
                text = encode(record)
                buffer.append(text)
                size += len(text)
                if size >= CHUNK_BYTES:
                    yield "".join(buffer).encode()
                    buffer, size = [], 0
                    # Let other tasks run while a large iterable is encoded.
                    await asyncio.sleep(0)
        buffer.append("]}")
        stats.finished = True
        yield "".join(buffer).encode()

    def _summary(
        self,
        campaign_id: str,
        scheduled_send_id: str | None,
        only_valid_records: bool,
        stats: _StreamStats,
    ) -> str:
        """A streamed body as the API log keeps it: the first records and a count."""
        head = json.dumps(
            {
                "campaignId": campaign_id,
                "scheduledSendId": scheduled_send_id,
                "onlyValidRecords": only_valid_records,
                "submissions": stats.sample,
            },
            ensure_ascii=False,
            default=str,
        )
        state = "streamed" if stats.finished else "streamed before the call ended"
        return f"{head}\n… {stats.count} records {state}"

    def _submission_result(
        self,
        campaign_id: str,
        response: httpx.Response,
        what: str,
        answer: _AnswerReader,
    ) -> SubmissionResult:
        """Turn a submission answer into a result, or raise its error."""
        if response.status_code >= 400:
            raise self._error(response, what)
        if answer.answer is None:
            raise ZapPostError(
                f"ZAP~POST answered HTTP {response.status_code} with a body that "
                "is not JSON.",
                status=response.status_code,
            )
        body = answer.answer.body
        if not isinstance(body, dict):
            raise ZapPostError("ZAP~POST answered the submission with an odd body.")
        submission_id = str(body.get("submissionId") or body.get("id") or "")
        if not submission_id:
            raise ZapPostError("ZAP~POST accepted the submission but sent no id.")
        valid = answer.answer.counted
        if valid is None:
            listed = body.get("validRecords")
            valid = len(listed) if isinstance(listed, list) else None
        accepted = valid if valid is not None else int(body.get("recordCount") or 0)
        invalid = [_invalid_entry(item) for item in body.get("invalidRecords") or []]
        # 201 means a new submission; 200 means ZAP~POST already had this one.
        replayed = response.status_code == 200
        log.info(
            "submission %s for campaign %s: %d accepted, %d invalid%s",
            submission_id,
            campaign_id,
            accepted,
            len(invalid),
            " (already held)" if replayed else "",
        )
        return SubmissionResult(
            submission_id=submission_id,
            accepted=accepted,
            invalid=invalid,
            url=self.submission_url(campaign_id, submission_id),
            replayed=replayed,
        )

    # -- plumbing --------------------------------------------------------------

    async def _get_json(self, path: str, what: str) -> Any:
        """GET with retries; the parsed JSON body or a typed error."""
        problem = "failed"
        response: httpx.Response | None = None
        for attempt in range(1, self._retry.attempts + 1):
            response, error = await self._attempt("GET", path)
            transient = _transient_problem(response, error)
            if transient is None:
                if error is not None:
                    raise error
                assert response is not None
                if response.status_code >= 400:
                    raise self._error(response, what)
                return self._body(response)
            problem, retry_after = transient
            if attempt < self._retry.attempts:
                delay = self._retry.delay(attempt, retry_after)
                log.warning(
                    "ZAP~POST %s on %s; retrying in %.1fs (%d of %d)",
                    problem,
                    path,
                    delay,
                    attempt,
                    self._retry.attempts,
                )
                await self._sleep(delay)
        raise Unavailable(
            f"ZAP~POST {problem} {self._retry.attempts} times; could not {what}.",
            status=response.status_code if response is not None else None,
        )

    async def _attempt(
        self,
        method: str,
        path: str,
        *,
        content: AsyncIterator[bytes] | None = None,
        summary: Callable[[], str] | None = None,
        read: Callable[[httpx.Response], Awaitable[str | None]] | None = None,
    ) -> tuple[httpx.Response | None, Exception | None]:
        """Send once and log the call; a transport failure is returned, not raised."""
        request = self._http.build_request(
            method,
            path,
            content=content,
            headers={"Content-Type": "application/json"} if content else None,
        )
        return await send_recorded(
            self._http,
            request,
            service="zappost",
            api_log=self._api_log,
            secrets=self._secrets,
            request_body=summary,
            read=read,
        )

    def _body(self, response: httpx.Response) -> Any:
        """The JSON body of a successful response."""
        try:
            return response.json()
        except ValueError:
            raise ZapPostError(
                f"ZAP~POST answered HTTP {response.status_code} with a body that "
                "is not JSON.",
                status=response.status_code,
            ) from None

    def _error(self, response: httpx.Response, what: str) -> ZapPostError:
        """The typed error for a 4xx response, in one plain sentence."""
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        messages = [self._clean(text) for text in _error_messages(body)]
        if status == 401:
            return Unauthorized(
                "ZAP~POST refused the API key and password (HTTP 401); "
                "check them in Settings.",
                status=status,
            )
        if status == 404:
            return NotFound(
                f"ZAP~POST found nothing there (HTTP 404); could not {what}.",
                status=status,
            )
        if status in (400, 422):
            invalid = []
            if isinstance(body, dict):
                invalid = [_invalid_entry(i) for i in body.get("invalidRecords") or []]
            detail = "; ".join(messages) if messages else "no reason given"
            return InvalidRequest(
                f"ZAP~POST refused the request to {what} (HTTP {status}): {detail}.",
                status=status,
                messages=messages,
                invalid_records=invalid,
            )
        if status == 403:
            return ZapPostError(
                f"ZAP~POST denied access (HTTP 403); could not {what}.", status=status
            )
        detail = f": {'; '.join(messages)}" if messages else ""
        return ZapPostError(
            f"ZAP~POST answered HTTP {status}; could not {what}{detail}.",
            status=status,
        )

    def _clean(self, text: str) -> str:
        """Text from outside with our secrets removed."""
        return redact_text(text, self._secrets)
