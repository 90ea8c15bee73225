"""Running the Alembic migrations programmatically, safely from several processes at once."""

from __future__ import annotations

import multiprocessing
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, text

from storage.engine import WRITE_OPTION, describe_url, open_engine
from storage.errors import StorageError, translating_errors

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "HEAD_REVISION",
    "MIGRATIONS_DIR",
    "PG_MIGRATION_LOCK",
    "current_revision",
    "head_revision",
    "is_current",
    "migrate",
    "migrate_in_child",
]

# The newest revision in migrations/versions (a test keeps them equal). Knowing it without Alembic lets a
# start on an up-to-date database skip importing Alembic at all: about 11 MiB of resident memory per process.
HEAD_REVISION = "0002"

# Computed from __file__ rather than read from an alembic.ini so it also resolves inside an installed
# wheel and a PyInstaller bundle.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Arbitrary constant naming "the edgeproxy schema migration" among PostgreSQL advisory locks ("edge").
PG_MIGRATION_LOCK = 0x65646765


def is_current(engine: Engine) -> bool:
    """The schema is at the newest revision (read without Alembic)."""
    return _stored_revision(engine) == HEAD_REVISION


def migrate_in_child(url: str) -> None:
    """`migrate` to head in a child process, so Alembic and the migrations (~11 MiB resident) never load into
    the caller: a server whose first start (or first start after an upgrade) migrates stays as small as after a
    restart. Errors come back as the StorageError the child raised.

    Forked where that is safe (Linux, and the caller has no other thread whose locks the child would copy):
    the child starts in milliseconds with everything already imported. Otherwise spawned: a new interpreter,
    ~1 s more (PyInstaller builds can, cli.main calls multiprocessing.freeze_support()).
    """
    single_threaded = threading.active_count() == 1
    context = multiprocessing.get_context("fork" if sys.platform == "linux" and single_threaded else "spawn")
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as child:
            child.submit(_migrate_url, url).result()
    except (BrokenProcessPool, OSError):
        # No child could run it (a sandbox without processes, a child killed): do it here after all.
        _migrate_url(url)


def _migrate_url(url: str) -> None:
    engine = open_engine(url, 1)
    try:
        migrate(engine)
    finally:
        engine.dispose()


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the database schema to ``revision`` (the newest by default); a no-op when it is already there.

    Everything happens in one transaction holding an exclusive lock, so several instances starting
    together migrate once and the others wait, then find nothing to do. On PostgreSQL the lock is
    pg_advisory_xact_lock (released by commit or rollback, so a crash cannot leave it held on a pooled
    connection; DDL is transactional there). On SQLite, BEGIN IMMEDIATE takes the database write lock.
    """
    database = describe_url(engine.url)
    if revision == "head" and _stored_revision(engine) == HEAD_REVISION:
        return
    from alembic import command
    from alembic.util import CommandError

    with translating_errors(database), engine.connect() as connection:
        connection.execution_options(**{WRITE_OPTION: True})
        with connection.begin():
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": PG_MIGRATION_LOCK})
            try:
                command.upgrade(_config(connection), revision)
            except CommandError as error:
                # Typically a database migrated by a newer edgeproxy than this one.
                raise StorageError(f"cannot migrate {database}: {error}") from error


def _stored_revision(engine: Engine) -> str | None:
    """alembic_version's row read with plain SQL; None when the table is not there yet."""
    with translating_errors(describe_url(engine.url)), engine.connect() as connection:
        has_table = engine.dialect.has_table(connection, "alembic_version")
        if not has_table:
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for a database that was never migrated."""
    from alembic.runtime.migration import MigrationContext

    with translating_errors(describe_url(engine.url)), engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    """The newest revision this code knows."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:
        raise StorageError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def _config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    # ConfigParser interpolates '%': escape it in case the install path contains one.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config
