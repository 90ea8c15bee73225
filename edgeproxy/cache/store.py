"""Where cache entries live: Redis (shared by every instance) or the in-process LRU.

Both speak bytes under full storage keys (`<namespace>:<sha256>`). The Redis store raises `RedisUnavailable`
when Redis does not answer; the response cache treats that as a miss (reads) or a skipped write.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from edgeproxy.cache.local import LocalLRU
from edgeproxy.redisclient import Client, Command, RedisBackend, RedisUnavailable, ReplyError

FLUSH_BATCH = 500


class CacheStore(Protocol):
    kind: str  # "redis" | "local", as /cache/ping reports it

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl_s: float) -> None: ...

    def get_command(self, key: str) -> Command | None: ...

    async def delete(self, keys: Sequence[str]) -> int: ...

    async def flush(self, namespace: str) -> int: ...

    async def ping(self) -> bool: ...


def glob_escape(text: str) -> str:
    """`text` matched literally by a Redis glob pattern (SCAN MATCH)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _flush_namespace(client: Client, namespace: str) -> int:
    """UNLINK every key of one namespace, in batches; SCAN, because KEYS would block Redis on a big database."""
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=glob_escape(namespace) + ":*", count=FLUSH_BATCH):
        batch.append(key)
        if len(batch) >= FLUSH_BATCH:
            deleted += int(client.unlink(*batch))
            batch = []
    if batch:
        deleted += int(client.unlink(*batch))
    return deleted


class RedisStore:
    kind = "redis"

    def __init__(self, backend: RedisBackend) -> None:
        self.backend = backend

    async def get(self, key: str) -> bytes | None:
        (value,) = await self.backend.execute([self.get_command(key)])
        if isinstance(value, ReplyError):
            raise RedisUnavailable(f"Redis refused the command: {value}")
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        # Nobody waits for a store: it goes with this process's next pipeline (ahead of its lookups), or within
        # DEFER_WINDOW_S (20 ms) with other stores (RedisBackend.defer).
        self.backend.defer([("SET", key, value, "PX", max(1, round(ttl_s * 1000)))], can_wait=True)

    def get_command(self, key: str) -> Command:
        return ("GET", key)

    async def delete(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        # Stores still waiting to leave would bring entries back afterwards: sent first, and answered (so Redis
        # has run them before the deletion, which goes on another connection).
        await self.backend.execute([])
        return int(await self.backend.run(lambda client: client.unlink(*keys)))

    async def flush(self, namespace: str) -> int:
        await self.backend.execute([])  # as in `delete`
        return await self.backend.run(lambda client: _flush_namespace(client, namespace))

    async def ping(self) -> bool:
        return await self.backend.ping()


class LocalStore:
    kind = "local"

    def __init__(self, lru: LocalLRU) -> None:
        self.lru = lru

    async def get(self, key: str) -> bytes | None:
        return self.lru.get(key)

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        self.lru.set(key, value, ttl_s)

    def get_command(self, key: str) -> None:
        return None  # in this process: no round trip to share

    async def delete(self, keys: Sequence[str]) -> int:
        return self.lru.delete(keys)

    async def flush(self, namespace: str) -> int:
        return self.lru.delete_prefix(namespace + ":")

    async def ping(self) -> bool:
        return True
