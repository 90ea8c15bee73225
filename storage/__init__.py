"""edgeproxy's storage: schema, migrations and repositories on SQLAlchemy Core.

A plain synchronous library (no trio, no HTTP): the server calls it from worker threads. Typical use::

    storage = Storage.open("sqlite:///edgeproxy.db")
    storage.migrate()
    storage.keys.create({"token": sha256_hex, "key_alias": "ci"})
    storage.spend.write_batch([SpendRecord(request_id="r1", api_key=sha256_hex, cost=0.002)])
    storage.close()
"""

from __future__ import annotations

from types import TracebackType

from sqlalchemy import Engine, text

from storage.changes import change_marker
from storage.database import Database
from storage.durations import Months, add_duration, next_reset, parse_duration
from storage.engine import describe_url, open_engine
from storage.errors import Conflict, NotFound, StorageError, StorageUnavailable
from storage.keys import KeyRepository
from storage.migrate import current_revision, head_revision, is_current, migrate, migrate_in_child
from storage.spend import SpendRecord, SpendRepository
from storage.teams import TeamRepository
from storage.users import UserRepository

__all__ = [
    "Conflict",
    "KeyRepository",
    "Months",
    "NotFound",
    "SpendRecord",
    "SpendRepository",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "TeamRepository",
    "UserRepository",
    "add_duration",
    "next_reset",
    "open_engine",
    "parse_duration",
]


class Storage:
    """The engine and one repository per table group. Thread-safe: share one instance per process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._db = Database(engine)
        self.keys = KeyRepository(self._db)
        self.users = UserRepository(self._db)
        self.teams = TeamRepository(self._db)
        self.spend = SpendRepository(self._db)

    @classmethod
    def open(cls, url: str | None = None, pool_size: int = 10) -> Storage:
        """Storage for a database URL (None: ./edgeproxy.db). Does not connect yet: call ping() for that."""
        return cls(open_engine(url, pool_size))

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._db.dialect

    def describe(self) -> str:
        """The database URL without its password, for logs and error messages."""
        return describe_url(self.engine.url)

    def migrate(self, *, in_child: bool = False) -> None:
        """Upgrade the schema to the newest revision (safe when several instances start together).

        `in_child` (a long-lived server): when there is something to do, in a child process, so that Alembic
        never loads into this one (`migrate_in_child`). An in-memory SQLite database is migrated here (a child
        would have its own).
        """
        database = self.engine.url.database or ""
        in_memory = self.dialect == "sqlite" and (database in ("", ":memory:") or "mode=memory" in database)
        if not in_child or in_memory:
            migrate(self.engine)
        elif not is_current(self.engine):
            migrate_in_child(self.engine.url.render_as_string(hide_password=False))

    def current_revision(self) -> str | None:
        return current_revision(self.engine)

    @staticmethod
    def head_revision() -> str:
        return head_revision()

    def ping(self) -> None:
        """Run SELECT 1; StorageUnavailable when the database cannot be reached."""
        try:
            with self._db.read() as connection:
                connection.execute(text("SELECT 1"))
        except StorageUnavailable:
            raise
        except StorageError as error:
            raise StorageUnavailable(str(error)) from error

    def change_marker(self) -> tuple[object, ...]:
        """Changes whenever a key, user, team or membership changes (see storage.changes)."""
        return change_marker(self._db)

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Storage:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
