"""The console served over SSH: each operator's session runs its own console.

`zaptui serve-ssh` listens for SSH connections and, for every session that
asks for a terminal, starts `zaptui` (the console, with the same database and
API options as the server) on a fresh pseudo-terminal sized to the
operator's window. Operators log in with a public key listed in an
authorized_keys file; their SSH user name becomes the actor recorded in the
audit trail. Window resizes reach the console; closing the connection ends it.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import struct
import subprocess
import sys
import termios
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncssh

from zaptui.links import DISPLAY_VARIABLES, REMOTE_CONSOLE_ENV

log = logging.getLogger(__name__)

_READ_CHUNK = 65536


def set_window_size(fd: int, columns: int, rows: int) -> None:
    """Tell a pseudo-terminal (and so the program on it) its new size."""
    os.set_blocking(fd, True)
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    finally:
        os.set_blocking(fd, False)


def console_environment(
    username: str, term_type: str, columns: int, rows: int
) -> dict[str, str]:
    """The environment of one operator's console process."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SSH_", "ZAPTUI_ACTOR"))
        # The server's display is not the operator's.
        and key not in DISPLAY_VARIABLES
    }
    env.update(
        ZAPTUI_ACTOR=username,
        **{REMOTE_CONSOLE_ENV: "1"},
        TERM=term_type or "xterm-256color",
        COLUMNS=str(columns),
        LINES=str(rows),
        # Textual reads the terminal's colour support from these.
        COLORTERM=env.get("COLORTERM", "truecolor"),
    )
    return env


class ConsoleSession(asyncssh.SSHServerSession):  # type: ignore[type-arg]
    """One SSH session: a console process on a pseudo-terminal, piped both ways."""

    def __init__(self, command: Sequence[str]) -> None:
        self._command = list(command)
        self._channel: asyncssh.SSHServerChannel | None = None  # type: ignore[type-arg]
        self._process: subprocess.Popen[bytes] | None = None
        self._master: int | None = None
        self._term_type = "xterm-256color"
        self._size = (80, 24)
        self._reaper: asyncio.Task[None] | None = None

    def connection_made(self, chan: Any) -> None:
        self._channel = chan

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Any
    ) -> bool:
        self._term_type = term_type
        if term_size[0] and term_size[1]:
            self._size = (term_size[0], term_size[1])
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        return False  # the console only: no remote commands

    def session_started(self) -> None:
        assert self._channel is not None
        if self._channel.get_terminal_type() is None:
            self._channel.write(b"zaptui needs a terminal: connect with ssh -t\r\n")
            self._channel.exit(1)
            return
        username = self._channel.get_extra_info("username") or "operator"
        master, slave = os.openpty()
        set_window_size(master, *self._size)
        env = console_environment(username, self._term_type, *self._size)
        self._process = subprocess.Popen(
            self._command,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
        os.close(slave)
        os.set_blocking(master, False)
        self._master = master
        asyncio.get_running_loop().add_reader(master, self._pump_output)
        log.info("console opened over SSH for %s (pid %d)", username, self._process.pid)

    def _pump_output(self) -> None:
        assert self._master is not None and self._channel is not None
        try:
            data = os.read(self._master, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # the console closed its terminal
        if data:
            self._channel.write(data)
            return
        self._finish()

    def _finish(self) -> None:
        if self._master is None:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._master)
        os.close(self._master)
        self._master = None
        # Reaping may take a moment; other operators' sessions must not wait.
        self._reaper = loop.create_task(self._exit_with_console())

    async def _exit_with_console(self) -> None:
        code = 0
        if self._process is not None:
            code = await asyncio.to_thread(_reap, self._process)
        if self._channel is not None:
            self._channel.exit(code if code >= 0 else 1)

    def data_received(self, data: bytes, datatype: Any) -> None:
        if self._master is not None:
            try:
                os.write(self._master, data)
            except BlockingIOError:
                log.warning("console input dropped: its terminal is full")

    def terminal_size_changed(
        self, width: int, height: int, pixwidth: int, pixheight: int
    ) -> None:
        self._size = (width, height)
        if self._master is not None and width and height:
            set_window_size(self._master, width, height)

    def connection_lost(self, exc: Exception | None) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGHUP)
            except ProcessLookupError:
                pass
        self._channel = None  # gone with the connection: nothing to tell it
        if self._master is not None:
            self._finish()


def _reap(process: subprocess.Popen[bytes]) -> int:
    """Wait for a console that closed its terminal; kill it if it lingers."""
    try:
        return process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


class ConsoleServer(asyncssh.SSHServer):
    """Hands every new session a console of its own."""

    def __init__(self, command: Sequence[str]) -> None:
        self._command = list(command)

    def session_requested(self) -> ConsoleSession:
        return ConsoleSession(self._command)


def console_command(console_args: Sequence[str]) -> list[str]:
    """The command each session runs: this Python's zaptui, with the options."""
    return [sys.executable, "-m", "zaptui", *console_args]


def ensure_host_key(path: Path) -> None:
    """Create the server's host key (readable by its owner only) if missing."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(str(path))
    path.chmod(0o600)
    log.info("created SSH host key %s", path)


async def start_server(
    host: str,
    port: int,
    *,
    host_key: Path,
    authorized_keys: Path,
    console_args: Sequence[str] = (),
) -> asyncssh.SSHAcceptor:
    """Listen for operators; returns the acceptor (close it to stop)."""
    ensure_host_key(host_key)
    command = console_command(console_args)
    return await asyncssh.create_server(
        lambda: ConsoleServer(command),
        host,
        port,
        server_host_keys=[str(host_key)],
        authorized_client_keys=str(authorized_keys),
        encoding=None,
        allow_scp=False,
        agent_forwarding=False,
        x11_forwarding=False,
    )


def serve(
    host: str,
    port: int,
    *,
    host_key: Path,
    authorized_keys: Path,
    console_args: Sequence[str] = (),
) -> None:
    """`zaptui serve-ssh`: serve the console until interrupted."""

    async def main() -> None:
        server = await start_server(
            host,
            port,
            host_key=host_key,
            authorized_keys=authorized_keys,
            console_args=console_args,
        )
        log.info("serving the console over SSH on %s:%d", host, port)
        try:
            await server.wait_closed()
        finally:
            server.close()

    asyncio.run(main())
