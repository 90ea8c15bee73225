"""`edgeproxy run` as a real child process, for what only a process shows: signals, workers, exit codes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio
import yaml

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until_serving(url: str, timeout_s: float = 20) -> None:
    """Poll liveliness (a condition, bounded in time) until the server answers."""
    async with httpx.AsyncClient() as client:
        with trio.fail_after(timeout_s):
            while True:
                try:
                    if (await client.get(url + "/health/liveliness")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.05)


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    url: str
    log: Path  # the server's stderr

    def send(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    async def wait(self, timeout_s: float = 30) -> int:
        with trio.fail_after(timeout_s):
            return await trio.to_thread.run_sync(self.process.wait)


@asynccontextmanager
async def server_process(directory: Path, config: dict[str, Any] | None, *flags: str) -> AsyncIterator[ServerProcess]:
    """Run `edgeproxy run` on `directory/config.yaml` (written from `config` unless None) until the block ends;
    a process still alive then is killed."""
    if config is not None:
        (directory / "config.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    command = [sys.executable, "-m", "edgeproxy", "run", "--config", "config.yaml", "--host", "127.0.0.1"]
    log = directory / "stderr.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [*command, "--port", str(port), *flags],
            cwd=directory,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stderr=stderr,
        )
        server = ServerProcess(process, f"http://127.0.0.1:{port}", log)
        try:
            await wait_until_serving(server.url)
            yield server
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
