"""Fixtures shared by the whole suite: a real database per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import peewee as pw
import pytest
from pytest_textual_snapshot import SVGImageExtension
from syrupy.assertion import SnapshotAssertion
from syrupy.location import PyTestLocation
from ui_support import demo_for_test

from zaptui.demo import Demo
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


@pytest.fixture
def demo(tmp_path) -> Iterator[Demo]:
    """The small fixed demo (the console's tests drive it)."""
    yield from demo_for_test(tmp_path)


@pytest.fixture
def full_demo(tmp_path) -> Iterator[Demo]:
    """The fixed demo at its full size, as `zaptui --demo` builds it."""
    yield from demo_for_test(tmp_path, profiles=None)


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


# -- console snapshots: kept in the top-level snapshots/ folder ------------------

SNAPSHOT_DIR = Path(__file__).resolve().parent.parent / "snapshots"


class TopLevelSVGExtension(SVGImageExtension):
    """Console snapshots as SVG files under snapshots/<test module>/."""

    @classmethod
    def dirname(cls, *, test_location: PyTestLocation) -> str:
        return str(SNAPSHOT_DIR / Path(test_location.filepath).stem)


class TopLevelSnapshotAssertion(SnapshotAssertion):
    """Hands snap_compare the top-level folder's extension instead of its own."""

    def use_extension(self, extension_class=None):  # type: ignore[no-untyped-def]
        if extension_class is SVGImageExtension:
            extension_class = TopLevelSVGExtension
        return super().use_extension(extension_class)


@pytest.fixture
def snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    """syrupy's snapshot fixture, storing console snapshots under snapshots/."""
    return TopLevelSnapshotAssertion(
        session=snapshot.session,
        extension_class=snapshot.extension_class,
        test_location=snapshot.test_location,
        update_snapshots=snapshot.update_snapshots,
    )
