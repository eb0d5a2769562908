"""`zaptui --run-scheduler`: the sync scheduler with no screen.

It logs to stderr, one line per event (plain text, or JSON with
`--log-format json`), recovers runs an earlier process left unfinished, and
then either polls until SIGTERM or SIGINT (a sync in flight stops at a safe
point and the next start recovers it) or, with `--once`, runs everything due
and exits: 0 normally, 1 when a sync failed, 2 for bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from zaptui.apilog import redact_text

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"
# Loggers whose INFO lines are the headless log; everything else speaks at
# WARNING and above, so each sync is one line rather than one per HTTP call.
EVENT_LOGGERS = ("zaptui.scheduler", "zaptui.headless")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        fields = getattr(record, "zaptui", None)
        if isinstance(fields, dict):
            entry.update({k: v for k, v in fields.items() if v is not None})
        if record.exc_info:
            entry["error"] = redact_text(
                self.formatException(record.exc_info).splitlines()[-1]
            )
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Plain lines; an exception is reduced to its last line, never a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            line = super().format(record)
        finally:
            record.exc_info, record.exc_text = saved
        if record.exc_info and record.exc_info[1] is not None:
            line += f": {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        return redact_text(line)


class _EngineDuplicates(logging.Filter):
    """Drops the engine's own line for a finished run: the scheduler logs each
    sync's outcome itself, with the connection's name."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.name == "zaptui.sync.engine" and record.funcName == "_log_finish"
        )


def configure_logging(log_format: str = "text", stream: TextIO | None = None) -> None:
    """Send log lines to stderr in the chosen format, one line per event."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else TextFormatter(TEXT_FORMAT)
    )
    handler.addFilter(_EngineDuplicates())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in EVENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    if os.environ.get("ZAPTUI_DEBUG"):
        root.setLevel(logging.DEBUG)
        quiet_sql_echo()


def quiet_sql_echo() -> None:
    """Keep peewee's SQL echo out of debug output: it prints every value
    written, the alert webhook's token and profiles' addresses among them."""
    logging.getLogger("peewee").setLevel(logging.INFO)


def run_headless_scheduler(args: argparse.Namespace) -> int:
    """Run the scheduler without a screen; returns the exit status."""
    configure_logging(getattr(args, "log_format", "text") or "text")

    from zaptui.runtime import ConfigurationError, Runtime
    from zaptui.services import Services
    from zaptui.store.db import (
        DatabaseUrlError,
        database_url_from_env,
        describe_url,
        open_database,
    )

    url = database_url_from_env(getattr(args, "db", None))
    try:
        open_database(url)
    except DatabaseUrlError as error:
        log.error("%s", error)
        return EXIT_USAGE
    runtime = Runtime.from_env(
        getattr(args, "klaviyo_url", None), getattr(args, "zap_url", None)
    )
    try:
        runtime.zap_credentials()
    except ConfigurationError as error:
        log.error("%s", error)
        return EXIT_USAGE
    services = Services(runtime)
    once = bool(getattr(args, "once", False))
    log.info(
        "scheduler %s on %s as %s",
        "running what is due" if once else "starting",
        describe_url(url),
        runtime.owner,
    )
    if once:
        return asyncio.run(_run_once(services))
    return asyncio.run(_run_until_stopped(services))


def _make_scheduler(services: Any) -> Any:
    from zaptui.scheduler import SyncScheduler

    return SyncScheduler(services, mode="headless")


def _on_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """SIGTERM or SIGINT: stop at a safe point; a second one: exit at once."""

    def handle(signum: int) -> None:
        if stop.is_set():
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(EXIT_FAILED)
        log.info(
            "%s received: stopping; a sync in flight stops at a safe point",
            signal.Signals(signum).name,
        )
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, handle, signum)


async def _run_until_stopped(services: Any) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    _on_signals(loop, stop)
    scheduler = _make_scheduler(services)
    scheduler.start()
    await stop.wait()
    scheduler.shutdown()
    await scheduler.drain()
    log.info("scheduler stopped")
    return EXIT_OK


async def _run_once(services: Any) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    _on_signals(loop, stop)
    scheduler = _make_scheduler(services)
    work = asyncio.ensure_future(scheduler.run_once())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not work.done():
        scheduler.shutdown()
    failed = await work
    stopping.cancel()
    log.info(
        "scheduler ran what was due: %d sync(s), %d failed",
        len(scheduler.finished_runs),
        failed,
    )
    return EXIT_FAILED if failed else EXIT_OK
