"""Showing text from outside (profile names, list names, API bodies) literally.

Anything that came from Klaviyo, ZAP~POST or an operator's data is data: it is
wrapped in a Rich `Text` (never parsed as markup) and its control characters,
escape sequences included, are replaced by visible symbols so that nothing
reaches the terminal that could move the cursor, set the clipboard (OSC 52) or
change colours.
"""

from __future__ import annotations

import re

from rich.text import Text

# C0 controls except tab and newline, DEL, and C1 controls (which include CSI
# and OSC when a terminal honours 8-bit forms).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    if code < 0x20:
        return chr(0x2400 + code)  # ␀..␟
    if code == 0x7F:
        return "\u2421"  # ␡
    return "\ufffd"


def clean(value: object, *, single_line: bool = True) -> str:
    """Text with control characters made visible; newlines and tabs flattened."""
    text = "" if value is None else str(value)
    text = _CONTROL.sub(_visible, text)
    if single_line:
        text = text.replace("\r", " ").replace("\n", " ").replace("\t", " ")
    return text


def literal(value: object, *, single_line: bool = True, style: str = "") -> Text:
    """A Rich Text shown exactly as written: no markup, no escape sequences."""
    return Text(clean(value, single_line=single_line), style=style, no_wrap=False)
