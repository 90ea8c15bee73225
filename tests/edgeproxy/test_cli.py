"""The command line: version, config check, and run refusing bad setups with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from edgeproxy import __version__
from edgeproxy.cli import cli

REPO_CONFIG = str(Path(__file__).resolve().parents[2] / "config.yaml")


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"edgeproxy {__version__}"


def test_config_check_masks_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-topsecret-1234")
    monkeypatch.setenv("LITELLM_MASTER_KEY", "sk-master")
    result = CliRunner().invoke(cli, ["config", "check", "--config", REPO_CONFIG, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    anthropic = next(m for m in report["models"] if m["model_name"] == "anthropic-fallback")
    assert anthropic["api_key"] == "sk-...1234"
    assert "topsecret" not in result.output
    assert len(report["models"]) == 12


def test_config_check_reports_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"model_list": [{"model_name": "m", "litellm_params": {"model": "nope/x"}}]}))
    result = CliRunner().invoke(cli, ["config", "check", "--config", str(path)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert "model_list[0].litellm_params.model" in result.output


def test_run_refuses_without_master_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LITELLM_MASTER_KEY", raising=False)
    monkeypatch.delenv("EDGEPROXY_MASTER_KEY", raising=False)
    result = CliRunner().invoke(cli, ["run", "--config", REPO_CONFIG])
    assert result.exit_code == 2
    assert "master_key is not set" in result.output


def test_db_migrate_creates_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    database = tmp_path / "state.db"
    path.write_text(
        yaml.safe_dump(
            {
                "model_list": [{"model_name": "m", "litellm_params": {"model": "mock/m"}}],
                "general_settings": {"database_url": f"sqlite:///{database}"},
            }
        )
    )
    result = CliRunner().invoke(cli, ["db", "migrate", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "schema at revision" in result.output
    assert database.exists() and oct(database.stat().st_mode & 0o777) == "0o600"


def test_db_migrate_reports_an_unreachable_database(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model_list": [{"model_name": "m", "litellm_params": {"model": "mock/m"}}],
                "general_settings": {"database_url": "postgresql://nobody@127.0.0.1:1/none"},
            }
        )
    )
    result = CliRunner().invoke(cli, ["db", "migrate", "--config", str(path)])
    assert result.exit_code == 3
    assert result.output.startswith("edgeproxy: database") and result.output.count("\n") == 1
