"""A ZAP~POST simulator: campaigns, scheduled sends and submissions over ZAPI v1.

It follows the published API where it is known and documents its own choices
where it is not:

- `POST /api/v1/submissions` takes exactly a PartSubmissionRequest and answers
  201 with `{"submissionId", "campaignId", "recordCount", "validRecords":
  [{"index", "customerid"}], "invalidRecords": [{"index", "record",
  "errors": [...]}]}`. With `onlyValidRecords` true and any record invalid it
  answers 400 with the invalid records and creates nothing.
- A submission whose records carry a `customdata.zaptui_reference` already
  submitted to that campaign answers 200 with the existing submission and
  mails nothing new, which makes a client's resend safe.
- `GET /api/v1/submissions/{campaignId}` lists `{id, campaignId, createdDate,
  recordCount, invalidCount, reference, status, scheduledSendId}`.

Everything mailed is remembered, so tests can prove that no customer was
mailed twice (`mailed()`, `duplicates()`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import html
import json
import logging
import random
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from zaptui.clock import iso_z, utcnow
from zaptui.sim.asgi import (
    ASGIApp,
    JSONResponse,
    Request,
    Response,
    Router,
    Send,
    asgi_app,
)
from zaptui.sim.faults import Fault, FaultInjector

log = logging.getLogger(__name__)

SERVICE = "zappost"
# Faults for this service name fire after a submission has been stored, so a
# test can lose the answer to a request that did succeed (the ambiguous case).
COMMITTED_SERVICE = "zappost-committed"
REFERENCE_FIELD = "zaptui_reference"
STANDARD_FIELDS = (
    "customerid",
    "email",
    "salutation",
    "firstname",
    "surname",
    "companyname",
    "address1",
    "address2",
    "address3",
    "city",
    "postcode",
    "country",
    "customdata",
)
REQUIRED_FIELDS = ("address1", "city", "postcode")
MAX_LINE = 35  # the UK government standard for an address line
REQUEST_KEYS = {"campaignId", "scheduledSendId", "onlyValidRecords", "submissions"}
UK_COUNTRIES = {
    "",
    "gb",
    "gbr",
    "uk",
    "united kingdom",
    "great britain",
    "england",
    "scotland",
    "wales",
    "northern ireland",
}
# Outward code (A9, A99, AA9, AA99, A9A, AA9A) then inward code (9AA), without
# the space; letters per the Royal Mail rules in uk-address.md.
_POSTCODE = re.compile(
    r"^(?:GIR0AA|"
    r"(?:[A-PR-UWYZ][0-9][0-9]?"
    r"|[A-PR-UWYZ][A-HK-Y][0-9][0-9]?"
    r"|[A-PR-UWYZ][0-9][ABCDEFGHJKSTUW]"
    r"|[A-PR-UWYZ][A-HK-Y][0-9][ABEHMNPRVWXY])"
    r"[0-9][ABD-HJLNP-UW-Z]{2})$"
)
_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)


class Mailed(NamedTuple):
    """One record accepted for printing."""

    campaign_id: str
    customerid: str
    submission_id: str
    reference: str


@dataclass
class Campaign:
    """A campaign with its custom field definitions."""

    id: str
    name: str
    description: str
    paper_stock_id: str
    paper_stock_name: str
    start_date: datetime
    fields: list[dict[str, Any]] = field(default_factory=list)
    status: str = "Published"

    def summary(self) -> dict[str, Any]:
        """The campaign as the campaigns list shows it."""
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "status": self.status,
            "paperStockId": self.paper_stock_id,
            "paperStockName": self.paper_stock_name,
            "startDate": iso_z(self.start_date),
        }

    def detail(self) -> dict[str, Any]:
        """The campaign with its fields."""
        return {**self.summary(), "fields": [dict(f) for f in self.fields]}


@dataclass
class Submission:
    """A stored submission and what became of its records."""

    id: str
    campaign_id: str
    created: datetime
    reference: str
    scheduled_send_id: str | None
    valid: list[tuple[int, dict[str, Any]]]
    invalid: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        """The submission as the submissions list shows it."""
        return {
            "id": self.id,
            "campaignId": self.campaign_id,
            "createdDate": iso_z(self.created),
            "recordCount": len(self.valid),
            "invalidCount": len(self.invalid),
            "reference": self.reference or None,
            "status": "Active",
            "scheduledSendId": self.scheduled_send_id,
        }

    def response(self) -> dict[str, Any]:
        """The answer to the POST that created it (and to any replay)."""
        return {
            "submissionId": self.id,
            "campaignId": self.campaign_id,
            "recordCount": len(self.valid),
            "validRecords": [
                {"index": index, "customerid": _text(record.get("customerid"))}
                for index, record in self.valid
            ],
            "invalidRecords": self.invalid,
        }


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def field_definition(
    name: str,
    label: str,
    *,
    required: bool = False,
    expected_values: list[str] | None = None,
    validation_expression: str | None = None,
    validation_message: str | None = None,
) -> dict[str, Any]:
    """A campaign custom field in ZAP~POST's shape."""
    return {
        "name": name,
        "label": label,
        "required": required,
        "expectedValues": expected_values,
        "validationExpression": validation_expression,
        "validationMessage": validation_message,
    }


def valid_postcode(value: str) -> bool:
    """Whether a postcode is well formed (any case, any spacing)."""
    return bool(_POSTCODE.match(re.sub(r"\s+", "", value).upper()))


def validate_record(record: Any, campaign: Campaign) -> list[str]:
    """The validation failures of one record, one per field at most."""
    if not isinstance(record, dict):
        return ["record: each submission must be a JSON object."]
    errors: list[str] = []
    for name in REQUIRED_FIELDS:
        if not _text(record.get(name)).strip():
            errors.append(f"{name}: {name} is required.")
    for name in ("address1", "address2", "address3", "city"):
        if len(_text(record.get(name)).strip()) > MAX_LINE:
            errors.append(f"{name}: lines must be at most {MAX_LINE} characters.")
    postcode = _text(record.get("postcode")).strip()
    if postcode and not valid_postcode(postcode):
        errors.append(f"postcode: {postcode!r} is not a valid UK postcode.")
    if _text(record.get("country")).strip().lower() not in UK_COUNTRIES:
        errors.append("country: only United Kingdom addresses can be mailed.")
    customdata = record.get("customdata")
    if customdata is not None and not isinstance(customdata, dict):
        errors.append("customdata: customdata must be a JSON object.")
        customdata = {}
    customdata = customdata or {}
    for definition in campaign.fields:
        name = definition["name"]
        label = definition.get("label") or name
        value = _text(customdata.get(name)).strip()
        if not value:
            if definition.get("required"):
                errors.append(f"{name}: {label} is required.")
            continue
        expected = definition.get("expectedValues")
        if expected and value not in expected:
            errors.append(f"{name}: {label} must be one of {', '.join(expected)}.")
            continue
        expression = definition.get("validationExpression")
        if expression and not re.search(expression, value):
            message = definition.get("validationMessage") or f"{label} is not valid."
            errors.append(f"{name}: {message}")
    return errors


class _FaultedResponse(Response):
    """A real response that a fault replaces, delays or cuts off when sent."""

    def __init__(self, fault: Fault, real: Response) -> None:
        super().__init__(real.status, real.body, real.headers, real.content_type)
        self._fault = fault
        self._real = real

    async def send(self, send: Send) -> None:
        if not await self._fault.apply(send, zappost_error):
            await self._real.send(send)


def zappost_error(status: int, code: str, title: str, detail: str) -> Response:
    """An error body in ZAP~POST's shape: a message and a list of errors."""
    return JSONResponse(
        {"message": detail or title, "errors": [detail or title]}, status
    )


def _invalid_request(message: str, errors: list[str] | None = None) -> Response:
    return JSONResponse({"message": message, "errors": errors or [message]}, 400)


class ZapPostSim:
    """One simulated ZAP~POST API consumer: its credentials, campaigns and mail."""

    def __init__(
        self,
        *,
        api_key: str,
        api_password: str,
        campaigns: list[Campaign] | None = None,
        scheduled_sends: list[dict[str, Any]] | None = None,
        faults: FaultInjector | None = None,
        seed: int = 1,
        returned_every: int = 50,
    ) -> None:
        self.api_key = api_key
        self.api_password = api_password
        self.faults = faults if faults is not None else FaultInjector()
        self.returned_every = returned_every
        self._random = random.Random(f"zappost-ids-{seed}")
        self._lock = threading.Lock()
        self._campaigns: dict[str, Campaign] = {c.id: c for c in campaigns or []}
        self._scheduled_sends: list[dict[str, Any]] = list(scheduled_sends or [])
        self._submissions: dict[str, Submission] = {}
        self._by_reference: dict[tuple[str, str], str] = {}
        self._mailed: list[Mailed] = []
        self._pending_records: list[tuple[str, dict[str, Any]]] = []
        self.router = self._build_router()
        self.app: ASGIApp = asgi_app(self.router, self.faults, SERVICE, zappost_error)

    def __repr__(self) -> str:
        return f"ZapPostSim(campaigns={len(self._campaigns)})"

    @classmethod
    def seeded(cls, seed: int = 1, faults: FaultInjector | None = None) -> ZapPostSim:
        """A simulator with the standard three campaigns and upcoming sends."""
        rng = random.Random(f"zappost-{seed}")

        def new_id() -> str:
            return str(uuid.UUID(int=rng.getrandbits(128), version=4))

        now = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
        a5 = (new_id(), "A5 Postcard")
        letter = (new_id(), "A4 Letter")
        campaigns = [
            Campaign(
                id=new_id(),
                name="Spring Sale A5 Postcard",
                description="Spring sale offer with a personal code.",
                paper_stock_id=a5[0],
                paper_stock_name=a5[1],
                start_date=now - timedelta(days=30),
                fields=[
                    field_definition(
                        "offer_code",
                        "Offer code",
                        validation_expression=r"^[A-Z0-9]{6}$",
                        validation_message="Offer code must be six capital letters "
                        "or digits.",
                    ),
                    field_definition(
                        "tier",
                        "Loyalty tier",
                        expected_values=["Gold", "Silver", "Bronze"],
                    ),
                ],
            ),
            Campaign(
                id=new_id(),
                name="Welcome Letter",
                description="A welcome letter for new subscribers.",
                paper_stock_id=letter[0],
                paper_stock_name=letter[1],
                start_date=now - timedelta(days=90),
            ),
            Campaign(
                id=new_id(),
                name="Win-back Postcard",
                description="Lapsed customers get a voucher.",
                paper_stock_id=a5[0],
                paper_stock_name=a5[1],
                start_date=now - timedelta(days=10),
                fields=[
                    field_definition(
                        "voucher_value",
                        "Voucher value",
                        expected_values=["£5", "£10", "£20"],
                    ),
                ],
            ),
        ]
        sends = [
            {
                "id": new_id(),
                "name": f"Send {(now + timedelta(days=days)).strftime('%d %b %Y')}",
                "sendDate": iso_z(now + timedelta(days=days, hours=9)),
                "cutOffDate": iso_z(now + timedelta(days=days - 1, hours=17)),
            }
            for days in (2, 9, 16)
        ]
        api_key = new_id()
        api_password = "zp-" + "".join(
            rng.choice("abcdefghijkmnpqrstuvwxyz23456789") for _ in range(24)
        )
        return cls(
            api_key=api_key,
            api_password=api_password,
            campaigns=campaigns,
            scheduled_sends=sends,
            faults=faults,
            seed=seed,
        )

    # -- the world, for tests and the control API ------------------------------

    def campaigns(self) -> list[Campaign]:
        """The campaigns, in the order they were added."""
        with self._lock:
            return list(self._campaigns.values())

    def campaign_named(self, name: str) -> Campaign:
        """The campaign with this name (KeyError if there is none)."""
        for campaign in self.campaigns():
            if campaign.name == name:
                return campaign
        raise KeyError(name)

    def add_campaign(self, campaign: Campaign) -> None:
        """Add (or replace) a campaign."""
        with self._lock:
            self._campaigns[campaign.id] = campaign

    def scheduled_sends(self) -> list[dict[str, Any]]:
        """The upcoming sends."""
        with self._lock:
            return [dict(send) for send in self._scheduled_sends]

    def submissions(self, campaign_id: str | None = None) -> list[Submission]:
        """Stored submissions, oldest first, optionally of one campaign."""
        with self._lock:
            return [
                s
                for s in self._submissions.values()
                if campaign_id is None or s.campaign_id == campaign_id
            ]

    def mailed(self) -> list[Mailed]:
        """Every record accepted for printing, in order."""
        with self._lock:
            return list(self._mailed)

    def duplicates(self) -> list[tuple[str, str, int]]:
        """(campaign id, customer id, times) for customers mailed more than once."""
        counts = Counter(
            (m.campaign_id, m.customerid) for m in self.mailed() if m.customerid
        )
        return [(c, who, n) for (c, who), n in counts.items() if n > 1]

    def pending_records(self) -> list[tuple[str, dict[str, Any]]]:
        """Single records waiting to be gathered into the day's submission."""
        with self._lock:
            return list(self._pending_records)

    def reset(self) -> None:
        """Forget all submissions and mail (campaigns and sends stay)."""
        with self._lock:
            self._submissions.clear()
            self._by_reference.clear()
            self._mailed.clear()
            self._pending_records.clear()

    def _new_id(self) -> str:
        return str(uuid.UUID(int=self._random.getrandbits(128), version=4))

    # -- HTTP ------------------------------------------------------------------

    def _build_router(self) -> Router:
        router = Router()
        api = [
            ("GET", "/api/v1/campaigns", self._list_campaigns, "campaigns"),
            ("GET", "/api/v1/campaign/{campaign_id}", self._get_campaign, "campaign"),
            ("GET", "/api/v1/ScheduledSends", self._list_sends, "scheduled_sends"),
            ("POST", "/api/v1/submissions", self._create_submission, "submit"),
            (
                "GET",
                "/api/v1/submissions/Active/{campaign_id}",
                self._active_submissions,
                "active_submissions",
            ),
            (
                "GET",
                "/api/v1/submissions/{campaign_id}",
                self._list_submissions,
                "submissions",
            ),
            (
                "GET",
                "/api/v1/RejectedRecords/{submission_id}",
                self._rejected,
                "rejected_records",
            ),
            (
                "GET",
                "/api/v1/ReturnedZaps/{submission_id}",
                self._returned,
                "returned_zaps",
            ),
            ("POST", "/api/v1/records", self._submit_record, "records"),
        ]
        for method, pattern, handler, name in api:
            router.add(method, pattern, self._authenticated(handler), name)
        router.add(
            "GET",
            "/campaigns/{campaign_id}/submissions/{submission_id}",
            self._submission_page,
            "submission_page",
        )
        return router

    def _authenticated(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        async def guarded(request: Request, **params: str) -> Response:
            if not self._authorised(request.headers.get("authorization", "")):
                return JSONResponse(
                    {
                        "message": "Authorization has been denied for this request.",
                        "errors": ["The API key or password is wrong."],
                    },
                    401,
                    headers={"WWW-Authenticate": 'Basic realm="ZAPI"'},
                )
            return await handler(request, **params)

        guarded.__name__ = getattr(handler, "__name__", "handler")
        return guarded

    def _authorised(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        key, _, password = decoded.partition(":")
        return hmac.compare_digest(key, self.api_key) & hmac.compare_digest(
            password, self.api_password
        )

    async def _list_campaigns(self, request: Request) -> Response:
        return JSONResponse([c.summary() for c in self.campaigns()])

    async def _get_campaign(self, request: Request, campaign_id: str) -> Response:
        with self._lock:
            campaign = self._campaigns.get(campaign_id)
        if campaign is None:
            return zappost_error(404, "", "", f"No campaign has the id {campaign_id}.")
        return JSONResponse(campaign.detail())

    async def _list_sends(self, request: Request) -> Response:
        return JSONResponse(self.scheduled_sends())

    async def _list_submissions(self, request: Request, campaign_id: str) -> Response:
        with self._lock:
            known = campaign_id in self._campaigns
        if not known:
            return zappost_error(404, "", "", f"No campaign has the id {campaign_id}.")
        return JSONResponse([s.summary() for s in self.submissions(campaign_id)])

    async def _active_submissions(self, request: Request, campaign_id: str) -> Response:
        return await self._list_submissions(request, campaign_id)

    def _submission(self, submission_id: str) -> Submission | None:
        with self._lock:
            return self._submissions.get(submission_id)

    async def _rejected(self, request: Request, submission_id: str) -> Response:
        submission = self._submission(submission_id)
        if submission is None:
            return zappost_error(
                404, "", "", f"No submission has the id {submission_id}."
            )
        return JSONResponse(
            {"campaignId": submission.campaign_id, "submissions": submission.invalid}
        )

    async def _returned(self, request: Request, submission_id: str) -> Response:
        submission = self._submission(submission_id)
        if submission is None:
            return zappost_error(
                404, "", "", f"No submission has the id {submission_id}."
            )
        returned = []
        for position, (_, record) in enumerate(submission.valid):
            if self.returned_every and position % self.returned_every == 7:
                zap_id = str(
                    uuid.uuid5(uuid.NAMESPACE_URL, f"{submission.id}/{position}")
                )
                returned.append(
                    {
                        "id": len(returned) + 1,
                        "zapId": position + 1,
                        "zapIdentifier": zap_id,
                        "campaignId": submission.campaign_id,
                        "apiConsumerId": self.api_key,
                        "clientId": 1,
                        "submissionId": submission.id,
                        "customerid": _text(record.get("customerid")),
                        "returnReason": "Addressee gone away",
                        "returnedDate": iso_z(submission.created + timedelta(days=5)),
                    }
                )
        return JSONResponse(returned)

    async def _submission_page(
        self, request: Request, campaign_id: str, submission_id: str
    ) -> Response:
        submission = self._submission(submission_id)
        if submission is None or submission.campaign_id != campaign_id:
            return Response(404, b"<h1>No such submission</h1>", {}, "text/html")
        with self._lock:
            campaign = self._campaigns.get(campaign_id)
        name = html.escape(campaign.name if campaign else campaign_id)
        page = (
            f"<!DOCTYPE html><html><head><title>Submission {submission.id}</title>"
            f"</head><body><h1>{name}</h1><p>Submission {submission.id}, created "
            f"{iso_z(submission.created)}: {len(submission.valid)} records accepted, "
            f"{len(submission.invalid)} rejected.</p></body></html>"
        )
        return Response(200, page.encode(), {}, "text/html; charset=utf-8")

    async def _create_submission(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _invalid_request("The request body is not valid JSON.")
        problems = self._request_problems(body)
        if problems:
            return _invalid_request(
                "The request is not a valid PartSubmissionRequest.", problems
            )
        campaign_id: str = body["campaignId"]
        with self._lock:
            campaign = self._campaigns.get(campaign_id)
        if campaign is None:
            return zappost_error(404, "", "", f"No campaign has the id {campaign_id}.")
        records: list[Any] = body["submissions"]
        references = {
            _text(r["customdata"].get(REFERENCE_FIELD))
            for r in records
            if isinstance(r, dict) and isinstance(r.get("customdata"), dict)
        } - {""}
        if len(references) > 1:
            return _invalid_request(
                f"The records carry {len(references)} different references; "
                "a submission has one."
            )
        reference = references.pop() if references else ""

        with self._lock:
            existing_id = self._by_reference.get((campaign_id, reference))
            if reference and existing_id is not None:
                existing = self._submissions[existing_id]
                log.info(
                    "submission %s replayed (reference %s)", existing.id, reference
                )
                return self._respond(existing, 200)

        valid: list[tuple[int, dict[str, Any]]] = []
        invalid: list[dict[str, Any]] = []
        for index, record in enumerate(records):
            errors = validate_record(record, campaign)
            if errors:
                invalid.append({"index": index, "record": record, "errors": errors})
            else:
                valid.append((index, record))
        if invalid and body.get("onlyValidRecords"):
            return JSONResponse(
                {
                    "message": f"{len(invalid)} of {len(records)} records are invalid "
                    "and onlyValidRecords is true, so nothing was submitted.",
                    "errors": [
                        f"record {item['index']}: {error}"
                        for item in invalid[:20]
                        for error in item["errors"]
                    ],
                    "invalidRecords": invalid,
                },
                400,
            )

        with self._lock:
            # Checked again under the lock: a concurrent resend may have won.
            existing_id = self._by_reference.get((campaign_id, reference))
            if reference and existing_id is not None:
                return self._respond(self._submissions[existing_id], 200)
            submission = Submission(
                id=self._new_id(),
                campaign_id=campaign_id,
                created=utcnow(),
                reference=reference,
                scheduled_send_id=body.get("scheduledSendId"),
                valid=valid,
                invalid=invalid,
            )
            self._submissions[submission.id] = submission
            if reference:
                self._by_reference[(campaign_id, reference)] = submission.id
            self._mailed.extend(
                Mailed(
                    campaign_id, _text(r.get("customerid")), submission.id, reference
                )
                for _, r in valid
            )
        log.info(
            "submission %s created: %d valid, %d invalid",
            submission.id,
            len(valid),
            len(invalid),
        )
        return self._respond(submission, 201, request)

    def _respond(
        self, submission: Submission, status: int, request: Request | None = None
    ) -> Response:
        response: Response = JSONResponse(submission.response(), status)
        if request is not None:
            fault = self.faults.take(
                COMMITTED_SERVICE, request.method, request.path, "submit"
            )
            if fault is not None:
                return _FaultedResponse(fault, response)
        return response

    def _request_problems(self, body: Any) -> list[str]:
        """What makes a body not a PartSubmissionRequest."""
        if not isinstance(body, dict):
            return ["The body must be a JSON object."]
        problems = [
            f"{key}: unknown property; allowed are {', '.join(sorted(REQUEST_KEYS))}."
            for key in body
            if key not in REQUEST_KEYS
        ]
        campaign_id = body.get("campaignId")
        if not isinstance(campaign_id, str) or not _UUID.match(campaign_id):
            problems.append("campaignId: a campaign id (uuid) is required.")
        if "scheduledSendId" not in body:
            problems.append("scheduledSendId: required (null for the soonest send).")
        else:
            send_id = body["scheduledSendId"]
            if send_id is not None:
                if not isinstance(send_id, str) or not _UUID.match(send_id):
                    problems.append("scheduledSendId: must be a uuid or null.")
                elif send_id not in {s["id"] for s in self.scheduled_sends()}:
                    problems.append(f"scheduledSendId: no scheduled send {send_id}.")
        if "onlyValidRecords" in body and not isinstance(
            body["onlyValidRecords"], bool
        ):
            problems.append("onlyValidRecords: must be true or false.")
        submissions = body.get("submissions")
        if not isinstance(submissions, list):
            problems.append("submissions: a list of records is required.")
        elif not submissions:
            problems.append("submissions: at least one record is required.")
        return problems

    async def _submit_record(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _invalid_request("The request body is not valid JSON.")
        if not isinstance(body, dict):
            return _invalid_request("The body must be a JSON object.")
        campaign_id = _text(body.get("campaignId"))
        with self._lock:
            campaign = self._campaigns.get(campaign_id)
        if campaign is None:
            return zappost_error(404, "", "", f"No campaign has the id {campaign_id}.")
        record = body.get("record")
        errors = validate_record(record, campaign)
        if errors:
            return _invalid_request("The record is not valid.", errors)
        with self._lock:
            self._pending_records.append((campaign_id, record))
        return JSONResponse({"accepted": True, "errors": []}, 202)
