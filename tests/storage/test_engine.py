from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.pool import QueuePool, StaticPool

from storage import Storage, StorageUnavailable, open_engine
from storage.engine import SQLITE_CACHE_KIB, describe_url


def test_sqlite_file_is_created_private_with_wal(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    storage = Storage.open(f"sqlite:///{path}")
    try:
        storage.migrate()
        storage.keys.create({"token": "t" * 64})
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with storage.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert (tmp_path / "new.db-wal").exists()
    finally:
        storage.close()


def test_sqlite_keeps_mode_of_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "existing.db"
    path.touch(mode=0o640)
    os.chmod(path, 0o640)
    engine = open_engine(f"sqlite:///{path}")
    engine.dispose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_sqlite_pragmas_apply_to_every_pooled_connection(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'p.db'}", pool_size=3)
    try:
        assert isinstance(engine.pool, QueuePool)
        assert engine.pool.size() == 3
        with engine.connect() as first, engine.connect() as second:
            for connection in (first, second):
                assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
                assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
                assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
                assert connection.exec_driver_sql("PRAGMA cache_size").scalar() == -SQLITE_CACHE_KIB
    finally:
        engine.dispose()


def test_default_url_is_edgeproxy_db_in_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    engine = open_engine(None)
    try:
        assert engine.dialect.name == "sqlite"
        assert engine.url.database == str(tmp_path / "edgeproxy.db")
        assert stat.S_IMODE((tmp_path / "edgeproxy.db").stat().st_mode) == 0o600
    finally:
        engine.dispose()


def test_sqlite_in_a_missing_directory_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StorageUnavailable, match="cannot create database"):
        open_engine(f"sqlite:///{tmp_path / 'nope' / 'x.db'}")


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_memory_sqlite_is_one_database_shared_across_threads(url: str) -> None:
    storage = Storage.open(url)
    try:
        assert isinstance(storage.engine.pool, StaticPool)
        storage.migrate()
        storage.users.create({"user_id": "u1"})
        seen: list[object] = []
        worker = threading.Thread(target=lambda: seen.append(storage.users.get("u1")))
        worker.start()
        worker.join()
        assert seen and isinstance(seen[0], dict) and seen[0]["user_id"] == "u1"
    finally:
        storage.close()


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_postgres_urls_use_psycopg3_with_sized_pool(scheme: str) -> None:
    engine = open_engine(f"{scheme}://app:s3cret@db.example:5433/edge?options=-csearch_path%3Dx", pool_size=7)
    try:
        assert engine.url.drivername == "postgresql+psycopg"
        assert engine.url.query["options"] == "-csearch_path=x"
        assert isinstance(engine.pool, QueuePool)
        assert engine.pool.size() == 7
        assert engine.pool._pre_ping  # type: ignore[attr-defined]
    finally:
        engine.dispose()


def test_describe_hides_password() -> None:
    storage = Storage.open("postgresql://app:s3cret@db.example:5433/edge?password=also-secret")
    try:
        description = storage.describe()
        assert "s3cret" not in description and "also-secret" not in description
        assert "app@db.example:5433/edge" in description
        assert storage.dialect == "postgresql"
    finally:
        storage.close()
    assert describe_url("sqlite:///x.db") == "sqlite:///x.db"


@pytest.mark.parametrize("url", ["mysql://u@h/d", "not a url"])
def test_unsupported_urls_are_rejected(url: str) -> None:
    with pytest.raises(ValueError, match="database URL"):
        open_engine(url)


def test_closed_port_is_unavailable_with_clear_message() -> None:
    storage = Storage.open("postgresql://postgres:hunter2@127.0.0.1:1/test")
    try:
        with pytest.raises(StorageUnavailable) as info:
            storage.ping()
        message = str(info.value)
        assert "127.0.0.1:1/test" in message
        assert "refused" in message.lower()
        assert "hunter2" not in message
        # Repository calls and migrations fail the same way instead of leaking driver exceptions.
        with pytest.raises(StorageUnavailable, match=r"127\.0\.0\.1:1"):
            storage.keys.get("x")
        with pytest.raises(StorageUnavailable):
            storage.migrate()
    finally:
        storage.close()


def test_ping_succeeds_on_a_live_database(storage: Storage) -> None:
    storage.ping()
    with storage.engine.connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar() == 1
    assert storage.dialect in {"sqlite", "postgresql"}
