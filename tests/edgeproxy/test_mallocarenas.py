"""The malloc arena limit: threads that allocate at once share two arenas instead of one each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeproxy.mallocarenas import limit_malloc_arenas

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or "glibc" not in (os.confstr("CS_GNU_LIBC_VERSION") or ""),
    reason="glibc's arenas",
)

# Eight threads alive at once, each allocating a block too large for Python's own allocator and too small for
# mmap; then glibc's own report of its arenas (malloc_info's <heap> elements).
COUNT_ARENAS = """
import ctypes, sys, threading
from edgeproxy.mallocarenas import limit_malloc_arenas
if sys.argv[1] == "limit":
    assert limit_malloc_arenas()
barrier = threading.Barrier(9)
def allocate():
    block = bytearray(20_000)
    barrier.wait()
    barrier.wait()
threads = [threading.Thread(target=allocate) for _ in range(8)]
for t in threads:
    t.start()
barrier.wait()  # all eight hold their block
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
libc.fclose.argtypes = (ctypes.c_void_p,)
stream = libc.fopen(sys.argv[2].encode(), b"w")
libc.malloc_info(0, stream)
libc.fclose(stream)
barrier.wait()
for t in threads:
    t.join()
print(open(sys.argv[2]).read().count("<heap nr="))
"""


def arenas_with(mode: str, tmp_path: Path) -> int:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}  # glibc's default, or ours
    out = subprocess.run(
        [sys.executable, "-c", COUNT_ARENAS, mode, str(tmp_path / f"{mode}.xml")],
        capture_output=True, text=True, check=True, env=environ,
    )  # fmt: skip
    return int(out.stdout)


def test_threads_share_two_arenas(tmp_path: Path) -> None:
    assert arenas_with("default", tmp_path) >= 5  # glibc's default: a new arena for each new thread, here
    assert arenas_with("limit", tmp_path) <= 2


def test_the_operators_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False
