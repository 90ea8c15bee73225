"""`edgeproxy spend report|logs` and `edgeproxy prices` on a temporary SQLite database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from edgeproxy.auth import hash_key
from edgeproxy.cli import cli
from storage import SpendRecord, Storage

ALICE_KEY = "sk-alice-0123456789abcdefghij"
BOB_KEY = "sk-bob-0123456789abcdefghijkl"
NOW = datetime.now(UTC)


def write_config(path: Path, database_url: str) -> Path:
    config = {
        "model_list": [
            {
                "model_name": "gpt",
                "litellm_params": {
                    "model": "openai/gpt-4o",
                    "input_cost_per_token": 0.000004,
                    "output_cost_per_token": 0.000012,
                },
            },
            {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-sonnet-4-5"}},
            {"model_name": "local", "litellm_params": {"model": "ollama/llama3.2:3b"}},
            {"model_name": "mystery", "litellm_params": {"model": "moonshot/kimi-k9"}},
        ],
        "general_settings": {"database_url": database_url},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def record(request_id: str, **fields: Any) -> SpendRecord:
    return SpendRecord(request_id=request_id, **fields)


@pytest.fixture
def config_path(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/spend.db"
    with Storage.open(url) as storage:
        storage.migrate()
        storage.keys.create({"token": hash_key(ALICE_KEY), "key_alias": "alice-laptop", "user_id": None})
        alice, bob = hash_key(ALICE_KEY), hash_key(BOB_KEY)
        storage.spend.write_batch(
            [
                record("r1", api_key=alice, user_id="alice", model_group="gpt", prompt_tokens=100,
                       completion_tokens=50, cost=0.001, start_time=NOW - timedelta(minutes=3)),
                record("r2", api_key=alice, user_id="alice", model_group="claude", prompt_tokens=200,
                       completion_tokens=20, cost=0.003, start_time=NOW - timedelta(minutes=2)),
                record("r3", api_key=bob, user_id="bob", team_id="blue", model_group="gpt", prompt_tokens=10,
                       completion_tokens=5, cost=0.0005, start_time=NOW - timedelta(minutes=1)),
                # Outside the default 30 days.
                record("old", api_key=bob, user_id="bob", model_group="claude", prompt_tokens=1000,
                       completion_tokens=1000, cost=0.5, start_time=NOW - timedelta(days=40)),
            ]
        )  # fmt: skip
    return str(write_config(tmp_path / "config.yaml", url))


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def ok(*args: str) -> Result:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def test_report_by_model_sums_the_period(config_path: str) -> None:
    rows = json.loads(ok("spend", "report", "--by", "model", "--json", "--config", config_path).output)
    assert [row["group"] for row in rows] == ["claude", "gpt"]  # dearest first
    claude, gpt = rows
    assert claude["spend"] == pytest.approx(0.003)  # the 40-day-old call is outside 30d
    assert (claude["requests"], claude["prompt_tokens"], claude["completion_tokens"]) == (1, 200, 20)
    assert gpt["spend"] == pytest.approx(0.0015)
    assert (gpt["requests"], gpt["total_tokens"]) == (2, 165)
    assert set(gpt) >= {"group", "requests", "prompt_tokens", "completion_tokens", "total_tokens", "spend"}

    wider = json.loads(
        ok("spend", "report", "--by", "model", "--since", "60d", "--json", "--config", config_path).output
    )
    assert {row["group"]: row["requests"] for row in wider} == {"claude": 2, "gpt": 2}
    assert wider[0]["spend"] == pytest.approx(0.503)

    until = (NOW - timedelta(days=35)).date().isoformat()
    old_only = ok("spend", "report", "--since", "60d", "--until", until, "--json", "--config", config_path).output
    assert [(row["group"], row["requests"]) for row in json.loads(old_only)] == [("claude", 1)]


def test_report_by_key_is_a_table_with_a_total(config_path: str) -> None:
    rows = json.loads(ok("spend", "report", "--by", "key", "--json", "--config", config_path).output)
    by_token = {row["group"]: row for row in rows}
    assert by_token[hash_key(ALICE_KEY)]["spend"] == pytest.approx(0.004)
    assert by_token[hash_key(ALICE_KEY)]["key_alias"] == "alice-laptop"
    assert by_token[hash_key(BOB_KEY)]["spend"] == pytest.approx(0.0005)

    table = ok("spend", "report", "--by", "key", "--config", config_path).output.splitlines()
    assert table[0].startswith("spend by key, ")
    assert table[1].split() == ["KEY", "REQUESTS", "PROMPT", "COMPLETION", "TOKENS", "SPEND_USD"]
    assert table[2].split()[0] == "alice-laptop" and table[2].split()[-1] == "0.004000"
    assert table[3].split()[0] == hash_key(BOB_KEY)  # no alias: the token itself
    assert table[-1].split() == ["total", "3", "310", "75", "385", "0.004500"]


def test_report_by_user_and_team(config_path: str) -> None:
    users = json.loads(ok("spend", "report", "--by", "user", "--json", "--config", config_path).output)
    assert {row["group"]: row["spend"] for row in users} == pytest.approx({"alice": 0.004, "bob": 0.0005})
    teams = json.loads(ok("spend", "report", "--by", "team", "--json", "--config", config_path).output)
    assert {row["group"]: row["requests"] for row in teams} == {None: 2, "blue": 1}
    table = ok("spend", "report", "--by", "team", "--config", config_path).output
    assert "(none)" in table


def test_logs_filters_and_limits(config_path: str) -> None:
    rows = json.loads(ok("spend", "logs", "--json", "--config", config_path).output)
    assert [row["request_id"] for row in rows] == ["r3", "r2", "r1", "old"]  # newest first

    gpt = json.loads(ok("spend", "logs", "--model", "gpt", "--json", "--config", config_path).output)
    assert [row["request_id"] for row in gpt] == ["r3", "r1"]
    assert gpt[1]["cost"] == pytest.approx(0.001) and gpt[1]["start_time"].startswith(NOW.date().isoformat()[:4])

    alice = json.loads(ok("spend", "logs", "--key", ALICE_KEY, "--json", "--config", config_path).output)
    assert [row["request_id"] for row in alice] == ["r2", "r1"]
    by_token = ok("spend", "logs", "--key", hash_key(BOB_KEY), "--json", "--config", config_path).output
    assert [row["request_id"] for row in json.loads(by_token)] == ["r3", "old"]
    team = json.loads(ok("spend", "logs", "--team", "blue", "--user", "bob", "--json", "--config", config_path).output)
    assert [row["request_id"] for row in team] == ["r3"]

    table = ok("spend", "logs", "--limit", "2", "--config", config_path).output.splitlines()
    assert table[0].split()[:3] == ["TIME", "(UTC)", "REQUEST"]
    assert [line.split()[2] for line in table[1:3]] == ["r3", "r2"]
    assert table[-1] == "2 of 4 matching requests, newest first"


def test_prices_lists_the_table_and_configured_deployments(config_path: str) -> None:
    prices = json.loads(ok("prices", "--json", "--config", config_path).output)
    table = {row["model"]: row for row in prices["table"]}
    assert table["anthropic/claude-sonnet-4-5"] == {
        "model": "anthropic/claude-sonnet-4-5",
        "input": 3.0,
        "output": 15.0,
        "cache_read": 0.3,
        "cache_write": 3.75,
    }
    deployments = {row["model_name"]: row for row in prices["deployments"]}
    assert (deployments["gpt"]["source"], deployments["gpt"]["input"], deployments["gpt"]["output"]) == (
        "custom",
        4.0,
        12.0,
    )
    assert (deployments["claude"]["source"], deployments["claude"]["output"]) == ("table", 15.0)
    assert (deployments["local"]["source"], deployments["local"]["input"]) == ("local", 0.0)
    assert (deployments["mystery"]["source"], deployments["mystery"]["input"]) == ("unknown", 0.0)

    text = run("prices", "--config", config_path)
    assert text.exit_code == 0
    assert "anthropic/claude-sonnet-4-5" in text.output
    gpt_line = next(line for line in text.output.splitlines() if line.split()[:1] == ["gpt"])
    assert gpt_line.split() == ["gpt", "openai/gpt-4o", "custom", "4", "12", "0", "0"]
    assert "no price known for moonshot/kimi-k9" in text.output


def test_prices_needs_no_config_or_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDGEPROXY_CONFIG", raising=False)
    result = ok("prices", "--json")
    body = json.loads(result.output)
    assert body["config"] is None and body["deployments"] == []
    assert any(row["model"] == "anthropic/claude-sonnet-4-5" for row in body["table"])
    assert list(tmp_path.iterdir()) == []  # no database file was created
    missing = run("prices", "--config", str(tmp_path / "nope.yaml"))  # named explicitly: must exist
    assert missing.exit_code == 2 and "no such config file" in missing.output


@pytest.mark.parametrize("since", ["3x", "30", "yesterday", "2024-02-30"])
def test_bad_since_exits_2_with_one_line(config_path: str, since: str) -> None:
    result = run("spend", "report", "--since", since, "--config", config_path)
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "--since" in result.output


def test_since_after_until_exits_2(config_path: str) -> None:
    result = run("spend", "report", "--since", "2030-01-02", "--until", "2030-01-01", "--config", config_path)
    assert result.exit_code == 2 and "after --until" in result.output


def test_unreachable_database_exits_3(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml", f"sqlite:///{tmp_path}/missing-dir/sub/spend.db")
    for args in (["spend", "report"], ["spend", "logs"]):
        result = run(*args, "--config", str(config))
        assert result.exit_code == 3, result.output
        assert result.output.count("\n") == 1 and "database" in result.output
