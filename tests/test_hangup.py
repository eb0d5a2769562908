"""A console whose terminal goes away quits cleanly, the demo's folder removed."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCREEN_TIMEOUT = 60.0


def _read_until(master: int, text: bytes, deadline: float) -> bytes:
    seen = b""
    while text not in seen:
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} never appeared on the console's screen")
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                seen += os.read(master, 65536)
            except OSError:
                break
    return seen


@pytest.mark.parametrize("signal_number", [signal.SIGHUP, signal.SIGTERM])
def test_demo_console_quits_on_hangup_and_removes_its_folder(
    tmp_path: Path, signal_number: int
) -> None:
    master, slave = os.openpty()
    env = dict(os.environ, TMPDIR=str(tmp_path), TERM="xterm-256color")
    env["ZAPTUI_LOG_FILE"] = str(tmp_path / "console.log")
    console = subprocess.Popen(
        [sys.executable, "-m", "zaptui", "--demo"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    try:
        deadline = time.monotonic() + SCREEN_TIMEOUT
        _read_until(master, b"Data Connections", deadline)
        while not list(tmp_path.glob("zaptui-demo-*/demo.db")):
            assert time.monotonic() < deadline, "the demo built no database"
            time.sleep(0.1)

        console.send_signal(signal_number)
        # Keep draining the terminal so the console's last writes never block.
        while console.poll() is None and time.monotonic() < deadline:
            select.select([master], [], [], 0.2)
            try:
                os.read(master, 65536)
            except OSError:
                time.sleep(0.1)
        assert console.wait(timeout=10) == 0
    finally:
        if console.poll() is None:
            console.kill()
        os.close(master)

    assert list(tmp_path.glob("zaptui-demo-*")) == []
