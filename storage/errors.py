"""The storage exception hierarchy and the one place driver exceptions are translated into it.

Callers (the HTTP layer, the CLI) only ever see these classes, so they can map them to responses and
exit codes without knowing whether SQLite or PostgreSQL is underneath.
"""

from __future__ import annotations

import re
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc as sa_exc

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "Conflict",
    "NotFound",
    "StorageError",
    "StorageUnavailable",
    "translate_error",
    "translating_errors",
]


class StorageError(Exception):
    """Base class: anything the storage layer could not do."""


class StorageUnavailable(StorageError):
    """The database cannot be reached (refused, lost, locked for too long, pool exhausted)."""


class NotFound(StorageError):
    """The record to read, change or delete does not exist."""


class Conflict(StorageError):
    """A unique field already holds this value; ``field`` names it (``key_alias``, ``user_id``...)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


# PostgreSQL SQLSTATE classes that mean "the connection or server is gone, try again later":
# 08 connection exception, 53 insufficient resources, 57P0x operator intervention (shutdown),
# 55P03 lock not available.
_PG_UNAVAILABLE_PREFIXES = ("08", "53", "57P", "55P03")
_PG_SCHEMA_MISSING = {"42P01", "42703"}  # undefined table, undefined column
_PG_UNIQUE = "23505"
_PG_DETAIL_KEY = re.compile(r"Key \((?P<cols>[^)]*)\)=")
_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (?P<cols>.+)$")
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open database", "disk i/o error", "readonly")
_SQLITE_SCHEMA_MISSING = ("no such table", "no such column")


def translate_error(error: BaseException, database: str) -> StorageError | None:
    """Map a SQLAlchemy or driver exception to a StorageError; None when ``error`` is not a database error.

    ``database`` is the URL without its password, so messages say which database failed.
    """
    if isinstance(error, StorageError):
        return error
    if isinstance(error, sa_exc.TimeoutError):
        return StorageUnavailable(f"no free connection to {database} (pool exhausted): {error}")
    if isinstance(error, sa_exc.DBAPIError):
        orig = error.orig if error.orig is not None else error
        return _from_driver(orig, database, invalidated=error.connection_invalidated)
    if isinstance(error, _psycopg_error() | sqlite3.Error):
        return _from_driver(error, database, invalidated=False)
    if isinstance(error, sa_exc.SQLAlchemyError):
        return StorageError(f"{database}: {error}")
    return None


@contextmanager
def translating_errors(database: str) -> Iterator[None]:
    """Re-raise database exceptions from the block as StorageErrors (the original kept as __cause__)."""
    try:
        yield
    except Exception as error:
        mapped = translate_error(error, database)
        if mapped is None or mapped is error:
            raise
        raise mapped from error


def _from_driver(orig: BaseException, database: str, *, invalidated: bool) -> StorageError:
    message = _first_line(orig)
    if isinstance(orig, _psycopg_error()):
        return _from_psycopg(orig, message, database, invalidated)
    if isinstance(orig, sqlite3.Error):
        return _from_sqlite(orig, message, database)
    if invalidated:
        return StorageUnavailable(f"lost the connection to {database}: {message}")
    return StorageError(f"{database}: {message}")


def _psycopg_error() -> type[Any]:
    """psycopg's base error if the driver is loaded; a class nothing is an instance of otherwise.

    psycopg is imported only with a PostgreSQL URL: an SQLite-only proxy saves its 9 MiB of memory, and a
    psycopg error cannot exist without it.
    """
    module = sys.modules.get("psycopg")
    return module.Error if module is not None else _NeverRaised


class _NeverRaised(Exception):
    pass


def _from_psycopg(orig: psycopg.Error, message: str, database: str, invalidated: bool) -> StorageError:
    state = orig.sqlstate or ""
    if state == _PG_UNIQUE:
        match = _PG_DETAIL_KEY.search(orig.diag.message_detail or "")
        field = match["cols"] if match else orig.diag.constraint_name
        return _conflict(orig.diag.table_name, field)
    if state in _PG_SCHEMA_MISSING:
        return StorageError(f"{database} has no up-to-date schema (run the migrations): {message}")
    # A connection that never opened has no SQLSTATE at all.
    unavailable = not state or state.startswith(_PG_UNAVAILABLE_PREFIXES)
    if (
        invalidated
        or isinstance(orig, sys.modules["psycopg"].InterfaceError)
        or (isinstance(orig, sys.modules["psycopg"].OperationalError) and unavailable)
    ):
        return StorageUnavailable(f"cannot use database {database}: {message}")
    return StorageError(f"{database}: {message}")


def _from_sqlite(orig: sqlite3.Error, message: str, database: str) -> StorageError:
    match = _SQLITE_UNIQUE.search(message)
    if isinstance(orig, sqlite3.IntegrityError) and match:
        qualified = [column.strip() for column in match["cols"].split(",")]
        table = qualified[0].split(".")[0]
        field = ", ".join(column.split(".")[-1] for column in qualified)
        return _conflict(table, field)
    lowered = message.lower()
    if any(text in lowered for text in _SQLITE_SCHEMA_MISSING):
        return StorageError(f"{database} has no up-to-date schema (run the migrations): {message}")
    if isinstance(orig, sqlite3.OperationalError) and any(text in lowered for text in _SQLITE_UNAVAILABLE):
        return StorageUnavailable(f"cannot use database {database}: {message}")
    return StorageError(f"{database}: {message}")


def _conflict(table: str | None, field: str | None) -> Conflict:
    where = f" in {table}" if table else ""
    return Conflict(f"{field or 'a unique field'} already exists{where}", field=field)


def _first_line(error: BaseException) -> str:
    # Driver messages carry hints on continuation lines; the first line says what happened.
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
