"""Config loading: environment references, typed values, one-line errors, did-you-mean warnings."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from edgeproxy.config import ConfigError, load_config, mask_secret, parse_config, resolve_env

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.yaml"


def minimal(**extra: Any) -> dict[str, Any]:
    return {
        "model_list": [{"model_name": "m", "litellm_params": {"model": "openai/x", "api_base": "http://h:1/v1"}}],
        **extra,
    }


def test_env_references() -> None:
    env = {"A": "alpha", "EMPTY": ""}
    assert resolve_env("os.environ/A", env) == "alpha"
    assert resolve_env("os.environ/MISSING", env) is None
    assert resolve_env("${A}", env) == "alpha"
    assert resolve_env("${MISSING}", env) is None
    assert resolve_env("${MISSING:-fallback}", env) == "fallback"
    assert resolve_env("${EMPTY:-fallback}", env) == "fallback"
    assert resolve_env("http://${A}:11434/${MISSING}", env) == "http://alpha:11434/"
    assert resolve_env({"k": ["${A}", 3]}, env) == {"k": ["alpha", 3]}


def test_repo_config_describes_the_seed_deployment() -> None:
    config = load_config(REPO_CONFIG, env={"LITELLM_MASTER_KEY": "sk-x"})
    groups = set(config.model_groups)
    assert groups >= {
        "demo", "qwen-dell", "codellama-dell", "mistral-dell", "gemma2-dell", "llama3.2-dell", "qwen-mac-mlx",
        "phi4-mac-mlx", "anthropic-fallback", "kimi-k2.5", "kimi-latest", "deepseek-fallback",
    }  # fmt: skip
    assert config.router.routing_strategy == "usage-based-routing"
    assert (config.router.allowed_fails, config.router.cooldown_time_s, config.router.num_retries) == (3, 60, 2)
    assert config.router.fallbacks["qwen-dell"] == ("qwen-mac-mlx", "anthropic-fallback")
    assert config.general.master_key == "sk-x"
    assert config.general.database_url is None
    dell = config.model_groups["qwen-dell"][0]
    assert (dell.provider, dell.model) == ("ollama", "qwen2.5:14b-instruct-q4_K_M")
    assert config.model_groups["kimi-k2.5"][0].api_base == "https://api.moonshot.ai/v1"


def test_master_key_from_environment() -> None:
    assert parse_config(minimal(), env={"LITELLM_MASTER_KEY": "sk-l"}).general.master_key == "sk-l"
    assert (
        parse_config(minimal(), env={"EDGEPROXY_MASTER_KEY": "sk-e", "LITELLM_MASTER_KEY": "sk-l"}).general.master_key
        == "sk-e"
    )
    assert parse_config(minimal(), env={}).general.master_key is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"model_list": []}, "model_list: expected a non-empty list"),
        ({"model_list": [{"model_name": "m", "litellm_params": {"model": "gpt-4"}}]},
         "model_list[0].litellm_params.model"),
        ({"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/x", "api_base": "dell:1"}}]},
         "model_list[0].litellm_params.api_base: expected an http:// or https:// URL"),
        ({"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/x", "rpm": "lots"}}]},
         "model_list[0].litellm_params.rpm: expected a number"),
        (minimal(router_settings={"routing_strategy": "fastest"}), "router_settings.routing_strategy"),
        (minimal(router_settings={"fallbacks": [{"m": ["nope"]}]}), "'nope' is not in model_list"),
        (minimal(router_settings={"num_retries": -1}), "router_settings.num_retries"),
        (minimal(general_settings={"background_health_checks": "maybe"}), "general_settings.background_health_checks"),
        (minimal(litellm_settings={"cache_params": {"type": "memcached"}}), "cache_params.type"),
        (minimal(litellm_settings={"cache_params": {"track_keys": "sometimes"}}),
         "litellm_settings.cache_params.track_keys: expected true or false"),
    ],
)  # fmt: skip
def test_wrong_values_name_the_path(raw: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(raw, env={})
    message = str(raised.value)
    assert expected in message
    assert "\n" not in message


def test_key_tracking_is_on_unless_switched_off_also_from_the_environment() -> None:
    def tracks(params: dict[str, Any], env: dict[str, str]) -> bool:
        raw = minimal(litellm_settings={"cache": True, "cache_params": {"type": "redis", "host": "h", **params}})
        return parse_config(raw, env=env).litellm.cache.track_keys

    assert tracks({}, {})
    assert not tracks({"track_keys": False}, {})
    assert not tracks({"track_keys": "os.environ/TRACK"}, {"TRACK": "false"})  # a string, read as a boolean


def test_unknown_keys_warn_with_closest_name(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="edgeproxy.config"):
        config = parse_config(minimal(router_settings={"num_retry": 5}), env={})
    assert config.router.num_retries == 2
    assert "router_settings.num_retry; did you mean 'num_retries'?" in caplog.text


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "c.yaml"
    broken.write_text("model_list:\n  - model_name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(broken)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")


def test_secrets_are_masked() -> None:
    config = parse_config(
        {"model_list": [{"model_name": "m", "litellm_params": {
            "model": "anthropic/c", "api_key": "sk-ant-verysecretvalue", "api_base": "https://u:pw@h.example"}}]},
        env={},
    )  # fmt: skip
    described = str(config.deployments[0].describe())
    assert "verysecret" not in described and "pw@" not in described
    assert "sk-...alue" in described
    assert "verysecret" not in repr(config)
    assert mask_secret("short") == "****"
