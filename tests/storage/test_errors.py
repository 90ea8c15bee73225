from __future__ import annotations

import sqlite3

import psycopg
import pytest
from sqlalchemy import exc as sa_exc

from storage import Conflict, StorageError, StorageUnavailable
from storage.errors import translate_error, translating_errors

DB = "sqlite:////data/edge.db"


def wrapped(cls: type[sa_exc.DBAPIError], orig: Exception) -> sa_exc.DBAPIError:
    return cls("INSERT ...", {}, orig)


def test_sqlite_unique_violation_names_the_fields() -> None:
    error = wrapped(
        sa_exc.IntegrityError,
        sqlite3.IntegrityError("UNIQUE constraint failed: team_members.team_id, team_members.user_id"),
    )
    mapped = translate_error(error, DB)
    assert isinstance(mapped, Conflict)
    assert mapped.field == "team_id, user_id" and "team_members" in str(mapped)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("database is locked", StorageUnavailable),
        ("unable to open database file", StorageUnavailable),
        ("no such table: keys", StorageError),
    ],
)
def test_sqlite_operational_errors(message: str, expected: type[StorageError]) -> None:
    mapped = translate_error(wrapped(sa_exc.OperationalError, sqlite3.OperationalError(message)), DB)
    assert type(mapped) is expected
    assert DB in str(mapped)


def test_psycopg_errors() -> None:
    refused = psycopg.OperationalError("connection failed: Connection refused\n\tIs the server running?")
    mapped = translate_error(wrapped(sa_exc.OperationalError, refused), "postgresql://u@h/db")
    assert isinstance(mapped, StorageUnavailable)
    assert "Connection refused" in str(mapped) and "Is the server" not in str(mapped)
    assert isinstance(translate_error(psycopg.InterfaceError("the connection is closed"), "pg"), StorageUnavailable)


def test_pool_timeout_and_invalidated_connections_are_unavailable() -> None:
    assert isinstance(translate_error(sa_exc.TimeoutError("QueuePool limit"), DB), StorageUnavailable)
    lost = sa_exc.DBAPIError("SELECT 1", {}, Exception("server closed"), connection_invalidated=True)
    assert isinstance(translate_error(lost, DB), StorageUnavailable)


def test_other_exceptions_pass_through_untouched() -> None:
    assert translate_error(ValueError("x"), DB) is None
    with pytest.raises(KeyError), translating_errors(DB):
        raise KeyError("not a database problem")
    with pytest.raises(StorageUnavailable) as info, translating_errors(DB):
        raise wrapped(sa_exc.OperationalError, sqlite3.OperationalError("database is locked"))
    assert isinstance(info.value.__cause__, sa_exc.OperationalError)
