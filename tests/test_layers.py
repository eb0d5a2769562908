"""The layers below the console never import Textual."""

from __future__ import annotations

import importlib.util
import pkgutil
import subprocess
import sys

import zaptui

CORE_PACKAGES = ("store", "domain", "klaviyo", "zappost", "sync", "sim", "scheduler")
CORE_MODULES = (
    "clock",
    "apilog",
    "settings",
    "runtime",
    "services",
    "cli",
    "headless",
    "demo",
    "ssh",
    "links",
)


def _core_modules() -> list[str]:
    names = [f"zaptui.{name}" for name in CORE_MODULES]
    for info in pkgutil.walk_packages(zaptui.__path__, "zaptui."):
        top = info.name.split(".")[1]
        if top in CORE_PACKAGES:
            names.append(info.name)
    return names


def test_core_layers_import_no_textual():
    modules = [
        name for name in _core_modules() if importlib.util.find_spec(name) is not None
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'textual')\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"Textual imported by a core module: {modules}"
    assert "zaptui.store.models" in modules
