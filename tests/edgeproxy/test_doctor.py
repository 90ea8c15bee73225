"""`edgeproxy doctor`: one line per check, a fix for each failure, exit 1 on any FAIL, and never a secret."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from edgeproxy.cli import cli
from storage import Storage

PROVIDER_SECRET = "sk-provider-secret-never-shown-4242"
MASTER = "sk-master-key-for-the-doctor-test-0123456789"


@pytest.fixture(autouse=True)
def no_redis_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "DATABASE_URL", "LITELLM_MASTER_KEY"):
        monkeypatch.delenv(name, raising=False)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_config(tmp_path: Path, **extra: Any) -> str:
    models = [
        {"model_name": "demo", "litellm_params": {"model": "mock/demo"}},
        {
            "model_name": "gone",
            "litellm_params": {
                "model": "openai/gpt-x",
                "api_base": f"http://127.0.0.1:{closed_port()}/v1",
                "api_key": PROVIDER_SECRET,
            },
        },
    ]
    database = f"sqlite:///{tmp_path}/doctor.db"
    with Storage.open(database) as storage:
        storage.migrate()
    general = {"master_key": MASTER, "database_url": database, **extra.pop("general_settings", {})}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model_list": models, "general_settings": general, **extra}))
    return str(path)


def doctor(config: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["doctor", "--config", config, "--timeout", "3", *args])


def rows(result: Result) -> dict[str, dict[str, str]]:
    return {row["check"]: row for row in json.loads(result.stdout)}


def test_a_dead_upstream_fails_with_a_fix_and_no_secret(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = doctor(config)
    assert result.exit_code == 1, result.output
    assert PROVIDER_SECRET not in result.output and MASTER not in result.output
    table = result.stdout.splitlines()
    assert table[0].split() == ["check", "status", "detail", "how", "to", "fix"]
    gone = next(line for line in table if line.startswith("upstream gone"))
    assert " FAIL " in gone and "nothing answers" in gone and "api_base" in result.stdout
    demo = next(line for line in table if line.startswith("upstream demo"))
    assert " ok " in demo
    assert "1 check(s) failed" in result.stderr

    checks = rows(doctor(config, "--json"))
    assert checks["upstream gone (gone-1)"]["status"] == "FAIL"
    assert "start the server there" in checks["upstream gone (gone-1)"]["fix"]
    assert checks["upstream demo (demo-0)"]["status"] == "ok"
    assert checks["config"]["status"] == checks["master key"]["status"] == checks["database"]["status"] == "ok"
    assert "redis" not in checks  # not configured: not checked


def test_everything_fine_exits_0(tmp_path: Path) -> None:
    path = Path(write_config(tmp_path))
    raw = yaml.safe_load(path.read_text())
    raw["model_list"] = raw["model_list"][:1]
    path.write_text(yaml.safe_dump(raw))
    result = doctor(str(path))
    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.stdout


def test_config_problems_are_reported_not_raised(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"model_list": [{"model_name": "m", "litellm_params": {"model": "nope/x"}}]}))
    checks = rows(doctor(str(broken), "--json"))
    assert list(checks) == ["config"] and checks["config"]["status"] == "FAIL"
    assert "model_list[0].litellm_params.model" in checks["config"]["detail"]

    config = write_config(tmp_path, general_settings={"master_key": None, "maser_key": "x"})
    checks = rows(doctor(config, "--json"))
    assert checks["config"]["status"] == "warn" and "did you mean 'master_key'" in checks["config"]["detail"]
    assert checks["master key"]["status"] == "FAIL" and "LITELLM_MASTER_KEY" in checks["master key"]["fix"]


def test_database_problems(tmp_path: Path) -> None:
    unreachable = write_config(
        tmp_path, general_settings={"database_url": "postgresql://me:pg-secret-pw@127.0.0.1:1/x"}
    )
    result = doctor(unreachable, "--json")
    assert result.exit_code == 1 and "pg-secret-pw" not in result.output
    database = rows(result)["database"]
    assert database["status"] == "FAIL" and "database_url" in database["fix"]

    missing = write_config(tmp_path, general_settings={"database_url": f"sqlite:///{tmp_path}/not-yet.db"})
    assert rows(doctor(missing, "--json"))["database"]["status"] == "warn"
    assert not (tmp_path / "not-yet.db").exists()  # the doctor only looks


def test_redis_is_pinged_when_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", f"redis://:redis-secret-pw@127.0.0.1:{closed_port()}/0")
    result = doctor(write_config(tmp_path), "--json")
    redis = rows(result)["redis"]
    assert redis["status"] == "FAIL" and "REDIS_URL" in redis["fix"]
    assert "redis-secret-pw" not in result.output


@pytest.mark.redis
def test_a_running_redis_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv("REDIS_PORT", "6379")
    assert rows(doctor(write_config(tmp_path), "--json"))["redis"]["status"] == "ok"


def test_sentinel_is_checked_through_the_sentinels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_SENTINEL_NODES", f"127.0.0.1:{closed_port()},127.0.0.1:{closed_port()}")
    monkeypatch.setenv("REDIS_SERVICE_NAME", "mymaster")
    monkeypatch.setenv("REDIS_SENTINEL_PASSWORD", "sentinel-secret-pw")
    result = doctor(write_config(tmp_path), "--json")
    redis = rows(result)["redis"]
    assert redis["status"] == "FAIL" and "No master found for 'mymaster'" in redis["detail"]
    assert "REDIS_SENTINEL_NODES" in redis["fix"] and "sentinel-secret-pw" not in result.output
