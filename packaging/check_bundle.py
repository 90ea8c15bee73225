"""Check what went into the one-file executable, and report the glibc it needs (Linux).

    python packaging/check_bundle.py dist/edgeproxy [SOURCE_ROOT]

Run by packaging/build.sh with the build virtualenv's Python (it reads the archive with PyInstaller's
own reader). Fails when something the program loads at run time is missing, or a test tool got in.
Every data file of the source tree's packages (templates, static files, JSON...) must be inside too:
the binary gets what the wheel carries, so a file missing from pyproject.toml's package-data shows here.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PyInstaller.archive.readers import CArchiveReader

# Python modules (in the PYZ archive) the program imports at run time, some of them only by name.
REQUIRED_MODULES = [
    "edgeproxy.cli",
    "edgeproxy.server",
    "edgeproxy.app",
    "storage.migrate",
    "storage.schema",
    "alembic.op",
    "alembic.ddl.sqlite",
    "alembic.ddl.postgresql",
    "sqlalchemy.dialects.sqlite.pysqlite",
    "sqlalchemy.dialects.postgresql.psycopg",
    "sqlite3",
    "psycopg",
    "redis",
    "redis.client",
    "hypercorn.trio",
    "quart_trio",
    "trio",
    "httpx",
    "yaml",
    "certifi",
    "multiprocessing.spawn",
]
# Files unpacked next to the program: glob patterns over the archive's names.
REQUIRED_FILES = [
    "storage/migrations/env.py",
    "storage/migrations/versions/0001_initial.py",
    "edgeproxy/data/prices.json",
    "edgeproxy-*.dist-info/METADATA",
    "psycopg_binary/pq.*.so",
    "psycopg_binary/_psycopg.*.so",
    "*_sqlite3.*.so",
    "certifi/cacert.pem",
]
# libpq and its libraries come with psycopg-binary's wheel; SQLite is a shared library on Linux builds.
if sys.platform == "darwin":
    REQUIRED_FILES += ["psycopg_binary/.dylibs/libpq*"]
else:
    REQUIRED_FILES += ["psycopg_binary.libs/libpq*", "*libsqlite3*"]
# Source files that are not needed at run time (Alembic's template for *new* revisions).
NOT_SHIPPED = ["*.py", "*.pyc", "*.mako"]
PACKAGES = ["edgeproxy", "storage"]
# Never inside: test tools and the build tools themselves.
FORBIDDEN_MODULES = [
    "pytest",
    "_pytest",
    "pytest_trio",
    "openai",
    "mypy",
    "ruff",
    "tests",
    "PyInstaller",
    "pip",
    "tkinter",
]


def source_data_files(root: Path) -> list[str]:
    found = []
    for package in PACKAGES:
        for file in (root / package).rglob("*"):
            shipped = not any(fnmatch.fnmatch(file.name, pattern) for pattern in NOT_SHIPPED)
            if file.is_file() and "__pycache__" not in file.parts and shipped:
                found.append(file.relative_to(root).as_posix())
    return sorted(found)


def main(path: str, source_root: str) -> int:
    archive = CArchiveReader(path)
    names = list(archive.toc)
    modules = set(archive.open_embedded_archive("PYZ.pyz").toc)
    problems = [f"module {m} is missing" for m in REQUIRED_MODULES if m not in modules]
    problems += [f"no file matches {p}" for p in REQUIRED_FILES if not fnmatch.filter(names, p)]
    problems += [
        f"data file {f} is not inside (missing from package-data in pyproject.toml?)"
        for f in source_data_files(Path(source_root))
        if f not in archive.toc
    ]
    problems += [
        f"{m} must not be inside" for m in FORBIDDEN_MODULES if any(n == m or n.startswith(m + ".") for n in modules)
    ]
    for problem in problems:
        print(f"check_bundle: {problem}")
    binaries = [name for name, entry in archive.toc.items() if entry[4] == "b"]
    print(f"check_bundle: {len(modules)} modules, {len(names)} files ({len(binaries)} shared libraries)")
    if sys.platform.startswith("linux"):
        print(f"check_bundle: glibc floor: {glibc_floor(path, archive, binaries)} (the oldest glibc that can run it)")
    return 1 if problems else 0


def glibc_floor(path: str, archive: CArchiveReader, binaries: list[str]) -> str:
    """The newest GLIBC_x.y symbol version any bundled library or the bootloader asks for."""
    if shutil.which("objdump") is None:
        return "unknown (no objdump)"
    versions: set[tuple[int, ...]] = set()
    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(path)]  # the executable itself: the bootloader
        for name in binaries:
            target = Path(tmp) / name.replace("/", "_")
            target.write_bytes(archive.extract(name))
            files.append(target)
        for file in files:
            out = subprocess.run(["objdump", "-T", str(file)], capture_output=True, text=True).stdout
            versions |= {tuple(map(int, v.split("."))) for v in re.findall(r"GLIBC_(\d+(?:\.\d+)+)", out)}
    return ".".join(map(str, max(versions))) if versions else "unknown"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "dist/edgeproxy", sys.argv[2] if len(sys.argv) > 2 else "."))
