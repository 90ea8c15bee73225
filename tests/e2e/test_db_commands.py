"""`edgeproxy db backup|restore|copy` against a real server: a backup taken under traffic restores into a
wiped database with every key working and every cent kept; a copy to PostgreSQL serves the same keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import yaml
from click.testing import CliRunner, Result

from edgeproxy.auth import hash_key
from edgeproxy.cli import cli
from edgeproxy.config import load_config
from storage import Storage
from storage.transfer import backup_counts
from tests.e2e.conftest import MASTER_KEY, Proxy, create_key, openai_model, running_proxy
from tests.fakes import FakeUpstream
from tests.storage.pg import temporary_pg_url

IN_PRICE, OUT_PRICE = 0.0005, 0.001  # fake.usage is (10, 5) tokens
CALL_COST = 10 * IN_PRICE + 5 * OUT_PRICE
HELLO = [{"role": "user", "content": "hi"}]
KEY = "sk-backup-test-key-000000001"


def write_config(path: Path, fake: FakeUpstream, database_url: str) -> str:
    model = openai_model("m", fake, input_cost_per_token=IN_PRICE, output_cost_per_token=OUT_PRICE)
    general = {"master_key": MASTER_KEY, "database_url": database_url, "proxy_batch_write_at": 0.05}
    path.write_text(yaml.safe_dump({"model_list": [model], "general_settings": general}))
    return str(path)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


async def chat(proxy: Proxy, key: str) -> int:
    async with proxy.client(key) as client:
        response = await client.post("/v1/chat/completions", json={"model": "m", "messages": HELLO})
    return response.status_code


def key_row(url: str) -> dict[str, Any]:
    with Storage.open(url) as storage:
        row = storage.keys.get(hash_key(KEY))
        assert row is not None
        return row


async def wait_for_spend(url: str, expected: float) -> dict[str, Any]:
    with trio.fail_after(10):
        while (row := key_row(url))["total_spend"] < expected - 1e-12:
            await trio.sleep(0.05)
    return row


def assert_consistent(url: str, calls: int) -> None:
    """The key, its user and team, and the spend log all say the same: `calls` calls were made."""
    row = key_row(url)
    assert row["total_spend"] == pytest.approx(calls * CALL_COST)
    assert row["model_spend"] == {"m": pytest.approx(calls * CALL_COST)}
    with Storage.open(url) as storage:
        logs, total = storage.spend.logs(api_key=hash_key(KEY), size=100)
        assert total == calls and sum(log["cost"] for log in logs) == pytest.approx(calls * CALL_COST)
        assert storage.users.get("ann")["total_spend"] == pytest.approx(calls * CALL_COST)  # type: ignore[index]
        assert storage.teams.get("blue")["total_spend"] == pytest.approx(calls * CALL_COST)  # type: ignore[index]


async def test_backup_under_traffic_then_wipe_and_restore(fake: FakeUpstream, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/live.db"
    config = write_config(tmp_path / "config.yaml", fake, url)
    create_key(url, KEY, user_id="ann", team_id="blue", key_alias="ann-key")
    file = tmp_path / "nightly.backup"

    async with running_proxy(load_config(config)) as proxy:
        for _ in range(3):
            assert await chat(proxy, KEY) == 200
        await wait_for_spend(url, 3 * CALL_COST)
        # The backup runs beside the server (as a separate process would) while more calls come in.
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(chat, proxy, KEY)
            result = await trio.to_thread.run_sync(invoke, "db", "backup", str(file), "--config", config)
        assert result.exit_code == 0, result.output
        await wait_for_spend(url, 6 * CALL_COST)
    assert "OK: counts match" in result.stdout
    in_backup = backup_counts(file)["spend_logs"]
    assert 3 <= in_backup <= 6 and backup_counts(file)["keys"] == 1

    # Wipe: the database file is gone.
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tmp_path}/live.db{suffix}").unlink(missing_ok=True)
    refused = invoke("db", "restore", str(file), "--config", config)  # not a terminal and no --yes
    assert refused.exit_code == 2 and "--yes" in refused.output
    restored = invoke("db", "restore", str(file), "--yes", "--config", config)
    assert restored.exit_code == 0, restored.output
    assert "OK: counts match" in restored.stdout
    assert_consistent(url, in_backup)

    async with running_proxy(load_config(config)) as proxy:
        assert await chat(proxy, KEY) == 200
        await wait_for_spend(url, (in_backup + 1) * CALL_COST)
    assert_consistent(url, in_backup + 1)


@pytest.mark.postgres
async def test_copy_to_postgres_then_run_on_it(fake: FakeUpstream, tmp_path: Path) -> None:
    sqlite_url = f"sqlite:///{tmp_path}/small.db"
    config = write_config(tmp_path / "config.yaml", fake, sqlite_url)
    create_key(sqlite_url, KEY, user_id="ann", team_id="blue", key_alias="ann-key")
    async with running_proxy(load_config(config)) as proxy:
        for _ in range(4):
            assert await chat(proxy, KEY) == 200
        await wait_for_spend(sqlite_url, 4 * CALL_COST)

    with temporary_pg_url() as pg_url:
        result = invoke("db", "copy", "--to", pg_url, "--config", config)
        assert result.exit_code == 0, result.output
        assert "OK: counts match" in result.stdout and "spend_logs" in result.stdout
        assert_consistent(pg_url, 4)
        again = invoke("db", "copy", "--to", pg_url, "--config", config)
        assert again.exit_code == 2 and "--replace" in again.output

        pg_config = write_config(tmp_path / "pg.yaml", fake, pg_url)
        async with running_proxy(load_config(pg_config)) as proxy:
            assert await chat(proxy, KEY) == 200
            await wait_for_spend(pg_url, 5 * CALL_COST)
        assert_consistent(pg_url, 5)
        assert key_row(pg_url)["key_alias"] == "ann-key"
