"""Which Redis the proxy talks to, resolved once while the config is loaded (no redis import here).

The response cache, the rate limits and the state instances share all use one Redis. In order of preference:
`litellm_settings.cache_params` when its type is redis (or it names a host or url), then LiteLLM's router
settings `redis_host`/`redis_port`/`redis_password`, then the environment the seed's compose file sets:
`REDIS_URL`, else `REDIS_HOST`/`REDIS_PORT`/`REDIS_PASSWORD` (`REDIS_SSL=true` for TLS). The environment
counts even when response caching is off: limits and shared state want Redis whether or not responses are
cached. Nothing found means no Redis: every limit and counter is per process.

Besides one server, two highly available topologies, with LiteLLM's names:
- Sentinel: `service_name` + `sentinel_nodes` (`[["host", 26379], ...]`, or "host:port" strings), optional
  `sentinel_password` (for the sentinels; also the master's when `password` is not set, as LiteLLM does) and
  `password` (the master's). Environment: `REDIS_SENTINEL_NODES` (JSON as above, or `host:port,host:port`),
  `REDIS_SERVICE_NAME`, `REDIS_SENTINEL_PASSWORD`, `REDIS_PASSWORD`.
- Cluster: `redis_startup_nodes` (`[{"host": ..., "port": ...}, ...]`, or pairs, or "host:port" strings), optional
  `password`. Environment: `REDIS_CLUSTER_NODES` (JSON as above, or `host:port,host:port`), `REDIS_PASSWORD`.
In cache_params a cluster wins over Sentinel, which wins over `url`/`host`; in the environment the same order
comes before `REDIS_URL`/`REDIS_HOST`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from edgeproxy.config import CacheSettings

DEFAULT_PREFIX = "edgeproxy"
DEFAULT_MAX_CONNECTIONS = 20
# Redis answers in well under a millisecond; a second without an answer means it is in trouble, and the
# request should fall back (cache miss, local limits) instead of waiting for it.
DEFAULT_SOCKET_TIMEOUT_S = 1.0
DEFAULT_SENTINEL_PORT = 26379
_SCHEMES = ("redis://", "rediss://", "unix://")
_TRUE = ("1", "true", "yes", "on")
MODES = ("standalone", "sentinel", "cluster")
Node = tuple[str, int]


@dataclass(frozen=True, slots=True)
class RedisSettings:
    # Standalone: the server's URL, which may carry a password: use `public_url` anywhere people can read it.
    # Sentinel and cluster: a description without secrets (redis+sentinel://h:p,h:p/service, redis+cluster://...).
    url: str = field(repr=False)
    source: str = "cache_params"  # where it came from, for the startup log and /cache/ping
    prefix: str = DEFAULT_PREFIX  # edgeproxy's own keys and channels (the response cache has its namespace)
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S
    mode: str = "standalone"  # one of MODES
    nodes: tuple[Node, ...] = ()  # the sentinels (sentinel) or the startup nodes (cluster)
    service_name: str | None = None  # the master's name in Sentinel
    password: str | None = field(default=None, repr=False)  # the master's (sentinel) or every node's (cluster)
    sentinel_password: str | None = field(default=None, repr=False)
    ssl: bool = False  # sentinel and cluster (a standalone URL says it with rediss://)

    @property
    def public_url(self) -> str:
        return re.sub(r"//[^/@]*@", "//", self.url, count=1)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Passwords this Redis is reached with, for whoever must keep them out of what it prints."""
        found = [self.password, self.sentinel_password]
        match = re.match(r"^[a-z]+://[^/@]*:([^/@]*)@", self.url)
        return tuple(s for s in (*found, match.group(1) if match else None) if s)


def _port(port: Any, where: str, default: int = 6379) -> int:
    try:
        number = int(port) if port not in (None, "") else default
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a port number, got {port!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"{where}: expected a port number, got {port!r}")
    return number


def _url(host: str, port: Any, password: Any, ssl: bool, where: str) -> str:
    number = _port(port, where)
    auth = f":{quote(str(password), safe='')}@" if password else ""
    return f"{'rediss' if ssl else 'redis'}://{auth}{host}:{number}/0"


def _checked(url: str, where: str) -> str:
    if not url.startswith(_SCHEMES):
        raise ValueError(f"{where}: expected a redis://, rediss:// or unix:// URL")  # never echo: may hold a password
    return url


def _node(item: Any, where: str, default_port: int) -> Node:
    """One node: {"host", "port"}, ["host", port] or "host:port"."""
    host: Any
    port: Any = None
    if isinstance(item, Mapping):
        host, port = item.get("host"), item.get("port")
    elif isinstance(item, list | tuple) and len(item) == 2:
        host, port = item
    elif isinstance(item, str):
        host, _, port = item.rpartition(":") if ":" in item else (item, "", None)
    else:
        host = None
    if not isinstance(host, str) or not host.strip():
        raise ValueError(f'{where}: expected {{"host": ..., "port": ...}}, ["host", port] or "host:port", got {item!r}')
    return host.strip(), _port(port, where, default_port)


def parse_nodes(value: Any, where: str, default_port: int = 6379) -> tuple[Node, ...]:
    """A list of nodes, or (from the environment) JSON of one, or `host:port,host:port`."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text.startswith("[") else [p for p in text.split(",") if p.strip()]
        except json.JSONDecodeError:
            raise ValueError(f"{where}: not valid JSON; expected a list of nodes or host:port,host:port") from None
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"{where}: expected a non-empty list of nodes, got {value!r}")
    return tuple(_node(item, f"{where}[{i}]", default_port) for i, item in enumerate(value))


def _described(scheme: str, nodes: tuple[Node, ...], path: str = "") -> str:
    return f"{scheme}://{','.join(f'{host}:{port}' for host, port in nodes)}{path}"


def _sentinel(
    nodes: Any, service: Any, password: Any, sentinel_password: Any, ssl: bool, where: tuple[str, str]
) -> dict[str, Any]:
    if not service or not isinstance(service, str):
        raise ValueError(f"{where[1]}: Sentinel needs the master's name here, next to {where[0]}")
    found = parse_nodes(nodes, where[0], DEFAULT_SENTINEL_PORT)
    return {
        "url": _described("redis+sentinel", found, f"/{service}"),
        "mode": "sentinel",
        "nodes": found,
        "service_name": service,
        "password": str(password) if password else (str(sentinel_password) if sentinel_password else None),
        "sentinel_password": str(sentinel_password) if sentinel_password else None,
        "ssl": ssl,
    }


def _cluster(nodes: Any, password: Any, ssl: bool, where: str) -> dict[str, Any]:
    found = parse_nodes(nodes, where)
    return {
        "url": _described("redis+cluster", found),
        "mode": "cluster",
        "nodes": found,
        "password": str(password) if password else None,
        "ssl": ssl,
    }


def _from_cache(cache: CacheSettings) -> dict[str, Any] | None:
    if cache.type != "redis":
        return None
    params = cache.params
    ssl = str(params.get("ssl", "")).lower() in _TRUE
    where = "litellm_settings.cache_params."
    if params.get("redis_startup_nodes"):
        return _cluster(params["redis_startup_nodes"], cache.password, ssl, where + "redis_startup_nodes")
    if params.get("sentinel_nodes") or params.get("service_name"):
        names = (where + "sentinel_nodes", where + "service_name")
        if not params.get("sentinel_nodes"):
            raise ValueError(f"{names[0]}: Sentinel needs the sentinels' addresses here, next to {names[1]}")
        return _sentinel(
            params["sentinel_nodes"], params.get("service_name"), cache.password, params.get("sentinel_password"),
            ssl, names,
        )  # fmt: skip
    if cache.url:
        return {"url": _checked(cache.url, where + "url")}
    if cache.host:
        return {"url": _url(cache.host, cache.port, cache.password, ssl, where + "port")}
    return None


def _from_env(env: Mapping[str, str]) -> tuple[dict[str, Any], str] | None:
    ssl = env.get("REDIS_SSL", "").lower() in _TRUE
    if env.get("REDIS_CLUSTER_NODES"):
        return _cluster(env["REDIS_CLUSTER_NODES"], env.get("REDIS_PASSWORD"), ssl, "REDIS_CLUSTER_NODES"), (
            "REDIS_CLUSTER_NODES"
        )
    if env.get("REDIS_SENTINEL_NODES"):
        found = _sentinel(
            env["REDIS_SENTINEL_NODES"], env.get("REDIS_SERVICE_NAME"), env.get("REDIS_PASSWORD"),
            env.get("REDIS_SENTINEL_PASSWORD"), ssl, ("REDIS_SENTINEL_NODES", "REDIS_SERVICE_NAME"),
        )  # fmt: skip
        return found, "REDIS_SENTINEL_NODES"
    if env.get("REDIS_URL"):
        return {"url": _checked(env["REDIS_URL"], "REDIS_URL")}, "REDIS_URL"
    if env.get("REDIS_HOST"):
        url = _url(env["REDIS_HOST"], env.get("REDIS_PORT"), env.get("REDIS_PASSWORD"), ssl, "REDIS_PORT")
        return {"url": url}, "REDIS_HOST"
    return None


def resolve_redis(cache: CacheSettings, router_raw: Mapping[str, Any], env: Mapping[str, str]) -> RedisSettings | None:
    """The Redis to use, or None. Raises ValueError (one line, no secrets) for a value that cannot work."""
    found: tuple[dict[str, Any], str] | None = None
    from_cache = _from_cache(cache)
    if from_cache is not None:
        found = (from_cache, "cache_params")
    elif router_raw.get("redis_host"):
        host, port, password = router_raw["redis_host"], router_raw.get("redis_port"), router_raw.get("redis_password")
        found = ({"url": _url(str(host), port, password, False, "router_settings.redis_port")}, "router_settings")
    else:
        found = _from_env(env)
    if found is None:
        if cache.enabled and cache.type == "redis":
            raise ValueError(
                "litellm_settings.cache_params: type redis needs host (and port/password), url, "
                "service_name + sentinel_nodes or redis_startup_nodes here, "
                "or REDIS_URL / REDIS_HOST / REDIS_SENTINEL_NODES / REDIS_CLUSTER_NODES in the environment"
            )
        return None
    prefix = env.get("EDGEPROXY_REDIS_PREFIX") or DEFAULT_PREFIX
    return RedisSettings(**found[0], source=found[1], prefix=prefix)
