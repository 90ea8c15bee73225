"""Fixtures: every storage test runs once on a SQLite file and once on a fresh PostgreSQL schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import Storage
from tests.storage.pg import temporary_pg_url

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty database (no tables yet)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'edgeproxy-test.db'}"
    else:
        with temporary_pg_url() as url:
            yield url


@pytest.fixture
def storage(database_url: str) -> Iterator[Storage]:
    """A migrated Storage on a fresh database."""
    opened = Storage.open(database_url, pool_size=10)
    try:
        opened.migrate()
        yield opened
    finally:
        opened.close()
