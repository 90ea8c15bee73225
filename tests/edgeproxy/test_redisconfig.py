"""Which Redis: cache_params (type redis), then router_settings, then REDIS_URL / REDIS_HOST from the environment."""

from __future__ import annotations

import re
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


def test_sentinel_from_cache_params_as_litellm_writes_it() -> None:
    found = config(
        cache=True,
        cache_params={
            "type": "redis",
            "service_name": "mymaster",
            "sentinel_nodes": [["10.0.0.1", 26379], "10.0.0.2:26380", {"host": "10.0.0.3"}],
            "sentinel_password": "s-secret",
            "password": "m-secret",
        },
    ).redis
    assert found is not None and (found.mode, found.service_name, found.source) == (
        "sentinel",
        "mymaster",
        "cache_params",
    )
    assert found.nodes == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("10.0.0.3", 26379))
    assert (found.password, found.sentinel_password) == ("m-secret", "s-secret")
    assert found.public_url == "redis+sentinel://10.0.0.1:26379,10.0.0.2:26380,10.0.0.3:26379/mymaster"
    assert "secret" not in repr(found) and set(found.secrets) == {"m-secret", "s-secret"}
    # As in LiteLLM, the sentinel password is the master's too when the master has none of its own.
    shared = config(
        cache=True,
        cache_params={"type": "redis", "service_name": "m", "sentinel_nodes": [["h", 1]], "sentinel_password": "p"},
    ).redis
    assert shared is not None and shared.password == "p"


def test_cluster_from_cache_params_wins_over_host() -> None:
    nodes = [{"host": "c1", "port": 7000}, {"host": "c2", "port": 7001}]
    found = config(
        cache=True, cache_params={"type": "redis", "host": "ignored", "redis_startup_nodes": nodes, "password": "pw"}
    ).redis
    assert found is not None and found.mode == "cluster" and found.nodes == (("c1", 7000), ("c2", 7001))
    assert found.password == "pw" and found.public_url == "redis+cluster://c1:7000,c2:7001"


def test_sentinel_and_cluster_from_the_environment() -> None:
    sentinel = config(
        {
            "REDIS_SENTINEL_NODES": '[["s1", 26379], ["s2", 26379]]',
            "REDIS_SERVICE_NAME": "mymaster",
            "REDIS_SENTINEL_PASSWORD": "sp",
            "REDIS_URL": "redis://ignored:6379/0",
        }
    ).redis
    assert sentinel is not None and sentinel.mode == "sentinel" and sentinel.source == "REDIS_SENTINEL_NODES"
    assert sentinel.nodes == (("s1", 26379), ("s2", 26379)) and sentinel.sentinel_password == "sp"
    plain = config({"REDIS_SENTINEL_NODES": "s1:26379, s2", "REDIS_SERVICE_NAME": "m"}).redis
    assert plain is not None and plain.nodes == (("s1", 26379), ("s2", 26379))
    cluster = config({"REDIS_CLUSTER_NODES": '[{"host": "c1", "port": 7000}]', "REDIS_PASSWORD": "cp"}).redis
    assert cluster is not None and cluster.mode == "cluster" and cluster.nodes == (("c1", 7000),)
    assert cluster.password == "cp" and cluster.source == "REDIS_CLUSTER_NODES"


@pytest.mark.parametrize(
    ("env", "params", "message"),
    [
        ({}, {"service_name": "m"}, "cache_params.sentinel_nodes: Sentinel needs the sentinels' addresses"),
        ({}, {"sentinel_nodes": [["h", 1]]}, "cache_params.service_name: Sentinel needs the master's name"),
        ({}, {"sentinel_nodes": [["h", "x"]], "service_name": "m"}, "sentinel_nodes[0]: expected a port number"),
        ({}, {"redis_startup_nodes": []}, "cache_params: type redis needs"),
        ({}, {"redis_startup_nodes": [3]}, "redis_startup_nodes[0]: expected"),
        ({"REDIS_SENTINEL_NODES": "h:1"}, None, "REDIS_SERVICE_NAME: Sentinel needs the master's name"),
        ({"REDIS_CLUSTER_NODES": "[oops"}, None, "REDIS_CLUSTER_NODES: not valid JSON"),
    ],
)
def test_sentinel_and_cluster_mistakes_name_the_setting(
    env: dict[str, str], params: dict[str, Any] | None, message: str
) -> None:
    litellm = {"cache": True, "cache_params": {"type": "redis", **params}} if params is not None else {}
    with pytest.raises(ConfigError, match=re.escape(message)):
        config(env, **litellm)
