"""Redis for tests: a private key prefix per test on the shared server, and private servers to kill.

The shared Redis at 127.0.0.1:6379 is never flushed or stopped: each test works under its own random prefix
(edgeproxy's keys and channels) and cache namespace, and deletes exactly those keys when it ends. Tests that
stop Redis start their own `redis-server` on a free port.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import trio

from edgeproxy.config import Config, parse_config
from tests.e2e.conftest import MASTER_KEY

SHARED_REDIS_URL = os.environ.get("EDGEPROXY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass(frozen=True)
class RedisSpace:
    """One test's corner of a Redis server."""

    url: str
    prefix: str  # edgeproxy's own keys and channels: EDGEPROXY_REDIS_PREFIX
    namespace: str  # the response cache's namespace

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def keys(self) -> list[bytes]:
        with self.client() as client:
            return [
                *client.scan_iter(match=f"{self.prefix}*", count=10_000),
                *client.scan_iter(match=f"{self.namespace}*", count=10_000),
            ]

    def cleanup(self) -> None:
        try:
            with self.client() as client:
                found = self.keys()
                if found:
                    client.unlink(*found)
        except redis.RedisError:
            pass  # a private server already stopped: nothing to clean


def new_space(url: str = SHARED_REDIS_URL) -> RedisSpace:
    tag = secrets.token_hex(5)
    return RedisSpace(url, prefix=f"edgeproxy-test-{tag}", namespace=f"edgeproxy-test-cache-{tag}")


@contextmanager
def redis_space(url: str = SHARED_REDIS_URL) -> Iterator[RedisSpace]:
    space = new_space(url)
    try:
        yield space
    finally:
        space.cleanup()


def shared_redis_available() -> bool:
    try:
        with redis.Redis.from_url(SHARED_REDIS_URL, socket_connect_timeout=1) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


requires_redis = pytest.mark.skipif(not shared_redis_available(), reason="no Redis at " + SHARED_REDIS_URL)


def redis_config(
    models: list[dict[str, Any]],
    space: RedisSpace,
    *,
    cache: bool = True,
    cache_params: dict[str, Any] | None = None,
    database_url: str | None = None,
    **sections: Any,
) -> Config:
    """A test config whose Redis (cache_params type redis) is `space`; a fresh SQLite database unless given."""
    database = database_url or f"sqlite:///{tempfile.mkdtemp(prefix='edgeproxy-test-')}/edgeproxy.db"
    general = {"master_key": MASTER_KEY, "database_url": database, **sections.pop("general_settings", {})}
    params = {"type": "redis", "url": space.url, "namespace": space.namespace, **(cache_params or {})}
    litellm = {"cache": cache, "cache_params": params, **sections.pop("litellm_settings", {})}
    raw = {"model_list": models, "general_settings": general, "litellm_settings": litellm, **sections}
    return parse_config(raw, env={"EDGEPROXY_REDIS_PREFIX": space.prefix})


async def stored_entries(space: RedisSpace, at_least: int = 1) -> list[bytes]:
    """The cache entries of the space's namespace, once there are `at_least` (stores leave a few ms after the
    answer, RedisBackend.defer); at most 5 s."""
    with space.client() as client, trio.fail_after(5):
        while len(keys := list(client.scan_iter(match=f"{space.namespace}:*", count=10_000))) < at_least:
            await trio.sleep(0.005)
        return keys


async def key_tracking_on(proxy: Any) -> None:
    """Wait (at most 10 s) until the proxy trusts its cache key tracking (edgeproxy/cache/tracking.py)."""
    async with proxy.client() as client:
        with trio.fail_after(10):
            while (await client.get("/health/readiness")).json().get("cache_key_tracking") != "tracking":
                await trio.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server of the test's own (no persistence), to stop and start again on the same port."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="edgeproxy-redis-")
        self.process: subprocess.Popen[bytes] | None = None
        self.args = args  # more redis-server options (--replicaof, --cluster-enabled...)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", self.dir, "--protected-mode", "no", *self.args,
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:  # a bounded wait for the server to accept commands (it takes a few milliseconds)
            try:
                with redis.Redis(port=self.port, socket_connect_timeout=0.2) as client:
                    if client.ping():
                        return
            except redis.RedisError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.01)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


@contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.kill()
        shutil.rmtree(server.dir, ignore_errors=True)
