"""Where the console's stylesheets live, installed or in a checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent


def styles_dir() -> Path:
    """The folder of `.tcss` files: inside the wheel, else the checkout's styles/."""
    installed = _PACKAGE / "_styles"
    if installed.is_dir():
        return installed
    return _PACKAGE.parent / "styles"


def stylesheets() -> list[Path]:
    """Every stylesheet, app.tcss first, the rest by name."""
    found = sorted(styles_dir().glob("*.tcss"))
    return sorted(found, key=lambda path: (path.name != "app.tcss", path.name))
