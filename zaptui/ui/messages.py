"""Messages the console's widgets send each other."""

from __future__ import annotations

from textual.message import Message


class DataChanged(Message):
    """Something in the database changed; tabs that show it reload.

    `what` names the kind of change: "accounts", "connections", "runs",
    "settings" or "logs" (several tabs may care about one change).
    """

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what
