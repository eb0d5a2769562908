"""Allow `python -m zaptui`."""

from zaptui.cli import main

raise SystemExit(main())
