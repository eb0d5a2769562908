"""Fixtures shared by the whole suite: a real database per test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import peewee as pw
import pytest

from zaptui.store.db import open_database
from zaptui.store.models import ALL_MODELS, database_proxy

PG_URL = os.environ.get("ZAPTUI_TEST_PG_URL")
PG_SKIP_REASON = (
    "PostgreSQL tests need ZAPTUI_TEST_PG_URL "
    "(e.g. postgresql://postgres@127.0.0.1:5432/test); .ci/run sets it"
)


@pytest.fixture(autouse=True)
def _secret_key(tmp_path, monkeypatch) -> None:
    """Every test gets its own encryption key file, never the user's."""
    monkeypatch.delenv("ZAPTUI_SECRET_KEY", raising=False)
    monkeypatch.setenv("ZAPTUI_SECRET_KEY_FILE", str(tmp_path / "secret.key"))


@pytest.fixture
def db_url(tmp_path) -> str:
    """A fresh SQLite database URL in the test's own folder."""
    return f"sqlite:///{tmp_path / 'zaptui.db'}"


@pytest.fixture
def db(db_url) -> Iterator[pw.Database]:
    """A fresh SQLite database, migrated and bound to the models."""
    database = open_database(db_url)
    yield database
    database.close()


def reset_postgres(url: str) -> None:
    """Drop zaptui's tables so a PostgreSQL test starts from nothing."""
    from zaptui.store.db import connect

    database = connect(url)
    database.connect()
    with database.bind_ctx(ALL_MODELS):
        database.drop_tables(ALL_MODELS, safe=True, cascade=True)
    database.close()


@pytest.fixture
def pg_url() -> str:
    """The PostgreSQL URL for tests, with zaptui's tables dropped first."""
    if not PG_URL:
        pytest.skip(PG_SKIP_REASON)
    reset_postgres(PG_URL)
    return PG_URL


@pytest.fixture
def pg_db(pg_url) -> Iterator[pw.Database]:
    """A fresh PostgreSQL database bound to the models."""
    database = open_database(pg_url)
    yield database
    database.close()
    database_proxy.initialize(None)
