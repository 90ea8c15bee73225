"""A migrated SQLite storage per test: the admin functions are plain sync code over it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import Storage

MODELS = ["gpt-small", "gpt-large", "local-llama"]


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    opened = Storage.open(f"sqlite:///{tmp_path}/t.db")
    try:
        opened.migrate()
        yield opened
    finally:
        opened.close()
