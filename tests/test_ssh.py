"""The console served over SSH, driven by a real SSH client over loopback."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
from pathlib import Path

import asyncssh
import pytest

from zaptui.links import browser_opens_here
from zaptui.ssh import console_environment, start_server

SCREEN_TIMEOUT = 60.0
_ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)")


def _operator_key(tmp_path: Path) -> asyncssh.SSHKey:
    key = asyncssh.generate_private_key("ssh-ed25519")
    (tmp_path / "authorized_keys").write_bytes(key.export_public_key())
    return key


async def _read_until(process: asyncssh.SSHClientProcess, text: bytes) -> bytes:
    """Read the terminal stream until `text` shows, escape sequences removed."""
    seen = b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SCREEN_TIMEOUT
    while text not in _ESCAPES.sub(b"", seen):
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"{text!r} never appeared on the SSH screen")
        chunk = await asyncio.wait_for(process.stdout.read(65536), remaining)
        if not chunk:
            raise AssertionError(f"the console ended before {text!r} appeared")
        seen += chunk
    return seen


async def test_operator_opens_the_console_over_ssh_and_quits(tmp_path: Path) -> None:
    key = _operator_key(tmp_path)
    server = await start_server(
        "127.0.0.1",
        0,
        host_key=tmp_path / "host_key",
        authorized_keys=tmp_path / "authorized_keys",
        console_args=["--demo"],
    )
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncssh.connect(
            "127.0.0.1",
            port,
            username="alice",
            client_keys=[key],
            known_hosts=None,
        ) as conn:
            process = await conn.create_process(
                term_type="xterm-256color", term_size=(100, 30), encoding=None
            )
            await _read_until(process, b"Integration Status")
            process.change_terminal_size(120, 36)
            process.stdin.write(b"q")
            await asyncio.wait_for(process.wait(), SCREEN_TIMEOUT)
        assert (tmp_path / "host_key").stat().st_mode & 0o777 == 0o600
    finally:
        server.close()
        await server.wait_closed()


async def test_unknown_key_is_refused(tmp_path: Path) -> None:
    _operator_key(tmp_path)
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    server = await start_server(
        "127.0.0.1",
        0,
        host_key=tmp_path / "host_key",
        authorized_keys=tmp_path / "authorized_keys",
    )
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(asyncssh.PermissionDenied):
            await asyncssh.connect(
                "127.0.0.1",
                port,
                username="mallory",
                client_keys=[stranger],
                known_hosts=None,
            )
    finally:
        server.close()
        await server.wait_closed()


async def test_session_without_a_terminal_is_told_to_ask_for_one(
    tmp_path: Path,
) -> None:
    key = _operator_key(tmp_path)
    server = await start_server(
        "127.0.0.1",
        0,
        host_key=tmp_path / "host_key",
        authorized_keys=tmp_path / "authorized_keys",
    )
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncssh.connect(
            "127.0.0.1", port, username="bob", client_keys=[key], known_hosts=None
        ) as conn:
            process = await conn.create_process(encoding=None)
            output = await asyncio.wait_for(process.stdout.read(), SCREEN_TIMEOUT)
            await process.wait()
        assert b"needs a terminal" in output
        assert process.exit_status == 1
    finally:
        server.close()
        await server.wait_closed()


def test_ssh_user_is_the_audit_actor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZAPTUI_ACTOR", "someone-else")
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/agent.sock")

    env = console_environment("alice", "xterm", 100, 30)

    assert env["ZAPTUI_ACTOR"] == "alice"
    assert "SSH_AUTH_SOCK" not in env
    assert (env["COLUMNS"], env["LINES"], env["TERM"]) == ("100", "30", "xterm")


def test_an_operators_console_does_not_open_browsers_on_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")

    env = console_environment("alice", "xterm", 100, 30)

    assert "DISPLAY" not in env and "WAYLAND_DISPLAY" not in env
    assert not browser_opens_here(env, "darwin")


async def test_serve_ssh_command_serves_the_demo_console(tmp_path: Path) -> None:
    key = _operator_key(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zaptui",
            "--demo",
            "serve-ssh",
            "--port",
            str(port),
            "--authorized-keys",
            str(tmp_path / "authorized_keys"),
            "--host-key",
            str(tmp_path / "host_key"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        conn = await _connect_when_listening(port, key)
        async with conn:
            process = await conn.create_process(
                term_type="xterm-256color", term_size=(80, 24), encoding=None
            )
            await _read_until(process, b"Data Connections")
            process.stdin.write(b"q")
            await asyncio.wait_for(process.wait(), SCREEN_TIMEOUT)
        assert process.exit_status == 0
    finally:
        server.terminate()
        _, errors = server.communicate(timeout=30)
    assert b"serving the console over SSH" in errors
    assert b"console opened over SSH for alice" in errors
    assert b"Traceback" not in errors


async def _connect_when_listening(
    port: int, key: asyncssh.SSHKey
) -> asyncssh.SSHClientConnection:
    """Connect as alice once the server accepts connections."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SCREEN_TIMEOUT
    while True:
        try:
            return await asyncssh.connect(
                "127.0.0.1",
                port,
                username="alice",
                client_keys=[key],
                known_hosts=None,
            )
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)
