from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, Table, inspect, text

from storage import SpendRecord, Storage, StorageError
from storage.engine import open_engine
from storage.migrate import MIGRATIONS_DIR, current_revision, head_revision, is_current, migrate
from storage.schema import metadata
from tests.storage.threads import run_together

ROOT = Path(__file__).resolve().parents[2]

TOKEN = "a" * 64


def test_head_revision_and_packaged_files() -> None:
    assert head_revision() == "0002"
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert sorted(path.name for path in (MIGRATIONS_DIR / "versions").glob("*.py")) == [
        "0001_initial.py",
        "0002_model_spend_and_aliases.py",
    ]


def test_fresh_database_migrates_to_head(database_url: str) -> None:
    engine = open_engine(database_url)
    try:
        assert current_revision(engine) is None
        migrate(engine)
        assert current_revision(engine) == "0002"
        migrate(engine)  # a second run is a no-op
        assert current_revision(engine) == "0002"
        tables = set(inspect(engine).get_table_names())
        assert set(metadata.tables) <= tables
    finally:
        engine.dispose()


def test_upgrade_from_0001_keeps_rows(database_url: str) -> None:
    engine = open_engine(database_url)
    try:
        migrate(engine, "0001")
        assert current_revision(engine) == "0001"
        assert "model_spend" not in inspect(engine).get_table_names()
        created = datetime(2025, 1, 1, tzinfo=UTC)
        with engine.begin() as connection:
            old_keys = Table("keys", MetaData(), autoload_with=connection)
            old_teams = Table("teams", MetaData(), autoload_with=connection)
            assert "aliases" not in old_keys.c and "model_aliases" not in old_teams.c
            connection.execute(
                old_keys.insert().values(
                    token=TOKEN,
                    key_alias="legacy",
                    max_budget=5.0,
                    spend=1.5,
                    total_spend=2.5,
                    created_at=created,
                    updated_at=created,
                )
            )
            connection.execute(old_teams.insert().values(team_id="t1", created_at=created, updated_at=created))
    finally:
        engine.dispose()

    with Storage.open(database_url) as storage:
        storage.migrate()
        assert storage.current_revision() == "0002"
        assert "model_spend" in inspect(storage.engine).get_table_names()
        key = storage.keys.get(TOKEN)
        assert key is not None
        assert (key["key_alias"], key["max_budget"], key["spend"], key["total_spend"]) == ("legacy", 5.0, 1.5, 2.5)
        assert key["aliases"] == {} and key["allowed_cache_controls"] == [] and key["models"] == []
        assert key["created_at"] == created
        team = storage.teams.get("t1")
        assert team is not None and team["model_aliases"] == {}
        # the new table works with the old row
        storage.spend.write_batch([SpendRecord(request_id="r", api_key=TOKEN, model_group="m", cost=0.5)])
        assert storage.keys.get(TOKEN)["model_spend"] == {"m": pytest.approx(0.5)}  # type: ignore[index]


def test_migrations_produce_exactly_the_schema_module(database_url: str) -> None:
    engine = open_engine(database_url)
    try:
        migrate(engine)
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = [diff for diff in compare_metadata(context, metadata) if _relevant(diff)]
        assert differences == []
    finally:
        engine.dispose()


def _relevant(diff: object) -> bool:
    # alembic_version is Alembic's own table, not part of our schema.
    return "alembic_version" not in repr(diff)


def test_concurrent_migrations_both_succeed(database_url: str) -> None:
    # Separate engines, like separate edgeproxy processes starting at the same moment.
    instances = [Storage.open(database_url) for _ in range(4)]
    try:
        run_together(len(instances), lambda index: instances[index].migrate())
        assert all(instance.current_revision() == "0002" for instance in instances)
        instances[0].keys.create({"token": TOKEN})
        assert instances[1].keys.get(TOKEN) is not None
    finally:
        for instance in instances:
            instance.close()


def test_database_from_a_newer_version_is_refused(storage: Storage) -> None:
    with storage.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(StorageError, match="cannot migrate"):
        storage.migrate()


def test_unmigrated_database_gives_a_clear_error(database_url: str) -> None:
    with Storage.open(database_url) as storage, pytest.raises(StorageError, match="run the migrations"):
        storage.keys.get(TOKEN)


def test_head_revision_constant_matches_the_migrations() -> None:
    from storage.migrate import HEAD_REVISION

    assert Storage.head_revision() == HEAD_REVISION


def test_a_server_migrates_in_a_child_process(database_url: str) -> None:
    with Storage.open(database_url) as storage:
        storage.migrate(in_child=True)
        assert is_current(storage.engine)
        assert set(metadata.tables) <= set(inspect(storage.engine).get_table_names())
        storage.migrate(in_child=True)  # up to date: nothing to start a child for


def test_a_migration_in_a_child_fails_with_the_same_error(storage: Storage) -> None:
    with storage.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(StorageError, match="cannot migrate"):
        storage.migrate(in_child=True)


def test_alembic_never_loads_into_a_process_that_migrates_in_a_child(tmp_path: Path) -> None:
    code = (
        "import sys; from storage import Storage; storage = Storage.open(sys.argv[1]); "
        "storage.migrate(in_child=True); storage.close(); print('alembic' in sys.modules)"
    )
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    done = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "False"
    with Storage.open(url) as storage:
        assert is_current(storage.engine)
