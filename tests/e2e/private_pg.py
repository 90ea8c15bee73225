"""A private PostgreSQL server for tests that stop and restart the database (the shared one must stay up)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1] if glob.glob("/usr/lib/postgresql/*/bin") else ""


def _as_postgres(*command: str) -> list[str]:
    # initdb and postgres refuse to run as root; CI and sessions run as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


@dataclass
class PrivatePostgres:
    data_dir: str
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            _as_postgres(f"{BIN}/pg_ctl", "-D", self.data_dir, "-w", "-t", "30", *args),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.data_dir} -F"
        self._ctl("-o", options, "-l", f"{self.data_dir}/log", "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")


def available() -> bool:
    return bool(BIN) and shutil.which("runuser") is not None


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    root = tempfile.mkdtemp(prefix="edgeproxy-pg-")
    os.chmod(root, 0o755)
    data_dir = os.path.join(root, "data")
    os.mkdir(data_dir, 0o700)
    shutil.chown(data_dir, "postgres", "postgres") if os.geteuid() == 0 else None
    subprocess.run(
        _as_postgres(f"{BIN}/initdb", "-D", data_dir, "-A", "trust", "-U", "postgres"), check=True, capture_output=True
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = PrivatePostgres(data_dir, port)
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped by the test
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
