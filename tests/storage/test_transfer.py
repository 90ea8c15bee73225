"""Backups, restores and copies keep every row exactly, on SQLite and PostgreSQL, even under live writes."""

from __future__ import annotations

import math
import sqlite3
import threading
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, Table, delete, select

from storage import SpendRecord, Storage
from storage import transfer as transfer_module
from storage.engine import open_engine
from storage.migrate import head_revision, migrate
from storage.schema import daily_spend, keys, model_spend, spend_logs
from storage.transfer import (
    TABLES,
    BackupFileError,
    TargetNotEmpty,
    TransferError,
    backup,
    backup_counts,
    copy,
    count_rows,
    restore,
)
from tests.storage.pg import temporary_pg_url
from tests.storage.spend_data import K1, K2, K3, make_records, seed

# Values that a careless dialect round trip would bend: binary-inexact floats, huge ints, unicode, nesting.
# (Not 1e300: JSONB keeps numbers as decimals and gives a whole one back without a point, i.e. as an int;
# that is PostgreSQL's own behaviour, with or without a transfer.)
AWKWARD_JSON = {
    "floats": [0.1, 1e-7, 0.30000000000000004, 3.141592653589793, -2.5e-310, 1.5e-300, 2.0],
    "ints": [0, -1, 12345678901234567],
    "text": 'ünïcødé ✓ "quoted" \\ back',
    "nested": {"none": None, "yes": True, "empty": {}, "list": []},
}
MOMENT = datetime(2031, 12, 31, 23, 59, 58, 123456, tzinfo=UTC)


def fill(storage: Storage) -> None:
    """Keys, users, teams, memberships and spend, with values that are easy to get subtly wrong."""
    seed(storage)
    storage.users.create({"user_id": "ünï", "user_email": "u@example.com", "metadata": AWKWARD_JSON})
    storage.teams.create({"team_id": "t2", "team_alias": "blue", "model_aliases": {"fast": "qwen"}})
    storage.teams.add_member("t2", "ünï", "admin", 0.1 + 0.2)
    storage.keys.create(
        {
            "token": "f" * 64,
            "key_alias": "awkward",
            "models": ["qwen", "gpt"],
            "metadata": AWKWARD_JSON,
            "aliases": {"gpt-4o": "qwen"},
            "allowed_cache_controls": ["no-cache"],
            "max_budget": 0.1 + 0.2,
            "soft_budget": 1e-9,
            "budget_duration": "30d",
            "budget_reset_at": MOMENT,
            "expires": MOMENT,
            "rpm_limit": 2**40,
            "blocked": True,
            "user_id": "ünï",
            "team_id": "t2",
        }
    )
    storage.spend.write_batch(make_records(300))


def dump(storage: Storage) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, in primary-key order."""
    with storage.engine.connect() as connection:
        return {
            table.name: [
                dict(row._mapping) for row in connection.execute(select(table).order_by(*table.primary_key.columns))
            ]
            for table in TABLES
        }


def wipe(storage: Storage) -> None:
    with storage.engine.begin() as connection:
        for table in reversed(TABLES):
            connection.execute(delete(table))


def test_backup_wipe_restore_keeps_every_row(storage: Storage, tmp_path: Path) -> None:
    fill(storage)
    before = dump(storage)
    file = tmp_path / "backup.db"
    progress: list[tuple[str, int, int]] = []
    counts = backup(storage, file, progress=lambda *event: progress.append(event), chunk_rows=64)

    assert counts == count_rows(storage) == backup_counts(file)
    assert counts["spend_logs"] == 300 and counts["keys"] == 4 and counts["team_members"] == 3
    assert ("spend_logs", 300, 300) in progress and ("spend_logs", 64, 300) in progress
    # One private, self-contained file at the newest revision.
    assert oct(file.stat().st_mode & 0o777) == "0o600"
    assert sorted(path.name for path in tmp_path.iterdir() if "backup" in path.name) == ["backup.db"]
    with sqlite3.connect(file) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert connection.execute("SELECT version_num FROM alembic_version").fetchone()[0] == head_revision()

    wipe(storage)
    assert sum(count_rows(storage).values()) == 0
    assert restore(storage, file) == counts
    assert dump(storage) == before
    key = storage.keys.get("f" * 64)
    assert key is not None and key["metadata"] == AWKWARD_JSON and key["expires"] == MOMENT


def test_restore_replaces_rows_added_after_the_backup(storage: Storage, tmp_path: Path) -> None:
    fill(storage)
    before = dump(storage)
    file = tmp_path / "backup.db"
    backup(storage, file)
    storage.keys.create({"token": "e" * 64, "key_alias": "later"})
    storage.spend.write_batch(make_records(10, prefix="later"))
    restore(storage, file)
    assert dump(storage) == before


def test_backup_never_overwrites(storage: Storage, tmp_path: Path) -> None:
    file = tmp_path / "backup.db"
    file.write_text("precious")
    with pytest.raises(BackupFileError, match="already exists"):
        backup(storage, file)
    assert file.read_text() == "precious"
    assert [path.name for path in tmp_path.iterdir() if "backup" in path.name] == ["backup.db"]


def test_backup_during_writes_is_one_consistent_moment(storage: Storage, tmp_path: Path) -> None:
    """Spend keeps flowing while the backup runs; the backup must still add up."""
    seed(storage)
    stop = threading.Event()
    batches_written = [0]
    written = threading.Condition()

    def writer() -> None:
        batch = 0
        while not stop.is_set():
            # Costs that are exact in binary, so sums can be compared with ==.
            records = [
                SpendRecord(request_id=f"live-{batch:05d}-{i}", api_key=token, model_group="qwen", cost=0.125)
                for i, token in enumerate((K1, K2, K3, K1))
            ]
            storage.spend.write_batch(records)
            batch += 1
            with written:
                batches_written[0] = batch
                written.notify_all()

    def progress(table: str, done: int, total: int) -> None:
        # Before each table is read (the snapshot was taken when the first one was counted), let the writer
        # commit more batches: without one snapshot, later tables would include requests earlier ones miss.
        if done == 0:
            with written:
                target = batches_written[0] + 5
                assert written.wait_for(lambda: batches_written[0] >= target, timeout=30)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with written:
            assert written.wait_for(lambda: batches_written[0] >= 3, timeout=30)
        counts = backup(storage, tmp_path / "live.db", progress=progress, chunk_rows=7)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert count_rows(storage)["spend_logs"] > counts["spend_logs"]  # writes did land during the backup

    with Storage.open(f"sqlite:///{tmp_path / 'live.db'}") as copied, copied.engine.connect() as connection:
        logged: dict[str, list[float]] = defaultdict(list)
        for api_key, cost in connection.execute(select(spend_logs.c.api_key, spend_logs.c.cost)):
            logged[api_key].append(cost)
        totals = dict(connection.execute(select(keys.c.token, keys.c.total_spend)).all())
        per_model = dict(connection.execute(select(model_spend.c.entity_id, model_spend.c.spend)).all())
        requests = sum(connection.scalars(select(daily_spend.c.requests)))
    assert sum(len(costs) for costs in logged.values()) == counts["spend_logs"] == requests
    for token in (K1, K2, K3):
        assert totals[token] == math.fsum(logged[token]) == per_model.get(token, 0.0)


@pytest.mark.postgres
def test_copy_sqlite_to_postgres_keeps_everything(tmp_path: Path) -> None:
    with Storage.open(f"sqlite:///{tmp_path / 'small.db'}") as source, temporary_pg_url() as url:
        source.migrate()
        fill(source)
        expected = dump(source)
        with Storage.open(url) as target:
            counts = copy(source, target)
            assert counts == count_rows(source) == count_rows(target)
            assert dump(target) == expected  # floats, JSON, timestamps exactly as they were
            assert target.spend.totals("key", K1) == source.spend.totals("key", K1)
            assert target.teams.members("t2") == source.teams.members("t2")

            with pytest.raises(TargetNotEmpty, match="keys"):
                copy(source, target)
            source.keys.create({"token": "d" * 64, "key_alias": "newer"})
            copy(source, target, replace=True)
            assert target.keys.get("d" * 64) is not None and dump(target) == dump(source)

            # ...and back again: a backup of the PostgreSQL database restores into SQLite unchanged.
            file = tmp_path / "from-pg.db"
            backup(target, file)
            wipe(source)
            restore(source, file)
            assert dump(source) == dump(target)


def test_copy_refuses_the_same_database(storage: Storage) -> None:
    with pytest.raises(TransferError, match="same database"):
        copy(storage, storage)


def test_copy_is_rolled_back_when_counts_differ(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(storage)
    real_copy_table = transfer_module._copy_table

    def lossy(reading: Any, writing: Any, table: Table, *args: Any) -> int:
        copied = real_copy_table(reading, writing, table, *args)
        if table is spend_logs:  # a row lost on the way, as a buggy driver might
            writing.execute(delete(spend_logs).where(spend_logs.c.request_id == "req-00007"))
        return copied

    monkeypatch.setattr(transfer_module, "_copy_table", lossy)
    with Storage.open(f"sqlite:///{tmp_path / 'target.db'}") as target:
        with pytest.raises(TransferError, match="spend_logs: 299 rows, expected 300"):
            copy(storage, target)
        assert sum(count_rows(target).values()) == 0


def test_restore_refuses_a_backup_from_a_newer_version(storage: Storage, tmp_path: Path) -> None:
    fill(storage)
    file = tmp_path / "future.db"
    backup(storage, file)
    with sqlite3.connect(file) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0099'")
    before = dump(storage)
    with pytest.raises(BackupFileError, match="newer edgeproxy"):
        restore(storage, file)
    assert dump(storage) == before


def test_restore_migrates_an_older_backup_without_changing_it(storage: Storage, tmp_path: Path) -> None:
    file = tmp_path / "old.db"
    engine = open_engine(f"sqlite:///{file}")
    try:
        migrate(engine, "0001")
        with engine.begin() as connection:
            old_keys = Table("keys", MetaData(), autoload_with=connection)
            connection.execute(
                old_keys.insert().values(
                    token="c" * 64, key_alias="legacy", total_spend=2.5, created_at=MOMENT, updated_at=MOMENT
                )
            )
    finally:
        engine.dispose()
    fill(storage)
    assert restore(storage, file)["keys"] == 1
    key = storage.keys.get("c" * 64)
    assert key is not None and key["total_spend"] == 2.5 and key["aliases"] == {}
    assert storage.keys.get(K1) is None
    with sqlite3.connect(file) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchone()[0] == "0001"


def test_restore_refuses_what_is_not_a_backup(storage: Storage, tmp_path: Path) -> None:
    with pytest.raises(BackupFileError, match="no such backup file"):
        restore(storage, tmp_path / "missing.db")
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all, just some text that is long enough " * 20)
    with pytest.raises(BackupFileError, match="not a SQLite database"):
        restore(storage, text)
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with pytest.raises(BackupFileError, match="no schema revision"):
        restore(storage, empty)


def test_timestamps_keep_microseconds_and_zone(storage: Storage, tmp_path: Path) -> None:
    seed(storage)
    start = datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    storage.spend.write_batch(
        [SpendRecord(request_id="r", api_key=K1, cost=1e-7, start_time=start, end_time=start + timedelta(seconds=1))]
    )
    file = tmp_path / "b.db"
    backup(storage, file)
    wipe(storage)
    restore(storage, file)
    row = storage.spend.logs(request_id="r")[0][0]
    assert row["start_time"] == start and row["start_time"].tzinfo is not None and row["cost"] == 1e-7
