"""Opening the database: SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

import peewee as pw
import platformdirs

from zaptui.store.migrations import migrate
from zaptui.store.models import database_proxy

log = logging.getLogger(__name__)

# Several processes (the console, headless schedulers, the CLI) share one
# SQLite file: WAL lets readers run beside the writer, write transactions take
# the lock up front (BEGIN IMMEDIATE) so two writers never deadlock on an
# upgrade from a read lock, and the busy timeout makes a writer wait its turn.
SQLITE_PRAGMAS = {
    # Before the journal mode, which fixes the page size of a new file. Larger
    # pages mean fewer pages written per commit of a sync's random-keyed
    # indexes (an existing file keeps its size).
    "page_size": 16384,
    "journal_mode": "wal",
    "busy_timeout": 30_000,
    "foreign_keys": 1,
    "synchronous": "normal",
    # Twice SQLite's default: recording a 100,000-profile run's ledger rows
    # takes half the time, while 8 MiB would save little more and cost every
    # connection's memory more.
    "cache_size": -4096,
}


class DatabaseUrlError(ValueError):
    """The database URL cannot be understood."""


def default_database_path() -> Path:
    """Where the SQLite database lives when no URL is given."""
    return Path(platformdirs.user_data_dir("zaptui")) / "zaptui.db"


def database_url_from_env(explicit: str | None = None) -> str:
    """The URL to use: an explicit one, else ZAPTUI_DB, else the default file."""
    return (
        explicit
        or os.environ.get("ZAPTUI_DB")
        or f"sqlite:///{default_database_path()}"
    )


def describe_url(url: str) -> str:
    """The URL without any password, for messages and logs."""
    parsed = urlparse(url)
    if parsed.password:
        netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@")
        return parsed._replace(netloc=netloc).geturl()
    return url


def connect(url: str) -> pw.Database:
    """Make a peewee database for a URL, without binding or migrating it."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = unquote(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else ""
        if not path:
            raise DatabaseUrlError(
                f"cannot read database URL {describe_url(url)!r}: "
                "use sqlite:///PATH or postgresql://USER@HOST/DB"
            )
        if path != ":memory:":
            _create_private_file(Path(path))
        return pw.SqliteDatabase(
            path, pragmas=SQLITE_PRAGMAS, lock_type="IMMEDIATE", timeout=30
        )
    if parsed.scheme in ("postgres", "postgresql"):
        return pw.PostgresqlDatabase(
            (parsed.path or "/").lstrip("/") or "postgres",
            user=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            host=parsed.hostname or None,
            port=parsed.port or None,
        )
    raise DatabaseUrlError(
        f"unsupported database URL {describe_url(url)!r}: "
        "use sqlite:///PATH or postgresql://USER@HOST/DB"
    )


def open_database(url: str) -> pw.Database:
    """Open the database at a URL, bind the models to it and bring it up to date."""
    db = connect(url)
    database_proxy.initialize(db)
    db.connect(reuse_if_open=True)
    migrate(db)
    log.debug("database open: %s", describe_url(url))
    return db


def is_postgres(db: pw.Database | None = None) -> bool:
    """Whether the bound database is PostgreSQL."""
    target = db if db is not None else database_proxy.obj
    return isinstance(target, pw.PostgresqlDatabase)


def _create_private_file(path: Path) -> None:
    """Create the database file (and its folder) readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
