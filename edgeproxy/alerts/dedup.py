"""One alert per event across processes: whoever claims an alert's key first sends it.

Within a process the producers already report each event once (a threshold once per budget window, a deployment
once per transition). Across processes, `--workers N` workers and instances behind a load balancer each see
the same budget cross and the same deployment fail; this turns N alerts into one:
- with Redis: `SET key NX EX ttl` (shared by every instance);
- else, under `--workers N`: a file created with `O_EXCL` in a directory the workers share (one machine);
- else (one process): every claim succeeds.
When Redis is down, the directory (if any) decides, else the alert is sent: better twice than not at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import trio

from edgeproxy.redisclient import Client, RedisBackend, RedisUnavailable


class Dedup:
    def __init__(self, redis: RedisBackend | None = None, directory: Path | None = None) -> None:
        self._redis = redis
        self._directory = directory
        self._prefix = f"{redis.settings.prefix}:alerts:" if redis is not None else ""
        self._io = trio.CapacityLimiter(1)

    async def claim(self, key: str, ttl_s: float, clears: Sequence[str] = ()) -> bool:
        """True when this process should send the alert `key` (and it now owns it for `ttl_s`)."""
        if self._redis is not None:
            try:
                return await self._redis.run(lambda client: self._redis_claim(client, key, ttl_s, clears))
            except RedisUnavailable:
                pass  # the directory, if any, still de-duplicates this machine's workers
        if self._directory is not None:
            return await trio.to_thread.run_sync(self._file_claim, key, ttl_s, clears, limiter=self._io)
        return True

    def _redis_claim(self, client: Client, key: str, ttl_s: float, clears: Sequence[str]) -> bool:
        won = bool(client.set(self._prefix + key, b"1", nx=True, ex=max(1, math.ceil(ttl_s))))
        if won and clears:
            client.delete(*(self._prefix + c for c in clears))
        return won

    def _file_claim(self, key: str, ttl_s: float, clears: Sequence[str]) -> bool:
        assert self._directory is not None
        self._directory.mkdir(parents=True, exist_ok=True)
        path = self._path(key)
        for _ in range(2):
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except FileExistsError:
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - path.stat().st_mtime < ttl_s:
                        return False
                    path.unlink()  # expired: claim it again
                continue
            for cleared in clears:
                self._path(cleared).unlink(missing_ok=True)
            return True
        return False

    def _path(self, key: str) -> Path:
        assert self._directory is not None
        # Hashed: keys hold deployment ids and budget owners, which need not be valid file names.
        return self._directory / hashlib.sha256(key.encode()).hexdigest()[:40]
