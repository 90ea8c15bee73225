"""How to reach Redis: one server, the master a Sentinel group names, or a cluster.

Only `redisclient.RedisBackend` uses this module, and like it, it imports redis only when a Redis is configured.
Every client gets the same short timeouts and a single immediate retry: redis-py's defaults retry with backoff
for seconds, and a request must fall back (cache miss, local limits) rather than wait for Redis.

- One server: a blocking pool of `max_connections`.
- Sentinel (`redis.sentinel.Sentinel.master_for`, a `SentinelConnectionPool`): each new connection asks the
  sentinels where the master is. When the master dies, calls fail (refused, or READONLY from an old master that
  came back as a replica, which redis-py turns into a ConnectionError and a disconnect), RedisBackend marks Redis
  down and serves without it, and its next attempt (one per retry interval) connects to whichever master the
  sentinels name by then: failover needs no restart, and no request waits for it. Idle connections to the old
  master are dropped by the pool as soon as it learns the new address.
- Cluster (`redis.cluster.RedisCluster`): built on first use, in a worker thread, because it connects while it is
  built and a cluster that is down at startup must not stop the proxy. Commands are routed by key slot; a command
  or script touching several keys needs them in one slot, which is why the rate-limit keys share a hash tag
  (`limits/limiter.py`). redis-py's cluster pipelines refuse PUBLISH, so `pipeline()` sends those on their own
  after the rest (`_PublishAfter`). Pub/sub uses the cluster client's own (`ClusterPubSub`): a PUBLISH reaches
  subscribers on every node.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgeproxy.redisconfig import RedisSettings

if TYPE_CHECKING:
    import redis

    Client = redis.Redis
else:
    Client = Any


class RedisConnection:
    """The client for one configured Redis; `client()` may be called from any thread."""

    def __init__(self, settings: RedisSettings, *, max_connections: int) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.retry import Retry

        self.settings = settings
        timeout = settings.socket_timeout_s
        self._common: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            # One immediate retry on a broken connection (a pooled one from before a restart or failover).
            "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        }
        self._max_connections = max_connections
        self._lock = threading.Lock()
        self._closers: list[Callable[[], None]] = []
        self._client: Any = None
        if settings.mode == "standalone":
            pool = redis.BlockingConnectionPool.from_url(
                settings.url, max_connections=max_connections, timeout=timeout, **self._common
            )
            self._client = redis.Redis(connection_pool=pool)
            self._closers.append(pool.disconnect)
        elif settings.mode == "sentinel":
            self._client = self._sentinel_master()  # no I/O until the first command

    # ---------------------------------------------------------------- building

    def _sentinel_master(self) -> Any:
        from redis.sentinel import Sentinel, SentinelConnectionPool

        settings = self.settings
        timeouts = {k: v for k, v in self._common.items() if k.startswith("socket_")}
        sentinel_kwargs: dict[str, Any] = {**timeouts, "password": settings.sentinel_password}
        if settings.ssl:
            sentinel_kwargs["ssl"] = True
        sentinel = Sentinel(list(settings.nodes), sentinel_kwargs=sentinel_kwargs)
        client = sentinel.master_for(
            settings.service_name,
            connection_pool_class=SentinelConnectionPool,
            max_connections=self._max_connections,
            password=settings.password,
            ssl=settings.ssl,
            **self._common,
        )
        self._closers += [client.close, sentinel.close]
        return client

    def _cluster(self) -> Any:
        from redis.cluster import ClusterNode, RedisCluster

        class Cluster(RedisCluster):  # type: ignore[misc]
            def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
                return _PublishAfter(self, super().pipeline(transaction=transaction, shard_hint=shard_hint))

        settings = self.settings
        client = Cluster(
            startup_nodes=[ClusterNode(host, port) for host, port in settings.nodes],
            password=settings.password,
            ssl=settings.ssl,
            max_connections=self._max_connections,  # per node
            **self._common,
        )
        self._closers.append(client.close)
        return client

    # ---------------------------------------------------------------- use

    def client(self) -> Client:
        """The client; a cluster's is built (and connects) on the first call, so call this in a worker thread."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._cluster()
                client = self._client
        result: Client = client
        return result

    def close(self) -> None:
        for close in self._closers:
            close()


class _PublishAfter:
    """A cluster pipeline that also takes PUBLISH: queued aside, sent one by one after the pipeline, results in
    call order. (A channel has no key slot to route by, so redis-py's ClusterPipeline refuses it.)"""

    def __init__(self, client: Any, pipe: Any) -> None:
        self._client = client
        self._pipe = pipe
        self._calls: list[tuple[Any, ...] | None] = []  # None: a command in the real pipeline

    def publish(self, channel: Any, message: Any) -> _PublishAfter:
        self._calls.append((channel, message))
        return self

    def __getattr__(self, name: str) -> Callable[..., _PublishAfter]:
        command = getattr(self._pipe, name)

        def queue(*args: Any, **kwargs: Any) -> _PublishAfter:
            command(*args, **kwargs)
            self._calls.append(None)
            return self

        return queue

    def execute(self) -> list[Any]:
        piped = iter(self._pipe.execute() if None in self._calls else [])
        return [next(piped) if call is None else self._client.publish(*call) for call in self._calls]
