"""A tiny ASGI toolkit for the simulators: requests, responses, routing, mounting.

The simulators need little more than "match a method and a path, hand back
JSON", so this stays free of web frameworks. Handlers are
`async def handler(request, **path_params) -> Response`. An app built with
`asgi_app` applies the fault injector to every routed request, and `Mount`
serves several apps under path prefixes (Klaviyo under /klaviyo, ZAP~POST under
/zap) while each app still sees paths relative to its own prefix and can build
full external URLs through `Request.base_url`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlencode

if TYPE_CHECKING:
    from zaptui.sim.faults import FaultInjector

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Handler = Callable[..., Awaitable["Response"]]

JSON_API = "application/vnd.api+json"


class Request:
    """One incoming HTTP request as a handler sees it."""

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self._receive = receive
        self._body: bytes | None = None
        self.method: str = scope["method"].upper()
        self.path: str = scope["path"]
        self.raw_query: str = scope.get("query_string", b"").decode("latin-1")
        self.query: dict[str, list[str]] = parse_qs(
            self.raw_query, keep_blank_values=True
        )
        self.headers: dict[str, str] = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", [])
        }

    def param(self, name: str, default: str | None = None) -> str | None:
        """The first value of a query parameter, or `default`."""
        values = self.query.get(name)
        return values[0] if values else default

    @property
    def base_url(self) -> str:
        """The external base URL of this app: scheme://host[:port][/prefix]."""
        scheme = self.scope.get("scheme", "http")
        host = self.headers.get("host")
        if not host:
            server = self.scope.get("server") or ("localhost", None)
            host = (
                server[0]
                if server[1] in (None, 80, 443)
                else f"{server[0]}:{server[1]}"
            )
        return f"{scheme}://{host}{self.scope.get('root_path', '')}"

    def url_for(self, path: str, query: Mapping[str, str] | None = None) -> str:
        """A full external URL for `path` (relative to this app) with a query."""
        url = self.base_url + path
        if query:
            # Brackets stay readable (page[size]) as Klaviyo's own links have them.
            url += "?" + urlencode(query, safe="[]", quote_via=quote)
        return url

    async def body(self) -> bytes:
        """The whole request body (read once, then cached)."""
        if self._body is None:
            chunks: list[bytes] = []
            while True:
                message = await self._receive()
                if message["type"] == "http.disconnect":
                    break
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            self._body = b"".join(chunks)
        return self._body

    async def json(self) -> Any:
        """The body parsed as JSON (raises ValueError when it is not JSON)."""
        return json.loads(await self.body() or b"null")


@dataclass
class Response:
    """A complete HTTP response: status, headers and body bytes."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None

    def header_list(self) -> list[tuple[bytes, bytes]]:
        """Headers as ASGI wants them, with content-type and content-length."""
        headers = dict(self.headers)
        if self.content_type and "content-type" not in {k.lower() for k in headers}:
            headers["content-type"] = self.content_type
        headers["content-length"] = str(len(self.body))
        return [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in headers.items()
        ]

    async def send(self, send: Send) -> None:
        """Send this response over an ASGI `send` callable."""
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": self.header_list(),
            }
        )
        await send({"type": "http.response.body", "body": self.body})


def _dump(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


class JSONResponse(Response):
    """A response whose body is `data` as compact JSON."""

    def __init__(
        self,
        data: Any,
        status: int = 200,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        super().__init__(status, _dump(data), dict(headers or {}), content_type)


def empty_response(
    status: int = 204, headers: dict[str, str] | None = None
) -> Response:
    """A response with no body (202 or 204)."""
    return Response(status, b"", dict(headers or {}))


@dataclass
class Route:
    """One method + path pattern bound to a handler."""

    method: str
    pattern: str
    handler: Handler
    name: str
    regex: re.Pattern[str]


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Turn "/api/segments/{id}/profiles" into a regex with named groups."""
    parts = re.split(r"\{(\w+)\}", pattern)
    regex = ""
    for index, part in enumerate(parts):
        regex += f"(?P<{part}>[^/]+)" if index % 2 else re.escape(part)
    return re.compile(f"^{regex}$")


class Router:
    """Routes requests by method and path pattern to async handlers."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(
        self, method: str, pattern: str, handler: Handler, name: str | None = None
    ) -> None:
        """Register `handler` for `method` on paths matching `pattern`."""
        self.routes.append(
            Route(
                method.upper(),
                pattern,
                handler,
                name or handler.__name__,
                compile_pattern(pattern),
            )
        )

    def route(
        self, method: str, pattern: str, name: str | None = None
    ) -> Callable[[Handler], Handler]:
        """Decorator form of `add`."""

        def register(handler: Handler) -> Handler:
            self.add(method, pattern, handler, name)
            return handler

        return register

    def include(self, other: Router, prefix: str = "") -> None:
        """Copy another router's routes in, optionally under a path prefix."""
        for route in other.routes:
            self.add(route.method, prefix + route.pattern, route.handler, route.name)

    def match(
        self, method: str, path: str
    ) -> tuple[Route | None, dict[str, str], bool]:
        """The matching route and its params; the flag says the path exists at all."""
        path_known = False
        for route in self.routes:
            found = route.regex.match(path)
            if found:
                path_known = True
                if route.method == method.upper():
                    return route, found.groupdict(), True
        return None, {}, path_known


ErrorRenderer = Callable[[int, str, str, str], Response]


def plain_error(status: int, code: str, title: str, detail: str) -> Response:
    """A generic JSON error body, used when a service has no shape of its own."""
    return JSONResponse({"error": code, "title": title, "detail": detail}, status)


def asgi_app(
    router: Router,
    faults: FaultInjector | None = None,
    service_name: str = "sim",
    error: ErrorRenderer = plain_error,
) -> ASGIApp:
    """An ASGI app serving `router`, applying `faults` for `service_name`.

    `error(status, code, title, detail)` renders the service's own error body
    for 404/405, uncaught handler errors and injected HTTP faults.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        route, params, path_known = router.match(request.method, request.path)
        if route is None:
            status = 405 if path_known else 404
            title = "Method not allowed." if path_known else "Not found."
            await error(
                status,
                "not_found" if status == 404 else "method_not_allowed",
                title,
                f"{request.method} {request.path} is not served here.",
            ).send(send)
            return
        if faults is not None:
            fault = faults.take(service_name, request.method, request.path, route.name)
            if fault is not None:
                handled = await fault.apply(send, error)
                if handled:
                    return
        try:
            response = await route.handler(request, **params)
        except Exception:
            log.exception(
                "%s simulator failed on %s %s",
                service_name,
                request.method,
                request.path,
            )
            response = error(500, "error", "Internal error.", "The simulator failed.")
        await response.send(send)

    return app


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class Mount:
    """Serves several ASGI apps under path prefixes; unmatched paths get 404.

    The matched prefix moves from `path` to `root_path`, so a mounted app sees
    its own paths and `Request.base_url` still names the external prefix.
    """

    def __init__(
        self, apps: Mapping[str, ASGIApp] | Iterable[tuple[str, ASGIApp]]
    ) -> None:
        items = apps.items() if isinstance(apps, Mapping) else apps
        # Longest prefix first so "/_sim/klaviyo" wins over "/_sim".
        self.apps = sorted(
            ((prefix.rstrip("/"), app) for prefix, app in items),
            key=lambda item: len(item[0]),
            reverse=True,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch one ASGI connection to the app owning its path prefix."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        path: str = scope.get("path", "")
        for prefix, app in self.apps:
            if prefix == "" or path == prefix or path.startswith(prefix + "/"):
                child = dict(scope)
                child["path"] = path[len(prefix) :] or "/"
                child["root_path"] = scope.get("root_path", "") + prefix
                await app(child, receive, send)
                return
        await plain_error(
            404, "not_found", "Not found.", f"{path} is not served here."
        ).send(send)
