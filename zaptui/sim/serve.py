"""Run a simulator app on real HTTP: in a background thread for tests, or forever."""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType

import uvicorn

from zaptui.sim.asgi import ASGIApp
from zaptui.sim.faults import ConnectionDropped

log = logging.getLogger(__name__)


class _QuietDrops(logging.Filter):
    """Hides the traceback uvicorn logs when a fault drops a connection on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectionDropped)


_quiet_drops = _QuietDrops()


def _config(app: ASGIApp, host: str, port: int, log_level: str) -> uvicorn.Config:
    logging.getLogger("uvicorn.error").addFilter(_quiet_drops)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        # Leave the process's logging setup alone.
        log_config=None,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )


class ServerHandle:
    """A uvicorn server running in a daemon thread; `.url` is its base URL."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, url: str):
        self.server = server
        self.thread = thread
        self.url = url

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the server to exit and wait for its thread."""
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_in_thread(
    app: ASGIApp, host: str = "127.0.0.1", port: int = 0, timeout: float = 10.0
) -> ServerHandle:
    """Start `app` on host:port (0 picks a free port) and return once it accepts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(_config(app, host, bound_port, "warning"))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="sim-server", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"simulator did not start on {host}:{bound_port}")
        time.sleep(0.005)
    url = f"http://{host}:{bound_port}"
    log.debug("simulator serving on %s", url)
    return ServerHandle(server, thread, url)


def serve_forever(app: ASGIApp, host: str = "127.0.0.1", port: int = 8025) -> None:
    """Serve `app` in the foreground until interrupted (for the CLI)."""
    uvicorn.Server(_config(app, host, port, "info")).run()
