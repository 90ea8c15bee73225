"""Private highly available Redis for tests: a master, a replica and three sentinels, or a three-node cluster.

Every process is a test's own, on free loopback ports, without persistence, in temporary directories; the shared
Redis at 127.0.0.1:6379 is never touched. Waits are bounded polls on what the servers report, never fixed sleeps.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.e2e.redis_support import PrivateRedis, free_port

SERVICE = "mymaster"
STARTUP_TIMEOUT_S = 30.0


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Poll `condition` (Redis errors count as not yet) until it holds, or fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


class PrivateSentinel:
    """One redis-sentinel watching `SERVICE` (it rewrites its config file, so the file is its own)."""

    def __init__(self, master_port: int) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="edgeproxy-sentinel-")
        self.config = Path(self.dir) / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\nprotected-mode no\ndir {self.dir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)

    def start(self) -> None:
        command = [shutil.which("redis-sentinel") or "redis-sentinel", str(self.config)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with self.client() as client:
            wait_until(lambda: bool(client.ping()), f"redis-sentinel on port {self.port}", 10)

    def master(self) -> dict[str, Any]:
        with self.client() as client:
            state: dict[str, Any] = client.sentinel_master(SERVICE)
            return state

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


class SentinelGroup:
    """A master, one replica of it, and three sentinels with quorum 2."""

    def __init__(self) -> None:
        self.master = PrivateRedis()
        self.replica = PrivateRedis("--replicaof", "127.0.0.1", str(self.master.port))
        self.sentinels = [PrivateSentinel(self.master.port) for _ in range(3)]

    @property
    def nodes(self) -> list[list[Any]]:
        """The sentinels, in LiteLLM's `sentinel_nodes` form."""
        return [["127.0.0.1", sentinel.port] for sentinel in self.sentinels]

    def start(self) -> None:
        self.master.start()
        self.replica.start()
        with redis.Redis(port=self.replica.port) as replica:
            link = "master_link_status"
            wait_until(lambda: replica.info("replication").get(link) == "up", "the replica to sync")
        for sentinel in self.sentinels:
            sentinel.start()

        def sentinels_agree() -> bool:
            states = [sentinel.master() for sentinel in self.sentinels]
            return all(int(s["num-other-sentinels"]) == 2 and int(s["num-slaves"]) == 1 for s in states)

        # Sentinels find each other and the replica through the master's hello channel (every 2 s).
        wait_until(sentinels_agree, "the sentinels to see each other and the replica")

    def master_port(self) -> int | None:
        """The master's port as the first sentinel that answers names it."""
        for sentinel in self.sentinels:
            try:
                with sentinel.client() as client:
                    found = client.sentinel_get_master_addr_by_name(SERVICE)
            except redis.RedisError:
                continue
            if found:
                return int(found[1])
        return None

    def close(self) -> None:
        for process in (*self.sentinels, self.replica, self.master):
            process.kill()
            shutil.rmtree(process.dir, ignore_errors=True)


@contextmanager
def sentinel_group() -> Iterator[SentinelGroup]:
    missing = [name for name in ("redis-server", "redis-sentinel") if shutil.which(name) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (Debian: apt-get install redis-server redis-sentinel)")
    group = SentinelGroup()
    try:
        group.start()
        yield group
    finally:
        group.close()


class PrivateCluster:
    """Three cluster-enabled redis-servers (primaries only), joined by `redis-cli --cluster create`."""

    def __init__(self, size: int = 3) -> None:
        options = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
        # A free bus port of its own: the default (port + 10000) may be taken, or past 65535 for a high free port.
        self.servers = [PrivateRedis(*options, "--cluster-port", str(free_port())) for _ in range(size)]

    @property
    def startup_nodes(self) -> list[dict[str, Any]]:
        """The nodes in LiteLLM's `redis_startup_nodes` form."""
        return [{"host": "127.0.0.1", "port": server.port} for server in self.servers]

    def start(self) -> None:
        for server in self.servers:
            server.start()
        addresses = [f"127.0.0.1:{server.port}" for server in self.servers]
        command = [shutil.which("redis-cli") or "redis-cli", "--cluster", "create", *addresses, "--cluster-yes"]
        created = subprocess.run(command, capture_output=True, timeout=60, check=False)
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout.decode()[-500:]}")

        def ready() -> bool:
            for server in self.servers:
                with redis.Redis(port=server.port) as client:
                    if client.cluster("info").get("cluster_state") != "ok":
                        return False
            return True

        wait_until(ready, "cluster_state:ok on every node")

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.servers[0].port)

    def close(self) -> None:
        for server in self.servers:
            server.kill()
            shutil.rmtree(server.dir, ignore_errors=True)


@contextmanager
def redis_cluster() -> Iterator[PrivateCluster]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server and redis-cli are needed to build a private cluster")
    cluster = PrivateCluster()
    try:
        try:
            cluster.start()
        except (RuntimeError, OSError, subprocess.TimeoutExpired, redis.RedisError) as error:
            pytest.skip(f"could not build a 3-node Redis cluster on this machine: {error}")
        yield cluster
    finally:
        cluster.close()
