"""Turning a database URL into a configured SQLAlchemy Engine (SQLite file, SQLite memory, PostgreSQL)."""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import QueuePool, StaticPool

from storage.errors import StorageUnavailable

__all__ = ["DEFAULT_SQLITE_FILE", "WRITE_OPTION", "describe_url", "open_engine"]

DEFAULT_SQLITE_FILE = "edgeproxy.db"

# Execution option a repository sets on a connection that is going to write: on SQLite the transaction
# then starts with BEGIN IMMEDIATE, so it takes the write lock up front (waiting up to busy_timeout)
# instead of failing with "database is locked" when a deferred read transaction tries to upgrade.
WRITE_OPTION = "storage_write"

_WAL_SWITCH_WAIT_S = 10.0
SQLITE_CACHE_KIB = 512  # per connection
_SQLITE_PRAGMAS = (
    "PRAGMA busy_timeout=5000",  # wait for the write lock instead of failing at once
    "PRAGMA journal_mode=WAL",  # readers do not block the writer
    "PRAGMA synchronous=NORMAL",  # safe with WAL, much faster than FULL
    "PRAGMA foreign_keys=ON",  # SQLite ignores REFERENCES unless asked
    # Each pooled connection keeps its own page cache, 2 MiB by default: a pool of 10 grew the proxy by up to
    # 20 MiB as the spend table grew (a 10-minute soak: +12 MiB, still rising; capped at 100 KiB, +1.8 MiB).
    # The pages a call touches (the newest leaves of the spend table and its indexes) fit in 512 KiB, and the
    # rest comes from the OS's file cache.
    f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}",
)
_PG_CONNECT_TIMEOUT_S = 5


def open_engine(url: str | None, pool_size: int = 10) -> Engine:
    """Create the Engine for ``url``; None means the SQLite file ``edgeproxy.db`` in the working directory.

    Connects lazily: a wrong host shows up on first use (see Storage.ping), not here.
    """
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, pool_size)
    if backend in ("postgresql", "postgres"):
        return _postgres_engine(parsed, pool_size)
    raise ValueError(
        f"unsupported database URL {describe_url(parsed)}: use sqlite:///path/to/file.db or postgresql://..."
    )


def describe_url(url: str | URL) -> str:
    """The URL as safe to log: the password (also a ``password=`` query parameter) removed."""
    parsed = make_url(url) if isinstance(url, str) else url
    # URL.set(password=None) means "leave unchanged", so the URL is rebuilt without it.
    safe = URL.create(
        parsed.drivername,
        username=parsed.username,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
        query={name: value for name, value in parsed.query.items() if name != "password"},
    )
    return safe.render_as_string(hide_password=False)


def _parse(url: str | None) -> URL:
    if url is None:
        return make_url("sqlite:///" + os.path.abspath(DEFAULT_SQLITE_FILE))
    try:
        return make_url(url)
    except ArgumentError:
        # The text may contain a password, so it is not echoed back.
        raise ValueError("the database URL is not a valid URL (expected scheme://...)") from None


def _sqlite_engine(url: URL, pool_size: int) -> Engine:
    path = url.database
    if not path or path == ":memory:":
        # One shared connection: every new connection to :memory: would be a new, empty database.
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        path = os.path.abspath(os.path.expanduser(path))
        _create_private_file(path, url)
        engine = create_engine(
            url.set(database=path),
            poolclass=QueuePool,
            pool_size=pool_size,
            max_overflow=0,
            connect_args={"check_same_thread": False},
        )
    _install_sqlite_hooks(engine)
    return engine


def _create_private_file(path: str, url: URL) -> None:
    # The database holds key hashes and spend: create it readable by the owner only, before SQLite
    # creates it with the umask default (usually 644). SQLite gives its -wal/-shm files the same mode.
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except OSError as error:
        raise StorageUnavailable(f"cannot create database {describe_url(url)}: {error.strerror}") from error
    os.close(fd)


def _execute_pragma(cursor: Any, pragma: str) -> None:
    """Switching a new file to WAL needs an exclusive lock, and SQLite answers "database is locked" at once
    (without its busy handler) when another connection holds one: instances starting together on a fresh
    file must retry. WAL is persistent, so this only ever happens on the first start."""
    deadline = time.monotonic() + _WAL_SWITCH_WAIT_S
    while True:
        try:
            cursor.execute(pragma)
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _install_sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (it starts transactions lazily and
        # never for SELECTs); _on_begin below issues BEGIN itself. Recipe from the SQLAlchemy SQLite docs.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in _SQLITE_PRAGMAS:
                _execute_pragma(cursor, pragma)
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        writes = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")


def _postgres_engine(url: URL, pool_size: int) -> Engine:
    if url.drivername in ("postgres", "postgresql"):
        # psycopg 3 is the driver we ship; postgres:// is what Heroku-style DATABASE_URLs use.
        url = url.set(drivername="postgresql+psycopg")
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = _PG_CONNECT_TIMEOUT_S
    return create_engine(
        url,
        poolclass=QueuePool,
        pool_size=pool_size,
        # No overflow: callers size their thread limiter to the pool, and with several workers extra
        # connections would only eat into the server's max_connections.
        max_overflow=0,
        pool_pre_ping=True,  # drop connections the server closed while idle
        connect_args=connect_args,
    )
