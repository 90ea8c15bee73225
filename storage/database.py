"""Short transactions with error translation: the one way repositories talk to the database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, Table
from sqlalchemy.dialects import postgresql, sqlite

from storage.engine import WRITE_OPTION, describe_url
from storage.errors import translating_errors

__all__ = ["Database"]


class Database:
    """An Engine plus the knowledge of how to run one transaction on it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.description = describe_url(engine.url)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction; driver errors (also from connect and commit) become StorageErrors."""
        with translating_errors(self.description), self.engine.connect() as connection, connection.begin():
            yield connection

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that will write: on SQLite it takes the write lock up front (BEGIN IMMEDIATE)."""
        with translating_errors(self.description), self.engine.connect() as connection:
            connection.execution_options(**{WRITE_OPTION: True})
            with connection.begin():
                yield connection

    def insert(self, table: Table) -> Any:
        """INSERT supporting ON CONFLICT for this dialect (both spell it the same way in SQLAlchemy)."""
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)
