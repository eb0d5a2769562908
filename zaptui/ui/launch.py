"""Opening the console: on the configured database, or on a fresh demo."""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import platformdirs

from zaptui.runtime import Runtime
from zaptui.services import Services
from zaptui.store.db import database_url_from_env, open_database
from zaptui.store.secrets import new_key

log = logging.getLogger(__name__)

AutoPilot = Callable[[Any], Awaitable[None]]


def launch_console(
    args: argparse.Namespace, auto_pilot: AutoPilot | None = None
) -> int:
    """Run the console until the operator quits; returns the exit status.

    `auto_pilot` drives the app headless instead of on the terminal (for tests).
    """
    if getattr(args, "demo", False):
        return _launch_demo(auto_pilot)
    _log_to(console_log_path())
    try:
        database = open_database(database_url_from_env(args.db))
        try:
            runtime = Runtime.from_env(args.klaviyo_url, args.zap_url)
            return _run(Services(runtime), None, auto_pilot)
        finally:
            database.close()
    finally:
        _stop_logging_to_file()


def console_log_path() -> Path:
    """Where the console writes its log: ZAPTUI_LOG_FILE, else the user log folder."""
    explicit = os.environ.get("ZAPTUI_LOG_FILE")
    if explicit:
        return Path(explicit)
    return Path(platformdirs.user_log_dir("zaptui")) / "console.log"


def _launch_demo(auto_pilot: AutoPilot | None) -> int:
    """Build a demo in a folder of its own, run the console on it, then delete it."""
    from zaptui.demo import build_demo

    with tempfile.TemporaryDirectory(prefix="zaptui-demo-") as name:
        folder = Path(name)
        key = new_key()
        built = []

        def prepare() -> Services:
            demo = build_demo(folder, secret_key=key)
            built.append(demo)
            return demo.services

        # The demo's secrets use a key of its own, never the user's key file.
        with _environment(
            ZAPTUI_SECRET_KEY=key, ZAPTUI_SECRET_KEY_FILE=str(folder / "secret.key")
        ):
            _log_to(folder / "console.log")
            try:
                return _run(None, prepare, auto_pilot, preparing="Building the demo…")
            finally:
                for demo in built:
                    demo.close()
                _stop_logging_to_file()


def _run(
    services: Services | None,
    prepare: Callable[[], Services] | None,
    auto_pilot: AutoPilot | None,
    preparing: str = "Starting…",
) -> int:
    from zaptui.ui.app import ZapTuiApp

    app = ZapTuiApp(
        services,
        prepare=prepare,
        preparing=preparing,
        start_scheduler=True,
        quit_on_hangup=auto_pilot is None,
    )
    if auto_pilot is None:
        app.run()
    else:
        app.run(headless=True, auto_pilot=auto_pilot, size=(120, 36))
    return app.return_code or 0


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables for a while, then put the old values back."""
    old = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _log_to(path: Path) -> None:
    """Send log lines to a file: the terminal belongs to the console."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    _stop_logging_to_file()
    handler.zaptui_console = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _stop_logging_to_file() -> None:
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "zaptui_console", False)]:
        root.removeHandler(old)
        old.close()
