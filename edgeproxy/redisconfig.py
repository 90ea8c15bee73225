"""Which Redis the proxy talks to, resolved once while the config is loaded (no redis import here).

The response cache, the rate limits and the state instances share all use one Redis. In order of preference:
`litellm_settings.cache_params` when its type is redis (or it names a host or url), then LiteLLM's router
settings `redis_host`/`redis_port`/`redis_password`, then the environment the seed's compose file sets:
`REDIS_URL`, else `REDIS_HOST`/`REDIS_PORT`/`REDIS_PASSWORD` (`REDIS_SSL=true` for TLS). The environment
counts even when response caching is off: limits and shared state want Redis whether or not responses are
cached. Nothing found means no Redis: every limit and counter is per process.
"""

from __future__ import annotations

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
_SCHEMES = ("redis://", "rediss://", "unix://")
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: str = field(repr=False)  # may carry a password: use `public_url` anywhere people can read it
    source: str = "cache_params"  # where it came from, for the startup log and /cache/ping
    prefix: str = DEFAULT_PREFIX  # edgeproxy's own keys and channels (the response cache has its namespace)
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S

    @property
    def public_url(self) -> str:
        return re.sub(r"//[^/@]*@", "//", self.url, count=1)


def _url(host: str, port: Any, password: Any, ssl: bool, where: str) -> str:
    try:
        number = int(port) if port not in (None, "") else 6379
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a port number, got {port!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"{where}: expected a port number, got {port!r}")
    auth = f":{quote(str(password), safe='')}@" if password else ""
    return f"{'rediss' if ssl else 'redis'}://{auth}{host}:{number}/0"


def _checked(url: str, where: str) -> str:
    if not url.startswith(_SCHEMES):
        raise ValueError(f"{where}: expected a redis://, rediss:// or unix:// URL")  # never echo: may hold a password
    return url


def _from_cache(cache: CacheSettings) -> str | None:
    if cache.type != "redis":
        return None
    ssl = str(cache.params.get("ssl", "")).lower() in _TRUE
    if cache.url:
        return _checked(cache.url, "litellm_settings.cache_params.url")
    if cache.host:
        return _url(cache.host, cache.port, cache.password, ssl, "litellm_settings.cache_params.port")
    return None


def _from_env(env: Mapping[str, str]) -> tuple[str, str] | None:
    if env.get("REDIS_URL"):
        return _checked(env["REDIS_URL"], "REDIS_URL"), "REDIS_URL"
    if env.get("REDIS_HOST"):
        ssl = env.get("REDIS_SSL", "").lower() in _TRUE
        url = _url(env["REDIS_HOST"], env.get("REDIS_PORT"), env.get("REDIS_PASSWORD"), ssl, "REDIS_PORT")
        return url, "REDIS_HOST"
    return None


def resolve_redis(cache: CacheSettings, router_raw: Mapping[str, Any], env: Mapping[str, str]) -> RedisSettings | None:
    """The Redis to use, or None. Raises ValueError (one line, no secrets) for a value that cannot work."""
    found: tuple[str, str] | None = None
    url = _from_cache(cache)
    if url is not None:
        found = (url, "cache_params")
    elif router_raw.get("redis_host"):
        host, port, password = router_raw["redis_host"], router_raw.get("redis_port"), router_raw.get("redis_password")
        found = (_url(str(host), port, password, False, "router_settings.redis_port"), "router_settings")
    else:
        found = _from_env(env)
    if found is None:
        if cache.enabled and cache.type == "redis":
            raise ValueError(
                "litellm_settings.cache_params: type redis needs host (and port/password) or url here, "
                "or REDIS_URL / REDIS_HOST in the environment"
            )
        return None
    prefix = env.get("EDGEPROXY_REDIS_PREFIX") or DEFAULT_PREFIX
    return RedisSettings(url=found[0], source=found[1], prefix=prefix)
