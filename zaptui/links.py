"""Whether a link the console opens reaches a browser the operator can see.

Python's `webbrowser` opens a browser on the host the console runs on. On a
desktop that is what the operator wants. Over SSH (a login from elsewhere, or
the console served by `zaptui serve-ssh`) that host is not the operator's
machine, and on a host without a display `webbrowser` falls back to a console
browser such as lynx, which would draw over the console in this terminal.
There the console copies the link to the clipboard instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

# Set by the SSH server in each operator's console process.
REMOTE_CONSOLE_ENV = "ZAPTUI_REMOTE_CONSOLE"

DISPLAY_VARIABLES = ("DISPLAY", "WAYLAND_DISPLAY")


def browser_opens_here(
    environ: Mapping[str, str] | None = None, platform: str | None = None
) -> bool:
    """Whether opening a link starts a desktop browser in front of the operator."""
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if environ.get(REMOTE_CONSOLE_ENV) or environ.get("SSH_CONNECTION"):
        return False
    if platform in ("darwin", "win32"):
        return True
    return any(environ.get(name) for name in DISPLAY_VARIABLES)
