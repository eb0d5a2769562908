"""A Klaviyo simulator: accounts, lists, segments and members over the REST API.

It serves the endpoints the integration uses, with Klaviyo's JSON:API shapes,
cursor paging (`links.next` as full URLs, opaque cursors), page size maxima,
`joined_group_at` sort and filters, private-key auth with scopes, the
required `revision` header, per-account rate limits in fixed windows, and
fault injection. Members of each list and segment are kept sorted by
(joined_group_at, profile id), so a filtered page is a bisect and a slice.

`KlaviyoSim.seeded(seed, profiles, faulty_share)` builds this world, every id
and key derived from the seed:

- "Acme Outdoor": all scopes; `profiles` UK profiles, a `faulty_share` of
  them faulty (see `zaptui.sim.seed`); lists "Newsletter" (about 40% of the
  profiles) and "VIP Customers" (about 5%); segments "Lapsed 90 days" (about
  15%) and "All UK customers" (every profile of the account, the big one).
  Members joined at times spread over the 90 days before `now`.
- "Borough Books": every scope except `segments:read` (its segment calls get
  403 permission_denied); profiles/10 profiles (5 to 2,000); list "Book Club"
  and segment "Recent buyers".
- "Closed Shop Ltd": a revoked key (every call gets 401) and one list.

`tick()` adds churn: new customers join "All UK customers" and "Newsletter",
and one late joiner appears in "Lapsed 90 days" with a joined_group_at ten
minutes in the past. With a churn interval (`churn_interval=`, or POST
/_sim/klaviyo/churn {"interval_seconds": N}) the rules also apply every N
seconds while the API is being called. The control API lives under
`/_sim/klaviyo/` (see `control_router`); the same actions are methods for
in-process tests.

`app` serves the API at its root and the control API under /_sim/klaviyo;
`api_app` and `control_app` are the two halves, for mounting elsewhere.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import re
import threading
import time
import uuid
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from zaptui.clock import parse_iso, utcnow
from zaptui.klaviyo.limiter import Tier
from zaptui.sim.asgi import (
    JSON_API,
    JSONResponse,
    Mount,
    Request,
    Response,
    Router,
    asgi_app,
    empty_response,
)
from zaptui.sim.faults import FaultInjector
from zaptui.sim.seed import SeedProfile, generate_profiles, private_key, short_id

log = logging.getLogger(__name__)

SourceKind = Literal["list", "segment"]

ALL_SCOPES = frozenset(
    {
        "accounts:read",
        "lists:read",
        "segments:read",
        "profiles:read",
        "profiles:write",
        "events:write",
    }
)

SIM_TIERS: dict[str, Tier] = {
    "XS": Tier("XS", 1, 15),
    "S": Tier("S", 3, 60),
    "M": Tier("M", 10, 150),
    "L": Tier("L", 75, 750),
    "XL": Tier("XL", 350, 3500),
}

COLLECTION_PAGE = (10, 10)  # default, maximum for /lists and /segments
MEMBER_PAGE = (20, 100)  # default, maximum for member endpoints
MAX_PATCH_BYTES = 100 * 1024
_KEY_END = "\U0010ffff"  # sorts after every profile id
_FILTER = re.compile(
    r"^(greater-than|greater-or-equal|less-than|less-or-equal)"
    r"\(joined_group_at,([^,()]+)\)$"
)
_REVISION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z0-9]+)?$")
_LOCATION_FIELDS = {
    "address1",
    "address2",
    "city",
    "country",
    "region",
    "zip",
    "latitude",
    "longitude",
    "timezone",
    "ip",
}
_PROFILE_FIELDS = {
    "email",
    "phone_number",
    "external_id",
    "first_name",
    "last_name",
    "organization",
    "locale",
    "title",
    "image",
    "location",
    "properties",
}


class ApiError(Exception):
    """An error response in Klaviyo's shape, raised from inside a handler."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str,
        source: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.source = source or {}
        self.headers = headers or {}

    def response(self) -> Response:
        """The JSON:API error document for this error."""
        response = klaviyo_error(
            self.status, self.code, self.title, self.detail, self.source
        )
        response.headers.update(self.headers)
        return response


def klaviyo_error(
    status: int,
    code: str,
    title: str,
    detail: str,
    source: dict[str, str] | None = None,
) -> Response:
    """An error response as Klaviyo sends it."""
    body = {
        "errors": [
            {
                "id": str(uuid.uuid4()),
                "status": status,
                "code": code,
                "title": title,
                "detail": detail,
                "source": source if source is not None else {"pointer": "/data/"},
                "links": {},
                "meta": {},
            }
        ]
    }
    return JSONResponse(body, status, content_type=JSON_API)


def _invalid(detail: str, **source: str) -> ApiError:
    return ApiError(400, "invalid", "Invalid input.", detail, source)


@dataclass
class SimProfile:
    """A stored profile; its attributes JSON is cached for fast pages."""

    id: str
    account_id: str
    attributes: dict[str, Any]
    fault: str | None = None
    _json: str | None = None

    def attributes_json(self) -> str:
        """The attributes object as JSON without its closing brace."""
        if self._json is None:
            self._json = json.dumps(
                self.attributes, separators=(",", ":"), ensure_ascii=False
            )[:-1]
        return self._json

    def touch(self) -> None:
        """Forget the cached JSON after a change."""
        self._json = None


@dataclass
class Source:
    """A list or segment and its members, sorted by (joined_group_at, id)."""

    kind: SourceKind
    id: str
    name: str
    created: datetime
    includes_all: bool = False
    keys: list[tuple[datetime, str]] = field(default_factory=list)
    joined: dict[str, datetime] = field(default_factory=dict)
    stamps: dict[str, str] = field(default_factory=dict)
    hidden: dict[str, datetime] = field(default_factory=dict)
    updated: datetime | None = None

    def add(self, profile_id: str, at: datetime) -> None:
        """Make a profile a visible member as of `at` (re-joining moves it)."""
        self.remove(profile_id)
        key = (at, profile_id)
        self.keys.insert(bisect_left(self.keys, key), key)
        self.joined[profile_id] = at
        self.stamps[profile_id] = at.isoformat()

    def add_many(self, members: Iterable[tuple[str, datetime]]) -> None:
        """Add many members at once (one sort instead of many inserts)."""
        for profile_id, at in members:
            if profile_id in self.joined:
                self.remove(profile_id)
            self.joined[profile_id] = at
            self.stamps[profile_id] = at.isoformat()
            self.keys.append((at, profile_id))
        self.keys.sort()

    def remove(self, profile_id: str) -> bool:
        """Drop a member; False when it was not one."""
        self.hidden.pop(profile_id, None)
        at = self.joined.pop(profile_id, None)
        if at is None:
            return False
        index = bisect_left(self.keys, (at, profile_id))
        del self.keys[index]
        del self.stamps[profile_id]
        return True

    def resource(self, base: str) -> dict[str, Any]:
        """The JSON:API resource of this list or segment."""
        plural = "lists" if self.kind == "list" else "segments"
        url = f"{base}/api/{plural}/{self.id}"
        stamp = self.created.isoformat()
        attributes: dict[str, Any] = {
            "name": self.name,
            "created": stamp,
            "updated": (self.updated or self.created).isoformat(),
        }
        if self.kind == "list":
            attributes["opt_in_process"] = "single_opt_in"
        else:
            attributes.update(
                definition=None, is_active=True, is_processing=False, is_starred=False
            )
        return {
            "type": self.kind,
            "id": self.id,
            "attributes": attributes,
            "relationships": {
                "profiles": {
                    "links": {
                        "self": f"{url}/relationships/profiles/",
                        "related": f"{url}/profiles/",
                    }
                }
            },
            "links": {"self": f"{url}/"},
        }


@dataclass
class SimAccount:
    """A Klaviyo account with one private key."""

    id: str
    name: str
    private_key: str
    scopes: frozenset[str] = ALL_SCOPES
    revoked: bool = False
    lists: dict[str, Source] = field(default_factory=dict)
    segments: dict[str, Source] = field(default_factory=dict)

    def sources(self) -> list[Source]:
        """Lists then segments."""
        return [*self.lists.values(), *self.segments.values()]

    def resource(self, base: str) -> dict[str, Any]:
        """The JSON:API account resource."""
        return {
            "type": "account",
            "id": self.id,
            "attributes": {
                "test_account": False,
                "contact_information": {
                    "default_sender_name": self.name,
                    "default_sender_email": "hello@example.co.uk",
                    "website_url": "https://example.co.uk",
                    "organization_name": self.name,
                    "street_address": {
                        "address1": "1 High Street",
                        "address2": None,
                        "city": "London",
                        "region": "Greater London",
                        "country": "GB",
                        "zip": "EC1A 1BB",
                    },
                },
                "industry": "Retail",
                "timezone": "Europe/London",
                "preferred_currency": "GBP",
                "public_api_key": self.id,
                "locale": "en-GB",
            },
            "links": {"self": f"{base}/api/accounts/{self.id}/"},
        }


@dataclass
class LocationUpdate:
    """A stored PATCH of a profile's location."""

    account_id: str
    profile_id: str
    location: dict[str, Any]
    at: datetime


@dataclass
class SimEvent:
    """A stored event from POST /api/events."""

    account_id: str
    profile_id: str
    metric: str
    properties: dict[str, Any]
    at: datetime
    unique_id: str = ""


@dataclass
class ChurnRule:
    """`tick()` adds `count` members to a source, joined `late` ago."""

    account_id: str
    source_id: str
    count: int
    late: timedelta = timedelta(0)


class _RateWindows:
    """Fixed burst and steady windows per (account, tier), as Klaviyo counts."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.epoch = clock()
        self.counts: dict[tuple[str, str], list[int]] = {}

    def hit(self, account_id: str, tier: Tier) -> tuple[bool, dict[str, str]]:
        """Count one call; (allowed, headers) with Retry-After when refused."""
        elapsed = self.clock() - self.epoch
        burst_index = int(elapsed // tier.burst_seconds)
        steady_index = int(elapsed // tier.steady_seconds)
        state = self.counts.setdefault((account_id, tier.name), [-1, 0, -1, 0])
        if state[0] != burst_index:
            state[0], state[1] = burst_index, 0
        if state[2] != steady_index:
            state[2], state[3] = steady_index, 0
        steady_reset = (steady_index + 1) * tier.steady_seconds - elapsed
        if state[3] >= tier.steady:
            return False, {"Retry-After": str(max(1, round(steady_reset + 0.499)))}
        if state[1] >= tier.burst:
            burst_reset = (burst_index + 1) * tier.burst_seconds - elapsed
            return False, {"Retry-After": str(max(1, round(burst_reset + 0.499)))}
        state[1] += 1
        state[3] += 1
        return True, {
            "RateLimit-Limit": str(tier.steady),
            "RateLimit-Remaining": str(tier.steady - state[3]),
            "RateLimit-Reset": str(max(0, round(steady_reset))),
        }


def _encode_cursor(payload: list[Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(payload, list) or not payload:
            raise ValueError
        return payload
    except ValueError as exc:
        raise _invalid(
            "The page cursor is not valid.", parameter="page[cursor]"
        ) from exc


def _page_size(request: Request, default: int, maximum: int) -> int:
    text = request.param("page[size]")
    if text is None:
        return default
    try:
        size = int(text)
    except ValueError:
        size = 0
    if not 1 <= size <= maximum:
        raise _invalid(
            f"Page size must be an integer between 1 and {maximum}.",
            parameter="page[size]",
        )
    return size


def _parse_filter(text: str) -> tuple[str, datetime]:
    match = _FILTER.match(text.strip())
    when = None
    if match:
        try:
            when = parse_iso(match.group(2))
        except ValueError:
            when = None
    if match is None or when is None:
        raise _invalid(
            f"Invalid filter provided: {text!r}. joined_group_at supports "
            "greater-than, greater-or-equal, less-than and less-or-equal.",
            parameter="filter",
        )
    return match.group(1), when


class KlaviyoSim:
    """A simulated Klaviyo: the world (accounts, members) and its ASGI app."""

    def __init__(
        self,
        *,
        faults: FaultInjector | None = None,
        rate_limits: bool = True,
        tiers: Mapping[str, Tier] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        seed: int = 0,
        faulty_share: float = 0.1,
        churn_interval: float | None = None,
    ) -> None:
        self.faults = faults or FaultInjector()
        self.rate_limits = rate_limits
        self.tiers = dict(tiers or SIM_TIERS)
        self.faulty_share = faulty_share
        self.churn_interval = churn_interval
        self.accounts: dict[str, SimAccount] = {}
        self.profiles: dict[str, SimProfile] = {}
        self.location_updates: list[LocationUpdate] = []
        self.events: list[SimEvent] = []
        self._event_keys: set[tuple[str, str, str, str]] = set()
        self.churn: list[ChurnRule] = []
        self.requests = 0
        self.throttled = 0
        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._next_index = 0
        self._windows = _RateWindows(monotonic)
        self._monotonic = monotonic
        self._last_tick = monotonic()
        self.api_router = self._api_router()
        self.control_router = self._control_router()
        self.api_app = asgi_app(self.api_router, self.faults, "klaviyo", klaviyo_error)
        self.control_app = asgi_app(self.control_router, None, "klaviyo-control")
        self.app = Mount({"/_sim/klaviyo": self.control_app, "": self.api_app})

    # ---------------------------------------------------------------- world

    @classmethod
    def seeded(
        cls,
        seed: int = 1,
        profiles: int = 1000,
        faulty_share: float = 0.1,
        *,
        now: datetime | None = None,
        **options: Any,
    ) -> KlaviyoSim:
        """The world the module docstring describes, derived from `seed`."""
        sim = cls(seed=seed, faulty_share=faulty_share, **options)
        rng = random.Random(seed)
        now = now or utcnow()
        day = 86400.0

        acme = sim.add_account("Acme Outdoor", rng=rng)
        everyone = sim.add_profiles(acme, profiles, created=now - timedelta(days=90))
        joined = {
            pid: now - timedelta(seconds=rng.uniform(0, 90 * day)) for pid in everyone
        }
        for name, share in (("Newsletter", 0.4), ("VIP Customers", 0.05)):
            source = sim.add_source(acme, "list", name, rng=rng, created=now)
            picked = [pid for pid in everyone if rng.random() < share]
            sim.join(acme, source, picked, at=[joined[pid] for pid in picked])
        lapsed = sim.add_source(acme, "segment", "Lapsed 90 days", rng=rng, created=now)
        picked = [pid for pid in everyone if rng.random() < 0.15]
        sim.join(acme, lapsed, picked, at=[joined[pid] for pid in picked])
        all_uk = sim.add_source(
            acme, "segment", "All UK customers", rng=rng, created=now, includes_all=True
        )
        sim.join(acme, all_uk, everyone, at=[joined[pid] for pid in everyone])

        books = sim.add_account(
            "Borough Books", rng=rng, scopes=ALL_SCOPES - {"segments:read"}
        )
        readers = sim.add_profiles(
            books, min(max(5, profiles // 10), 2000), created=now - timedelta(days=30)
        )
        club = sim.add_source(books, "list", "Book Club", rng=rng, created=now)
        recent = sim.add_source(
            books, "segment", "Recent buyers", rng=rng, created=now, includes_all=True
        )
        times = [now - timedelta(seconds=rng.uniform(0, 30 * day)) for _ in readers]
        sim.join(books, club, readers[::2], at=times[::2])
        sim.join(books, recent, readers, at=times)

        closed = sim.add_account("Closed Shop Ltd", rng=rng, revoked=True)
        old = sim.add_profiles(closed, 5, created=now - timedelta(days=400))
        gone = sim.add_source(closed, "list", "Old customers", rng=rng, created=now)
        sim.join(closed, gone, old, at=now - timedelta(days=300))

        sim.churn = [
            ChurnRule(acme.id, all_uk.id, 3),
            ChurnRule(acme.id, sim.source(acme, "Newsletter").id, 2),
            ChurnRule(acme.id, lapsed.id, 1, late=timedelta(minutes=10)),
        ]
        return sim

    def add_account(
        self,
        name: str,
        *,
        rng: random.Random | None = None,
        private_key_value: str | None = None,
        scopes: Iterable[str] = ALL_SCOPES,
        revoked: bool = False,
    ) -> SimAccount:
        """Create an account with a private key (derived from the rng if not given)."""
        rng = rng or self._rng
        with self._lock:
            account = SimAccount(
                id=short_id(rng),
                name=name,
                private_key=private_key_value or private_key(rng),
                scopes=frozenset(scopes),
                revoked=revoked,
            )
            self.accounts[account.id] = account
        return account

    def add_source(
        self,
        account: SimAccount | str,
        kind: SourceKind,
        name: str,
        *,
        rng: random.Random | None = None,
        created: datetime | None = None,
        includes_all: bool = False,
    ) -> Source:
        """Create a list or segment; `includes_all` makes new profiles join it."""
        account = self.account(account)
        source = Source(
            kind,
            short_id(rng or self._rng),
            name,
            created or utcnow(),
            includes_all=includes_all,
        )
        with self._lock:
            (account.lists if kind == "list" else account.segments)[source.id] = source
        return source

    def add_profiles(
        self,
        account: SimAccount | str,
        count: int | Iterable[SeedProfile],
        *,
        created: datetime | None = None,
    ) -> list[str]:
        """Store new profiles (generated when `count` is a number); their ids."""
        account = self.account(account)
        with self._lock:
            if isinstance(count, int):
                seeds = generate_profiles(
                    self._rng,
                    count,
                    self.faulty_share,
                    start_index=self._next_index,
                    created=created or utcnow(),
                )
                self._next_index += count
            else:
                seeds = list(count)
            for seed in seeds:
                self.profiles[seed.id] = SimProfile(
                    seed.id, account.id, seed.attributes, seed.fault
                )
        return [seed.id for seed in seeds]

    def account(self, ref: SimAccount | str) -> SimAccount:
        """An account by object, id, name or private key."""
        if isinstance(ref, SimAccount):
            return ref
        with self._lock:
            found = self.accounts.get(ref)
            if found is not None:
                return found
            for account in self.accounts.values():
                if ref in (account.name, account.private_key):
                    return account
        raise KeyError(f"no simulated account {ref!r}")

    def source(self, account: SimAccount | str, ref: Source | str) -> Source:
        """A list or segment of an account, by object, id or name."""
        if isinstance(ref, Source):
            return ref
        account = self.account(account)
        for source in account.sources():
            if ref in (source.id, source.name):
                return source
        raise KeyError(f"no list or segment {ref!r} in {account.name}")

    def join(
        self,
        account: SimAccount | str,
        source: Source | str,
        profile_ids: Iterable[str] | None = None,
        *,
        count: int | None = None,
        at: datetime | Iterable[datetime] | None = None,
        visible: bool = True,
    ) -> list[str]:
        """Make profiles members of a source, as of `at` (default now).

        With `count`, that many new profiles are generated for the account
        (and join its all-profiles segments too). A re-join gets a new
        joined_group_at. `at` in the past with `visible=True` is a late
        joiner: visible now, though it joined before a watermark may already
        have passed. `visible=False` holds members back until `reveal`.
        """
        account = self.account(account)
        source = self.source(account, source)
        with self._lock:
            ids = list(profile_ids or [])
            if count:
                new = self.add_profiles(account, count)
                ids.extend(new)
            moment = utcnow()
            if at is None or isinstance(at, datetime):
                times = [at or moment] * len(ids)
            else:
                times = list(at)
            for profile_id in ids:
                if self.profiles.get(profile_id, None) is None:
                    raise KeyError(f"no simulated profile {profile_id!r}")
            members = list(zip(ids, times, strict=True))
            if not visible:
                for profile_id, when in members:
                    source.remove(profile_id)
                    source.hidden[profile_id] = when
            elif len(members) > 50:
                source.add_many(members)
            else:
                for profile_id, when in members:
                    source.add(profile_id, when)
            if count:
                for other in account.sources():
                    if other.includes_all and other is not source:
                        for profile_id, when in members[-count:]:
                            other.add(profile_id, when)
            source.updated = moment
        return ids

    def leave(
        self,
        account: SimAccount | str,
        source: Source | str,
        profile_ids: Iterable[str],
    ) -> int:
        """Remove members; how many were members."""
        source = self.source(account, source)
        with self._lock:
            removed = sum(source.remove(profile_id) for profile_id in profile_ids)
            source.updated = utcnow()
        return removed

    def reveal(self, account: SimAccount | str, source: Source | str) -> int:
        """Make held-back members visible with their original joined_group_at."""
        source = self.source(account, source)
        with self._lock:
            hidden, source.hidden = source.hidden, {}
            for profile_id, when in hidden.items():
                source.add(profile_id, when)
        return len(hidden)

    def members(
        self, account: SimAccount | str, source: Source | str
    ) -> list[tuple[str, datetime]]:
        """Visible members in joined_group_at order: (profile id, joined at)."""
        source = self.source(account, source)
        with self._lock:
            return [(profile_id, at) for at, profile_id in source.keys]

    def tick(self) -> int:
        """Apply every churn rule once; how many members joined."""
        joined = 0
        now = utcnow()
        for rule in list(self.churn):
            joined += len(
                self.join(
                    rule.account_id,
                    rule.source_id,
                    count=rule.count,
                    at=now - rule.late,
                )
            )
        return joined

    def set_churn_interval(self, seconds: float | None) -> None:
        """Apply the churn rules every `seconds` from now on (None: only on tick)."""
        with self._lock:
            self.churn_interval = seconds
            self._last_tick = self._monotonic()

    def _auto_tick(self) -> None:
        if self.churn_interval is None:
            return
        with self._lock:
            interval = self.churn_interval
            elapsed = self._monotonic() - self._last_tick
            if interval is None or elapsed < interval:
                return
            self._last_tick = self._monotonic()
            for _ in range(min(int(elapsed // interval), 10)):
                self.tick()

    # ------------------------------------------------------------ API plumbing

    def _authenticate(self, request: Request) -> SimAccount:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise ApiError(
                401,
                "not_authenticated",
                "Authentication credentials were not provided.",
                "Missing or invalid authorization scheme. Please use Klaviyo-API-Key.",
            )
        if scheme != "Klaviyo-API-Key" or not token.strip():
            raise ApiError(
                401,
                "not_authenticated",
                "Authentication credentials were not provided.",
                "Missing or invalid authorization scheme. Please use Klaviyo-API-Key.",
            )
        token = token.strip()
        with self._lock:
            account = next(
                (a for a in self.accounts.values() if a.private_key == token), None
            )
        if account is None or account.revoked:
            raise ApiError(
                401,
                "not_authenticated",
                "Incorrect authentication credentials.",
                "The API key specified is invalid.",
            )
        return account

    def _endpoint(
        self, scopes: tuple[str, ...], tier: str, handler: Callable[..., Any]
    ) -> Callable[..., Any]:
        async def endpoint(request: Request, **params: str) -> Response:
            self.requests += 1
            try:
                account = self._authenticate(request)
                revision = request.headers.get("revision")
                if not revision:
                    raise _invalid(
                        "Missing required header: revision.", parameter="revision"
                    )
                if not _REVISION.match(revision):
                    raise _invalid(
                        f"Invalid revision {revision!r}; use YYYY-MM-DD.",
                        parameter="revision",
                    )
                missing = [scope for scope in scopes if scope not in account.scopes]
                if missing:
                    raise ApiError(
                        403,
                        "permission_denied",
                        "You do not have permission to perform this action.",
                        "This API key is missing required scopes: "
                        + ", ".join(missing)
                        + ".",
                    )
                headers: dict[str, str] = {}
                tier_name = tier
                extra = request.param("additional-fields[profile]") or ""
                if "predictive_analytics" in extra:
                    tier_name = "M"
                if self.rate_limits:
                    with self._lock:
                        allowed, headers = self._windows.hit(
                            account.id, self.tiers[tier_name]
                        )
                    if not allowed:
                        self.throttled += 1
                        wait = headers["Retry-After"]
                        unit = "second" if wait == "1" else "seconds"
                        raise ApiError(
                            429,
                            "throttled",
                            "Request was throttled.",
                            f"Request was throttled. Expected available in "
                            f"{wait} {unit}.",
                            headers=headers,
                        )
                self._auto_tick()
                response: Response = await handler(request, account, **params)
            except ApiError as error:
                return error.response()
            response.headers.update(headers)
            return response

        endpoint.__name__ = handler.__name__
        return endpoint

    def _api_router(self) -> Router:
        router = Router()
        routes: tuple[tuple[str, str, tuple[str, ...], str, Any, str], ...] = (
            ("GET", "/api/accounts", ("accounts:read",), "XS", self._get_accounts,
             "accounts"),
            ("GET", "/api/accounts/", ("accounts:read",), "XS", self._get_accounts,
             "accounts"),
            ("GET", "/api/lists", ("lists:read",), "L", self._get_lists, "lists"),
            ("GET", "/api/lists/", ("lists:read",), "L", self._get_lists, "lists"),
            ("GET", "/api/segments", ("segments:read",), "L", self._get_segments,
             "segments"),
            ("GET", "/api/segments/", ("segments:read",), "L", self._get_segments,
             "segments"),
            ("GET", "/api/lists/{source_id}/profiles",
             ("lists:read", "profiles:read"), "L", self._get_list_members,
             "list_profiles"),
            ("GET", "/api/lists/{source_id}/profiles/",
             ("lists:read", "profiles:read"), "L", self._get_list_members,
             "list_profiles"),
            ("GET", "/api/segments/{source_id}/profiles",
             ("segments:read", "profiles:read"), "L", self._get_segment_members,
             "segment_profiles"),
            ("GET", "/api/segments/{source_id}/profiles/",
             ("segments:read", "profiles:read"), "L", self._get_segment_members,
             "segment_profiles"),
            ("PATCH", "/api/profiles/{profile_id}", ("profiles:write",), "L",
             self._patch_profile, "update_profile"),
            ("PATCH", "/api/profiles/{profile_id}/", ("profiles:write",), "L",
             self._patch_profile, "update_profile"),
            ("POST", "/api/events", ("events:write",), "XL", self._create_event,
             "create_event"),
            ("POST", "/api/events/", ("events:write",), "XL", self._create_event,
             "create_event"),
        )  # fmt: skip
        for method, pattern, scopes, tier, handler, name in routes:
            router.add(method, pattern, self._endpoint(scopes, tier, handler), name)
        return router

    # ------------------------------------------------------------ API handlers

    async def _get_accounts(self, request: Request, account: SimAccount) -> Response:
        base = request.base_url
        return JSONResponse(
            {
                "data": [account.resource(base)],
                "links": {"self": f"{base}/api/accounts/", "next": None, "prev": None},
            },
            content_type=JSON_API,
        )

    async def _get_lists(self, request: Request, account: SimAccount) -> Response:
        return self._collection(request, "/api/lists/", list(account.lists.values()))

    async def _get_segments(self, request: Request, account: SimAccount) -> Response:
        return self._collection(
            request, "/api/segments/", list(account.segments.values())
        )

    def _collection(
        self, request: Request, path: str, sources: list[Source]
    ) -> Response:
        if request.param("filter") is not None:
            raise _invalid("Filtering is not supported here.", parameter="filter")
        size = _page_size(request, *COLLECTION_PAGE)
        cursor = request.param("page[cursor]")
        offset = 0
        if cursor is not None:
            payload = _decode_cursor(cursor)
            if (
                payload[0] != "o"
                or len(payload) != 2
                or not isinstance(payload[1], int)
            ):
                raise _invalid(
                    "The page cursor is not valid.", parameter="page[cursor]"
                )
            offset = max(0, payload[1])
        base = request.base_url
        page = sources[offset : offset + size]
        query = {"page[size]": str(size)} if request.param("page[size]") else {}

        def link(position: int) -> str:
            return request.url_for(
                path, {**query, "page[cursor]": _encode_cursor(["o", position])}
            )

        links = {
            "self": request.url_for(path, dict(request_items(request))),
            "next": link(offset + size) if offset + size < len(sources) else None,
            "prev": link(max(0, offset - size)) if offset > 0 else None,
        }
        return JSONResponse(
            {"data": [source.resource(base) for source in page], "links": links},
            content_type=JSON_API,
        )

    async def _get_list_members(
        self, request: Request, account: SimAccount, source_id: str
    ) -> Response:
        return self._members(request, account.lists.get(source_id), "lists", source_id)

    async def _get_segment_members(
        self, request: Request, account: SimAccount, source_id: str
    ) -> Response:
        return self._members(
            request, account.segments.get(source_id), "segments", source_id
        )

    def _members(
        self, request: Request, source: Source | None, plural: str, source_id: str
    ) -> Response:
        if source is None:
            raise ApiError(
                404,
                "not_found",
                "Not found.",
                f"A {plural[:-1]} with id {source_id} does not exist.",
            )
        size = _page_size(request, *MEMBER_PAGE)
        sort = request.param("sort", "joined_group_at")
        if sort not in ("joined_group_at", "-joined_group_at"):
            raise _invalid(f"Invalid sort {sort!r}.", parameter="sort")
        descending = sort.startswith("-")
        filter_text = request.param("filter")
        cursor_text = request.param("page[cursor]")
        cursor: tuple[str, tuple[datetime, str]] | None = None
        if cursor_text is not None:
            payload = _decode_cursor(cursor_text)
            try:
                direction, stamp, profile_id = payload
                when = parse_iso(stamp)
                if direction not in ("a", "b") or when is None:
                    raise ValueError
            except (ValueError, TypeError) as exc:
                raise _invalid(
                    "The page cursor is not valid.", parameter="page[cursor]"
                ) from exc
            cursor = (direction, (when, str(profile_id)))

        with self._lock:
            keys = source.keys
            lo, hi = 0, len(keys)
            if filter_text:
                for part in _split_filter(filter_text):
                    op, when = _parse_filter(part)
                    if op == "greater-than":
                        lo = max(lo, bisect_right(keys, (when, _KEY_END)))
                    elif op == "greater-or-equal":
                        lo = max(lo, bisect_left(keys, (when, "")))
                    elif op == "less-than":
                        hi = min(hi, bisect_left(keys, (when, "")))
                    else:
                        hi = min(hi, bisect_right(keys, (when, _KEY_END)))
            start, end, has_next, has_prev = _window(
                keys, lo, max(lo, hi), size, descending, cursor
            )
            page = keys[start:end]
            if descending:
                page.reverse()
            base = request.base_url
            items = [
                f'{{"type":"profile","id":"{profile_id}","attributes":{self.profiles[profile_id].attributes_json()},"joined_group_at":"{source.stamps[profile_id]}"}},'
                f'"links":{{"self":"{base}/api/profiles/{profile_id}/"}}}}'
                for _, profile_id in page
            ]

        path = f"/api/{plural}/{source.id}/profiles/"
        query = {
            name: values[0]
            for name, values in request.query.items()
            if name != "page[cursor]" and values
        }

        def link(direction: str, key: tuple[datetime, str]) -> str:
            cursor_value = _encode_cursor([direction, key[0].isoformat(), key[1]])
            return request.url_for(path, {**query, "page[cursor]": cursor_value})

        links = {
            "self": request.url_for(path, dict(request_items(request))),
            "next": link("a", page[-1]) if has_next and page else None,
            "prev": link("b", page[0]) if has_prev and page else None,
        }
        body = (
            '{"data":[' + ",".join(items) + '],"links":' + json.dumps(links) + "}"
        ).encode()
        return Response(200, body, {}, JSON_API)

    async def _patch_profile(
        self, request: Request, account: SimAccount, profile_id: str
    ) -> Response:
        raw = await request.body()
        if len(raw) > MAX_PATCH_BYTES:
            raise _invalid("The request payload is larger than 100 KB.", pointer="/")
        try:
            document = json.loads(raw)
        except ValueError as exc:
            raise _invalid("The request body is not valid JSON.", pointer="/") from exc
        data = document.get("data") if isinstance(document, dict) else None
        if not isinstance(data, dict):
            raise _invalid("'data' is required.", pointer="/data")
        if data.get("type") != "profile":
            raise _invalid("'type' must be 'profile'.", pointer="/data/type")
        if data.get("id") != profile_id:
            raise _invalid(
                "The id in the body does not match the URL.", pointer="/data/id"
            )
        attributes = data.get("attributes")
        if not isinstance(attributes, dict):
            raise _invalid("'attributes' is required.", pointer="/data/attributes")
        for name in attributes:
            if name not in _PROFILE_FIELDS:
                raise _invalid(
                    f"'{name}' is not a valid field for the resource 'profile'.",
                    pointer=f"/data/attributes/{name}",
                )
        location = attributes.get("location")
        if "location" in attributes and location is not None:
            _check_location(location)
        with self._lock:
            profile = self.profiles.get(profile_id)
            if profile is None or profile.account_id != account.id:
                raise ApiError(
                    404,
                    "not_found",
                    "Not found.",
                    f"A profile with id {profile_id} does not exist.",
                )
            now = utcnow()
            for name, value in attributes.items():
                if name == "location" and value is not None:
                    merged = dict(profile.attributes.get("location") or {})
                    merged.update(value)
                    profile.attributes["location"] = merged
                else:
                    profile.attributes[name] = value
            profile.attributes["updated"] = now.isoformat()
            profile.touch()
            if "location" in attributes:
                self.location_updates.append(
                    LocationUpdate(account.id, profile_id, dict(location or {}), now)
                )
            resource = json.loads(f"{profile.attributes_json()}}}")
        base = request.base_url
        return JSONResponse(
            {
                "data": {
                    "type": "profile",
                    "id": profile_id,
                    "attributes": resource,
                    "links": {"self": f"{base}/api/profiles/{profile_id}/"},
                },
                "links": {"self": f"{base}/api/profiles/{profile_id}/"},
            },
            content_type=JSON_API,
        )

    async def _create_event(self, request: Request, account: SimAccount) -> Response:
        try:
            document = await request.json()
        except ValueError as exc:
            raise _invalid("The request body is not valid JSON.", pointer="/") from exc
        data = document.get("data") if isinstance(document, dict) else None
        if not isinstance(data, dict) or data.get("type") != "event":
            raise _invalid("'data' of type 'event' is required.", pointer="/data")
        attributes = data.get("attributes")
        if not isinstance(attributes, dict):
            raise _invalid("'attributes' is required.", pointer="/data/attributes")
        properties = attributes.get("properties")
        if not isinstance(properties, dict):
            raise _invalid(
                "'properties' must be an object.", pointer="/data/attributes/properties"
            )
        metric = _resource_data(attributes.get("metric"), "metric")
        name = (metric.get("attributes") or {}).get("name")
        if not isinstance(name, str) or not name:
            raise _invalid(
                "A metric name is required.",
                pointer="/data/attributes/metric/data/attributes/name",
            )
        profile_data = _resource_data(attributes.get("profile"), "profile")
        if not isinstance(profile_data.get("attributes"), dict):
            raise _invalid(
                "'attributes' is required.",
                pointer="/data/attributes/profile/data/attributes",
            )
        profile_id = profile_data.get("id")
        unique_id = attributes.get("unique_id")
        if unique_id is not None and not isinstance(unique_id, str):
            raise _invalid(
                "'unique_id' must be a string.", pointer="/data/attributes/unique_id"
            )
        now = utcnow()
        with self._lock:
            profile = self.profiles.get(profile_id) if profile_id else None
            if profile is None or profile.account_id != account.id:
                raise _invalid(
                    "The profile does not exist.",
                    pointer="/data/attributes/profile/data/id",
                )
            # As Klaviyo does: the first event per (profile, metric, unique_id)
            # counts, and without a unique_id the time to the second stands in.
            unique = unique_id or now.replace(microsecond=0).isoformat()
            key = (account.id, profile.id, name, unique)
            if key not in self._event_keys:
                self._event_keys.add(key)
                self.events.append(
                    SimEvent(account.id, profile.id, name, properties, now, unique)
                )
        return empty_response(202)

    # ------------------------------------------------------------- control API

    def _control_router(self) -> Router:
        router = Router()
        router.add("GET", "/accounts", self._ctl_accounts, "accounts")
        router.add("POST", "/join", self._ctl_join, "join")
        router.add("POST", "/leave", self._ctl_leave, "leave")
        router.add("POST", "/reveal", self._ctl_reveal, "reveal")
        router.add("POST", "/tick", self._ctl_tick, "tick")
        router.add("GET", "/faults", self._ctl_faults, "faults")
        router.add("POST", "/faults", self._ctl_add_fault, "add_fault")
        router.add("DELETE", "/faults", self._ctl_clear_faults, "clear_faults")
        router.add("GET", "/location-updates", self._ctl_locations, "location_updates")
        router.add("GET", "/events", self._ctl_events, "events")
        router.add("POST", "/rate-limits", self._ctl_rate_limits, "rate_limits")
        router.add("POST", "/churn", self._ctl_churn, "churn")
        return router

    def describe_accounts(self) -> list[dict[str, Any]]:
        """Accounts with their keys, lists and segments (for the control API)."""
        with self._lock:
            return [
                {
                    "id": account.id,
                    "name": account.name,
                    "private_key": account.private_key,
                    "scopes": sorted(account.scopes),
                    "revoked": account.revoked,
                    "lists": [
                        {"id": s.id, "name": s.name, "members": len(s.keys)}
                        for s in account.lists.values()
                    ],
                    "segments": [
                        {"id": s.id, "name": s.name, "members": len(s.keys)}
                        for s in account.segments.values()
                    ],
                }
                for account in self.accounts.values()
            ]

    async def _ctl_accounts(self, request: Request) -> Response:
        return JSONResponse({"accounts": self.describe_accounts()})

    async def _ctl_body(self, request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            body = None
        return body if isinstance(body, dict) else {}

    async def _ctl_join(self, request: Request) -> Response:
        body = await self._ctl_body(request)
        try:
            at = parse_iso(body.get("at"))
            ids = self.join(
                body["account"],
                body["source"],
                body.get("profile_ids"),
                count=body.get("count"),
                at=at,
                visible=body.get("visible", True),
            )
        except (KeyError, ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse({"joined": ids})

    async def _ctl_leave(self, request: Request) -> Response:
        body = await self._ctl_body(request)
        try:
            removed = self.leave(body["account"], body["source"], body["profile_ids"])
        except (KeyError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse({"removed": removed})

    async def _ctl_reveal(self, request: Request) -> Response:
        body = await self._ctl_body(request)
        try:
            revealed = self.reveal(body["account"], body["source"])
        except (KeyError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse({"revealed": revealed})

    async def _ctl_tick(self, request: Request) -> Response:
        return JSONResponse({"joined": self.tick()})

    async def _ctl_faults(self, request: Request) -> Response:
        return JSONResponse({"faults": self.faults.rules()})

    async def _ctl_add_fault(self, request: Request) -> Response:
        body = await self._ctl_body(request)
        options = dict(body.get("options") or {})
        try:
            rule_id = self.faults.add(
                body.get("service", "klaviyo"),
                body.get("endpoint", "*"),
                body["kind"],
                body.get("count", 1),
                skip=int(body.get("skip", 0)),
                **options,
            )
        except (KeyError, ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse({"id": rule_id}, 201)

    async def _ctl_clear_faults(self, request: Request) -> Response:
        self.faults.clear(request.param("service"))
        return JSONResponse({"faults": []})

    async def _ctl_locations(self, request: Request) -> Response:
        with self._lock:
            updates = [
                {
                    "account_id": u.account_id,
                    "profile_id": u.profile_id,
                    "location": u.location,
                    "at": u.at.isoformat(),
                }
                for u in self.location_updates
            ]
        return JSONResponse({"location_updates": updates})

    async def _ctl_events(self, request: Request) -> Response:
        with self._lock:
            events = [
                {
                    "account_id": e.account_id,
                    "profile_id": e.profile_id,
                    "metric": e.metric,
                    "properties": e.properties,
                    "at": e.at.isoformat(),
                }
                for e in self.events
            ]
        return JSONResponse({"events": events})

    async def _ctl_rate_limits(self, request: Request) -> Response:
        body = await self._ctl_body(request)
        self.rate_limits = bool(body.get("enabled", True))
        return JSONResponse({"enabled": self.rate_limits})

    async def _ctl_churn(self, request: Request) -> Response:
        body = await self._ctl_body(request)
        interval = body.get("interval_seconds")
        if interval is not None and (
            not isinstance(interval, int | float) or interval <= 0
        ):
            return JSONResponse(
                {"error": "interval_seconds must be a positive number or null"}, 400
            )
        self.set_churn_interval(interval)
        return JSONResponse({"interval_seconds": self.churn_interval})


def request_items(request: Request) -> list[tuple[str, str]]:
    """The request's query parameters, first value of each."""
    return [(name, values[0]) for name, values in request.query.items() if values]


def _split_filter(text: str) -> list[str]:
    """The conditions of a filter: one, or the arguments of a top-level and()."""
    text = text.strip()
    if not (text.startswith("and(") and text.endswith(")")):
        return [text]
    parts: list[str] = []
    depth, start, quoted = 0, 0, False
    inner = text[4:-1]
    for index, char in enumerate(inner):
        if char == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(inner[start:index].strip())
            start = index + 1
    parts.append(inner[start:].strip())
    return [part for part in parts if part]


def _window(
    keys: list[tuple[datetime, str]],
    lo: int,
    hi: int,
    size: int,
    descending: bool,
    cursor: tuple[str, tuple[datetime, str]] | None,
) -> tuple[int, int, bool, bool]:
    """Slice bounds of one page in [lo, hi), and whether pages lie beyond it."""
    if not descending:
        if cursor is None:
            start = lo
            end = min(hi, start + size)
        elif cursor[0] == "a":
            start = max(lo, bisect_right(keys, cursor[1]))
            end = min(hi, start + size)
        else:
            end = min(hi, bisect_left(keys, cursor[1]))
            start = max(lo, end - size)
        end = max(start, end)
        return start, end, end < hi, start > lo
    if cursor is None:
        end = hi
        start = max(lo, end - size)
    elif cursor[0] == "a":
        end = min(hi, bisect_left(keys, cursor[1]))
        start = max(lo, end - size)
    else:
        start = max(lo, bisect_right(keys, cursor[1]))
        end = min(hi, start + size)
    end = max(start, end)
    return start, end, start > lo, end < hi


def _resource_data(value: Any, kind: str) -> dict[str, Any]:
    data = value.get("data") if isinstance(value, dict) else None
    if not isinstance(data, dict) or data.get("type") != kind:
        raise _invalid(
            f"'{kind}' must hold data of type '{kind}'.",
            pointer=f"/data/attributes/{kind}",
        )
    return data


def _check_location(location: Any) -> None:
    if not isinstance(location, dict):
        raise _invalid(
            "'location' must be an object.", pointer="/data/attributes/location"
        )
    for name, value in location.items():
        pointer = f"/data/attributes/location/{name}"
        if name not in _LOCATION_FIELDS:
            raise _invalid(f"'{name}' is not a valid location field.", pointer=pointer)
        if name in ("latitude", "longitude"):
            if value is not None and not isinstance(value, str | int | float):
                raise _invalid(f"'{name}' must be a number or string.", pointer=pointer)
        elif value is not None and not isinstance(value, str):
            raise _invalid(f"'{name}' must be a string or null.", pointer=pointer)
