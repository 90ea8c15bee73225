"""Which Redis: cache_params (type redis), then router_settings, then REDIS_URL / REDIS_HOST from the environment."""

from __future__ import annotations

from typing import Any

import pytest

from edgeproxy.config import Config, ConfigError, parse_config

MODELS = [{"model_name": "m", "litellm_params": {"model": "mock/m"}}]


def config(env: dict[str, str] | None = None, **litellm: Any) -> Config:
    raw: dict[str, Any] = {"model_list": MODELS, "litellm_settings": litellm}
    router = litellm.pop("router_settings", None)
    if router:
        raw["router_settings"] = router
    return parse_config(raw, env=env or {})


def test_no_redis_anywhere_means_per_process() -> None:
    assert config().redis is None
    assert config(cache=True).redis is None  # cache on, type local by default


def test_cache_params_of_type_redis_win() -> None:
    found = config(
        {"REDIS_URL": "redis://env:6379/0"},
        cache=True,
        cache_params={"type": "redis", "host": "cachehost", "port": 6380, "password": "p@ss/word"},
    ).redis
    assert found is not None and found.source == "cache_params"
    assert found.url == "redis://:p%40ss%2Fword@cachehost:6380/0"
    assert found.public_url == "redis://cachehost:6380/0" and "p%40ss" not in repr(found)


def test_tls_from_a_url_or_ssl_true() -> None:
    by_url = config(cache=True, cache_params={"type": "redis", "url": "rediss://:pw@secure:6380/1"}).redis
    by_flag = config(cache=True, cache_params={"type": "redis", "host": "secure", "ssl": True}).redis
    by_env = config({"REDIS_HOST": "h", "REDIS_SSL": "true"}).redis
    assert by_url is not None and by_url.url.startswith("rediss://")
    assert by_flag is not None and by_flag.url == "rediss://secure:6379/0"
    assert by_env is not None and by_env.url.startswith("rediss://")


def test_environment_is_used_even_with_caching_off() -> None:
    from_url = config({"REDIS_URL": "redis://env-url:1234/2", "REDIS_HOST": "ignored"}).redis
    assert from_url is not None and from_url.url == "redis://env-url:1234/2" and from_url.source == "REDIS_URL"
    parts = config({"REDIS_HOST": "h", "REDIS_PORT": "7000", "REDIS_PASSWORD": "s3cret"}, cache=False).redis
    assert parts is not None and parts.url == "redis://:s3cret@h:7000/0"
    local = config({"REDIS_HOST": "h"}, cache=True, cache_params={"type": "local"}).redis
    assert local is not None  # local response cache, but limits and shared state still use Redis


def test_router_settings_and_the_key_prefix() -> None:
    found = config(
        {"EDGEPROXY_REDIS_PREFIX": "staging"},
        router_settings={"redis_host": "rhost", "redis_port": 6390, "redis_password": "pw"},
    ).redis
    assert found is not None and found.url == "redis://:pw@rhost:6390/0" and found.prefix == "staging"


@pytest.mark.parametrize(
    ("env", "litellm", "message"),
    [
        ({}, {"cache": True, "cache_params": {"type": "redis"}}, "type redis needs host"),
        ({"REDIS_HOST": "h", "REDIS_PORT": "x"}, {}, "REDIS_PORT: expected a port number"),
        ({"REDIS_URL": "http://:hunter2@h"}, {}, "REDIS_URL: expected a redis://"),
    ],
)
def test_wrong_values_stop_startup_without_showing_secrets(
    env: dict[str, str], litellm: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        config(env, **litellm)
    assert message in str(error.value) and "hunter2" not in str(error.value)
