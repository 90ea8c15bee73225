"""`edgeproxy db backup|restore|copy`: move every row of the database, with a progress bar and a count check.

The work is storage.transfer's; this module opens the databases the config and the options name, shows
progress on stderr, and ends with a table of rows per table, re-counted on the destination after the
commit, on stdout. Exit codes: 2 bad input (file exists, not a backup, non-empty target), 3 database
unavailable, 1 anything else (counts that differ).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from edgeproxy.cli_common import CliError, config_option, load
from edgeproxy.config import Config
from storage import Storage, StorageError, StorageUnavailable
from storage import transfer as transfer_module
from storage.engine import DEFAULT_SQLITE_FILE, describe_url
from storage.transfer import BackupFileError, Counts, TargetNotEmpty

json_option = click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON (for scripts).")


@click.command("backup")
@config_option
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@json_option
def db_backup(config_path: str, file: Path, force: bool, as_json: bool) -> None:
    """Write every key, user, team and spend row into a new SQLite FILE (safe while the server runs).

    The backup is one consistent moment of the database, from SQLite or PostgreSQL alike, and restores
    into either with `edgeproxy db restore FILE`.
    """
    if file.exists() and not force:
        raise CliError(f"{file} already exists: choose another name or pass --force to replace it", exit_code=2)
    with _errors(), _configured_storage(config_path) as source:
        # With --force the new backup is written beside the old one and renamed over it once complete, so a
        # failed run never leaves you without a backup. Without it, storage refuses to overwrite anything.
        replacing = file.exists()
        staged = file.with_name(f".{file.name}.new") if replacing else file
        try:
            if replacing:
                staged.unlink(missing_ok=True)
            counts = _with_progress(lambda progress: transfer_module.backup(source, staged, progress=progress))
            if replacing:
                staged.replace(file)
        finally:
            if replacing:
                staged.unlink(missing_ok=True)
        written = transfer_module.backup_counts(file)
    _report(f"backup of {source.describe()} written to {file}", counts, written, "backup", as_json)


@click.command("restore")
@config_option
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--yes", is_flag=True, help="Do not ask before replacing the database's rows.")
@json_option
def db_restore(config_path: str, file: Path, yes: bool, as_json: bool) -> None:
    """Replace every row of the configured database with those of a backup FILE (one transaction).

    Stop edgeproxy first (or restart it afterwards): running instances keep keys and budgets in memory.
    """
    config = load(config_path)
    if not yes:
        if not sys.stdin.isatty():
            raise CliError("restore replaces every row of the database: pass --yes to confirm", exit_code=2)
        question = f"Replace every key, user, team and spend row in {_database_name(config)} with {file}?"
        if not click.confirm(question):
            raise CliError("restore cancelled; nothing was changed", exit_code=1)
    with _errors():
        in_backup = transfer_module.backup_counts(file)  # a bad file is refused before the database is opened
        with _configured_storage(config_path) as target:
            _with_progress(lambda progress: transfer_module.restore(target, file, progress=progress))
            restored = transfer_module.count_rows(target)
    _report(f"{target.describe()} restored from {file}", in_backup, restored, "restored", as_json)


@click.command("copy")
@config_option
@click.option("--to", "to_url", required=True, help="The target database URL, e.g. postgresql://user:pw@host/db.")
@click.option("--replace", is_flag=True, help="Delete the rows the target already holds (default: refuse).")
@json_option
def db_copy(config_path: str, to_url: str, replace: bool, as_json: bool) -> None:
    """Copy every row of the configured database into another one (SQLite → PostgreSQL), keeping key hashes.

    Then point general_settings.database_url (or DATABASE_URL) at the new database and start edgeproxy.
    """
    with _errors(), _configured_storage(config_path) as source:
        try:
            target = Storage.open(to_url, pool_size=2)
        except ValueError as error:
            raise CliError(f"--to: {error}", exit_code=2) from None
        with target:
            target.ping()
            counts = _with_progress(lambda progress: transfer_module.copy(source, target, progress, replace=replace))
            copied = transfer_module.count_rows(target)
    _report(f"{source.describe()} copied to {target.describe()}", counts, copied, "copied", as_json)


# ---------------------------------------------------------------- helpers


@contextmanager
def _errors() -> Iterator[None]:
    """Storage failures as one line with their exit code."""
    from edgeproxy.gateway import StartupError  # the server's modules load only when a command runs

    try:
        yield
    except (BackupFileError, TargetNotEmpty) as error:
        hint = " (pass --replace to overwrite it)" if isinstance(error, TargetNotEmpty) else ""
        raise CliError(f"{error}{hint}", exit_code=2) from None
    except (StorageUnavailable, StartupError) as error:
        raise CliError(str(error), exit_code=3) from None
    except StorageError as error:
        raise CliError(str(error), exit_code=1) from None
    except OSError as error:  # the backup file's directory, permissions, a full disk
        raise CliError(f"{error.filename or 'file'}: {error.strerror}", exit_code=2) from None


def _database_name(config: Config) -> str:
    """The configured database without its password, without connecting (nothing may change before --yes)."""
    url = config.general.database_url or f"sqlite:///{os.path.abspath(DEFAULT_SQLITE_FILE)}"
    try:
        return describe_url(url)
    except Exception:  # a malformed URL: opening it will say what is wrong
        return "the configured database"


@contextmanager
def _configured_storage(config_path: str) -> Iterator[Storage]:
    """The database the config names, connected and migrated as `run` would (StartupError otherwise)."""
    from edgeproxy.gateway import open_storage

    storage = open_storage(load(config_path))
    try:
        yield storage
    finally:
        storage.close()


class _ProgressBars:
    """One click progress bar per non-empty table, on stderr (stdout is for the result)."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._table: str | None = None
        self._shown = 0

    def __call__(self, table: str, done: int, total: int) -> None:
        if table != self._table:
            self.close()
            self._table = table
            if total:
                bar = click.progressbar(length=total, label=f"{table:<13}", file=sys.stderr)
                self._bar = bar.__enter__()
        if self._bar is not None:
            self._bar.update(done - self._shown)
            self._shown = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
        self._bar, self._shown = None, 0


def _with_progress(work: Callable[[transfer_module.Progress], Counts]) -> Counts:
    bars = _ProgressBars()
    try:
        return work(bars)
    finally:
        bars.close()


def _report(title: str, counts: Counts, found: Counts, column: str, as_json: bool) -> None:
    """The table of rows per table, then the count check; exit 1 when a count differs."""
    matches = counts == found
    if as_json:
        click.echo(json.dumps({"source": counts, column: found, "counts_match": matches}, indent=2))
    else:
        click.echo(title)
        click.echo(f"  {'table':<14}{'source':>10}{column:>10}")
        for name, rows in counts.items():
            flag = "" if found.get(name) == rows else "  MISMATCH"
            click.echo(f"  {name:<14}{rows:>10}{found.get(name, 0):>10}{flag}")
        total = sum(counts.values())
        click.echo(f"OK: counts match ({len(counts)} tables, {total} rows)" if matches else "counts do NOT match")
    if not matches:
        raise CliError(f"row counts differ after the transfer: source {counts}, {column} {found}", exit_code=1)
