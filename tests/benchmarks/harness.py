"""Processes and measurements for the benchmarks: nginx, the drip upstream, the proxy, wrk."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

HERE = Path(__file__).resolve().parent
PROXY_CORE, LOAD_CORE = "1", "0"
DRIP_PORT = 18090  # the slow-drip stream upstream (drip.py)


@contextmanager
def redis_namespace(name: str) -> Iterator[str]:
    """A response-cache namespace of the run's own, emptied afterwards: a run stores hundreds of thousands of
    entries, which would otherwise slow every SCAN of the shared Redis (the tests' among them) until they expire."""
    namespace = f"{name}-{uuid.uuid4().hex[:8]}"
    try:
        yield namespace
    finally:
        import redis  # only the Redis scenarios need it

        with suppress(redis.RedisError), redis.Redis(host="127.0.0.1", port=6379) as client:
            keys = list(client.scan_iter(match=f"{namespace}:*", count=10_000))
            for start in range(0, len(keys), 10_000):
                client.unlink(*keys[start : start + 10_000])


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up within {timeout_s} s")


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if found is None:
        raise RuntimeError(f"cannot read wrk's latency {text!r}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def wrk(url: str, connections: int, seconds: int, script: str, key: str, model: str = "bench-model") -> WrkResult:
    env = {**os.environ, "KEY": key, "MODEL": model, "NONCE": uuid.uuid4().hex}
    command = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    out = subprocess.run([*command, "-s", str(HERE / script), url], env=env, capture_output=True, text=True, check=True)
    text = out.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    requests = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    return WrkResult(rps, p50, p99, int(errors.group(1)) if errors else 0, requests)


@contextmanager
def start_nginx() -> Iterator[None]:
    run = tempfile.mkdtemp(prefix="edgeproxy-nginx-")
    conf = str(HERE / "upstream-nginx.conf")
    subprocess.run(["taskset", "-c", LOAD_CORE, "nginx", "-c", conf, "-p", run + "/"], check=True)
    try:
        wait_for("http://127.0.0.1:18080/v1/models")
        yield
    finally:
        subprocess.run(["nginx", "-c", conf, "-p", run + "/", "-s", "stop"], check=False)
        shutil.rmtree(run, ignore_errors=True)


@contextmanager
def start_drip(port: int, chunks: int = 20, drip_ms: float = 50) -> Iterator[None]:
    command = [sys.executable, str(HERE / "drip.py"), str(port), str(chunks), str(drip_ms)]
    process = subprocess.Popen(["taskset", "-c", LOAD_CORE, *command])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield
    finally:
        process.terminate()
        process.wait()


class ProxyProcess:
    """`edgeproxy run` on a config, pinned to its own core unless pin=None."""

    def __init__(self, config: dict[str, Any], work: Path, name: str, pin: str | None = PROXY_CORE, workers: int = 1):
        self.config = config
        self.master_key = config["general_settings"]["master_key"]
        self.path = work / f"{name}.yaml"
        self.path.write_text(yaml.safe_dump(config))
        self.pin = pin
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ProxyProcess:
        command = [sys.executable, "-m", "edgeproxy", "run", "--config", str(self.path), "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--workers", str(self.workers), "--log-level", "warning"]
        if self.pin is not None:
            command = ["taskset", "-c", self.pin, *command]
        self.process = subprocess.Popen(command, cwd=self.path.parent)
        wait_for(self.url + "/health/liveliness")
        # One worker answering is not all of them listening: SO_REUSEPORT spreads new connections over the
        # sockets that listen when they arrive, and wrk's keep-alive connections stay where they land, so a
        # run started early measures one worker however many there are.
        wait_until_listening(self.port, self.workers)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def create_key(self, **fields: Any) -> str:
        response = httpx.post(
            self.url + "/key/generate",
            json={"key_alias": f"bench-{time.monotonic_ns()}", **fields},
            headers={"authorization": f"Bearer {self.master_key}"},
            timeout=10,
        )
        response.raise_for_status()
        return str(response.json()["key"])

    def rss_mib(self) -> float:
        assert self.process is not None
        pids = [self.process.pid, *_children(self.process.pid)]
        total = 0
        for pid in pids:
            status = Path(f"/proc/{pid}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
        return total / 1024

    def cpu_s(self) -> float:
        """CPU seconds (user + system) used so far by the proxy and its worker processes."""
        assert self.process is not None
        total = 0
        for pid in [self.process.pid, *_children(self.process.pid)]:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
        return total / os.sysconf("SC_CLK_TCK")

    def soak(self, minutes: float, key: str) -> list[tuple[float, float]]:
        """(minutes since the warm-up, RSS MiB) every 30 s under steady load (c=8), after a one-minute warm-up."""
        wrk(self.url + "/v1/chat/completions", 8, 60, "chat.lua", key)
        started = time.monotonic()
        samples = [(0.0, self.rss_mib())]
        while time.monotonic() < started + minutes * 60:
            wrk(self.url + "/v1/chat/completions", 8, 30, "chat.lua", key)
            samples.append(((time.monotonic() - started) / 60, self.rss_mib()))
        return samples


SERVICES = ("redis-server", "postgres")


@contextmanager
def services_on_load_core() -> Iterator[list[str]]:
    """Redis and PostgreSQL on the load core while the benchmarks run, then back where they were.

    The proxy's core is then the proxy's alone: a service the scheduler puts there takes its CPU, and one that
    moves between cores costs a cross-core wake-up per round trip (measured on a 2-core VM: Redis left free cost
    a Redis-limited request at c=1 about 45 % of the master key's throughput, pinned about 25 %). Every thread of
    every process of those names is moved; PostgreSQL backends started later inherit the postmaster's core.
    Yields the names of the services moved: one we may not touch (another user's, without root) stays put.
    """
    moved: dict[int, set[int]] = {}  # thread id -> its affinity before
    names: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            name = (proc / "comm").read_text().strip()
            if name not in SERVICES:
                continue
            for task in (proc / "task").iterdir():
                tid = int(task.name)
                before = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, {int(LOAD_CORE)})
                moved[tid] = before
                names.add(name)
        except (OSError, ValueError):  # gone meanwhile, or not ours to move
            continue
    try:
        yield sorted(names)
    finally:
        for tid, before in moved.items():
            with suppress(OSError):
                os.sched_setaffinity(tid, before)


def listening_sockets(port: int) -> int:
    """How many sockets listen on 127.0.0.1:`port` (one per worker under SO_REUSEPORT), from /proc/net/tcp."""
    local = f"0100007F:{port:04X}"
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for row in rows if row.split()[1] == local and row.split()[3] == "0A")  # 0A: LISTEN


def wait_until_listening(port: int, sockets: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while listening_sockets(port) < sockets:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{sockets} workers did not all listen on port {port} within {timeout_s} s")
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@dataclass
class Bench:
    runs: int
    seconds: int
    concurrency: tuple[int, ...]
    figures: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # printed under the table

    def record(self, name: str, unit: str, value: float, **extra: float) -> None:
        self.figures.append(
            {"name": name, "unit": unit, "value": round(value, 3), **{k: round(v, 3) for k, v in extra.items()}}
        )
        print(f"{name}: {value:.2f} {unit}", file=sys.stderr, flush=True)

    def markdown(self) -> str:
        lines = ["| scenario | value | unit | p50 latency (ms) |", "|---|---:|---|---:|"]
        for f in self.figures:
            p50 = f"{f['p50_ms']:.2f}" if "p50_ms" in f else ""
            value = f"{f['value']:.2f}" + (f" ({f['q1']:.1f} to {f['q3']:.1f})" if "q1" in f else "")
            lines.append(f"| {f['name']} | {value} | {f['unit']} | {p50} |")
        return "\n".join([*lines, "", *self.notes]) if self.notes else "\n".join(lines)

    @staticmethod
    @contextmanager
    def workdir() -> Iterator[Path]:
        path = Path(tempfile.mkdtemp(prefix="edgeproxy-bench-"))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
