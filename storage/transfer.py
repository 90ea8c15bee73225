"""Moving every row between databases: backups into a SQLite file, restores from one, and copies between
two live databases (SQLite → PostgreSQL when an installation outgrows one file).

All three are one transfer: read every table inside ONE transaction on the source, so the copy is a
consistent snapshot even while a server keeps writing spend (PostgreSQL: REPEATABLE READ, read-only;
SQLite: a read transaction under WAL sees the database as of its first read), stream the rows in chunks
into the target inside one transaction, and compare the row counts before committing. Rows travel as
Python values through the schema's column types, so JSON, timestamps and floats come out on the other
dialect exactly as they went in.

A backup is a SQLite file at the newest schema revision: the same format whatever database it came from.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, delete, event, insert, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from storage import Storage
from storage.database import Database
from storage.errors import StorageError, translating_errors
from storage.migrate import MIGRATIONS_DIR, head_revision
from storage.records import count
from storage.schema import metadata

__all__ = [
    "TABLES",
    "BackupFileError",
    "Counts",
    "Progress",
    "TargetNotEmpty",
    "TransferError",
    "backup",
    "backup_counts",
    "copy",
    "count_rows",
    "restore",
]

# Parents before children (team_members refers to teams and users): the insert order; deletes go backwards.
TABLES: tuple[Table, ...] = tuple(metadata.sorted_tables)
DEFAULT_CHUNK_ROWS = 2000
Counts = dict[str, int]
Progress = Callable[[str, int, int], None]  # (table, rows done, rows in the table)


class TransferError(StorageError):
    """A transfer could not be completed as asked (counts differ, source and target are the same...)."""


class BackupFileError(TransferError):
    """The backup file is missing, exists already, is not an edgeproxy backup or is from a newer version."""


class TargetNotEmpty(TransferError):
    """The target database already holds rows and replacing them was not asked for."""


def backup(
    source: Storage, path: str | os.PathLike[str], *, progress: Progress | None = None, chunk_rows: int = 0
) -> Counts:
    """Write every row of ``source`` into a new SQLite file at ``path``; the rows copied per table.

    Safe while a server writes to ``source``. The file appears only once complete (written under a
    temporary name, then linked into place), so a failed backup leaves nothing behind.
    """
    final = Path(path).absolute()
    if final.exists():
        raise BackupFileError(f"{final} already exists")
    if not final.parent.is_dir():
        raise BackupFileError(f"{final.parent} is not a directory")
    _require_head(source)
    partial = final.with_name(f".{final.name}.partial-{secrets.token_hex(4)}")
    try:
        target = Storage.open(f"sqlite:///{partial}", pool_size=1)
        try:
            target.migrate()
            counts = _transfer(source, target, progress, chunk_rows or DEFAULT_CHUNK_ROWS, replace=False)
        finally:
            target.close()
        _make_self_contained(partial)
        try:
            # link() refuses an existing name, unlike rename(): a file created meanwhile is never overwritten.
            os.link(partial, final)
        except FileExistsError:
            raise BackupFileError(f"{final} already exists") from None
    finally:
        _remove_sqlite_file(partial)
    return counts


def restore(
    target: Storage, path: str | os.PathLike[str], *, progress: Progress | None = None, chunk_rows: int = 0
) -> Counts:
    """Replace every row of ``target`` with the backup's, in one transaction; the rows restored per table.

    A backup from an older schema revision is migrated first (on a temporary copy: the file itself is never
    changed); one from a newer edgeproxy is refused.
    """
    with _opened_backup(Path(path)) as source:
        target.migrate()
        return _transfer(source, target, progress, chunk_rows or DEFAULT_CHUNK_ROWS, replace=True)


def copy(
    source: Storage,
    target: Storage,
    progress: Progress | None = None,
    *,
    replace: bool = False,
    chunk_rows: int = 0,
) -> Counts:
    """Copy every row of ``source`` into ``target`` (migrated first); the rows copied per table.

    Refuses a target that holds any row unless ``replace`` (then its rows are deleted in the same
    transaction as the copy). Safe while a server writes to ``source``.
    """
    if source.describe() == target.describe():
        raise TransferError(f"source and target are the same database ({source.describe()})")
    _require_head(source)
    target.migrate()
    return _transfer(source, target, progress, chunk_rows or DEFAULT_CHUNK_ROWS, replace=replace, must_be_empty=True)


def count_rows(storage: Storage) -> Counts:
    """The rows in each table, read in one transaction."""
    with _snapshot(storage) as connection:
        return {table.name: count(connection, table) for table in TABLES}


def backup_counts(path: str | os.PathLike[str]) -> Counts:
    """The rows in each table of a backup file (read-only; the file is not changed)."""
    with _opened_backup(Path(path)) as source:
        return count_rows(source)


# ---------------------------------------------------------------- the transfer


def _transfer(
    source: Storage,
    target: Storage,
    progress: Progress | None,
    chunk_rows: int,
    *,
    replace: bool,
    must_be_empty: bool = False,
) -> Counts:
    with _snapshot(source) as reading, Database(target.engine).write() as writing:
        if must_be_empty and not replace:
            _check_empty(writing, target.describe())
        if replace:
            for table in reversed(TABLES):
                writing.execute(delete(table))
        counts = {table.name: _copy_table(reading, writing, table, progress, chunk_rows) for table in TABLES}
        # Checked before the commit, so a short copy is rolled back rather than left half done.
        _verify(writing, counts, target.describe())
    return counts


@contextmanager
def _snapshot(storage: Storage) -> Iterator[Connection]:
    """One read transaction that sees a single moment of the database for all its queries."""
    with translating_errors(storage.describe()), storage.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # READ COMMITTED (the default) would let each table's SELECT see a later moment than the one
            # before: spend_logs could then hold requests the key totals do not include yet.
            connection.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        # SQLite: the engine issues a plain BEGIN; under WAL its snapshot is fixed by the first read.
        with connection.begin():
            yield connection


def _copy_table(
    reading: Connection, writing: Connection, table: Table, progress: Progress | None, chunk_rows: int
) -> int:
    total = count(reading, table)
    if progress is not None:
        progress(table.name, 0, total)
    query = select(table).order_by(*table.primary_key.columns)
    # yield_per streams (a server-side cursor on PostgreSQL): the spend log is never all in memory.
    result = reading.execute(query, execution_options={"yield_per": chunk_rows})
    done = 0
    for chunk in result.mappings().partitions():
        writing.execute(insert(table), [dict(row) for row in chunk])
        done += len(chunk)
        if progress is not None:
            progress(table.name, done, total)
    if done != total:
        raise TransferError(f"{table.name}: read {done} rows but the source counted {total}")
    return done


def _check_empty(connection: Connection, description: str) -> None:
    filled = [f"{table.name} ({rows})" for table in TABLES if (rows := count(connection, table))]
    if filled:
        raise TargetNotEmpty(f"{description} is not empty: {', '.join(filled)}")


def _verify(connection: Connection, expected: Counts, description: str) -> None:
    found = {table.name: count(connection, table) for table in TABLES}
    wrong = [f"{name}: {found[name]} rows, expected {rows}" for name, rows in expected.items() if found[name] != rows]
    if wrong:
        raise TransferError(f"row counts in {description} do not match the source ({'; '.join(wrong)})")


def _require_head(storage: Storage) -> None:
    current, head = storage.current_revision(), head_revision()
    if current != head:
        raise TransferError(
            f"{storage.describe()} is at schema revision {current}, not {head}: run `edgeproxy db migrate` first"
        )


# ---------------------------------------------------------------- backup files


@contextmanager
def _opened_backup(path: Path) -> Iterator[Storage]:
    """Storage reading a backup file at the head revision; an older file is migrated on a temporary copy."""
    if not path.is_file():
        raise BackupFileError(f"{path}: no such backup file")
    revision = _backup_revision(path)
    if revision == head_revision():
        with _read_only(path) as storage:
            yield storage
        return
    with tempfile.TemporaryDirectory(prefix="edgeproxy-restore-") as directory:
        working = Path(directory) / "backup.db"
        shutil.copyfile(path, working)
        with Storage.open(f"sqlite:///{working}", pool_size=1) as storage:
            storage.migrate()
            yield storage


def _backup_revision(path: Path) -> str:
    # Imported here: the server imports this module through the CLI, and Alembic is worth 11 MiB of memory.
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with _read_only(path) as storage:
        try:
            with storage.engine.connect() as connection:
                revision = MigrationContext.configure(connection).get_current_revision()
        except (DBAPIError, sqlite3.Error) as error:  # "file is not a database" for anything else
            raise BackupFileError(f"{path} is not an edgeproxy backup (not a SQLite database)") from error
    if revision is None:
        raise BackupFileError(f"{path} is not an edgeproxy backup (no schema revision in it)")
    known = {script.revision for script in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()}
    if revision not in known:
        raise BackupFileError(
            f"{path} was written by a newer edgeproxy (schema revision {revision}, this one knows up to "
            f"{head_revision()}): restore it with that version or newer"
        )
    return revision


@contextmanager
def _read_only(path: Path) -> Iterator[Storage]:
    storage = Storage(_read_only_engine(path))
    try:
        yield storage
    finally:
        storage.close()


def _read_only_engine(path: Path) -> Engine:
    # mode=ro: restoring must not change the backup (storage's usual engine would switch it to WAL).
    uri = path.absolute().as_uri() + "?mode=ro"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, check_same_thread=False)

    engine = create_engine(f"sqlite:///{path.absolute()}", creator=connect, poolclass=NullPool)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Explicit transactions (the sqlite3 module would not BEGIN before a SELECT), so that reading a
        # live database file still sees one snapshot; see storage.engine for the same recipe.
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA busy_timeout=5000")

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN")

    return engine


def _make_self_contained(path: Path) -> None:
    # storage's engine puts files in WAL mode; a backup should be one file that also opens read-only.
    try:
        connection = sqlite3.connect(path)
        try:
            connection.execute("PRAGMA journal_mode=DELETE")
        finally:
            connection.close()
    except sqlite3.Error as error:
        raise StorageError(f"cannot finish the backup file {path}: {error}") from error


def _remove_sqlite_file(path: Path) -> None:
    for name in (path.name, path.name + "-wal", path.name + "-shm", path.name + "-journal"):
        path.with_name(name).unlink(missing_ok=True)
