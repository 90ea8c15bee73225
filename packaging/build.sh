#!/usr/bin/env bash
# Build dist/edgeproxy, the one-file executable, from a clean virtual environment.
#
#   packaging/build.sh            # Linux x86-64 or macOS arm64; needs python3 (3.11+) and the network to PyPI
#
# The build venv ($BUILD_DIR/pyinstaller-venv) is made anew each time and holds only edgeproxy, its runtime
# dependencies and PyInstaller: no test tools can end up inside. Then packaging/check_bundle.py checks what
# went in and prints the glibc floor.
#
# Environment: BUILD_DIR (default build: the venv and PyInstaller's work files), DIST_DIR (default dist),
# PYTHON (default python3). libpython is bundled, so PYTHON must be a shared build: python.org and Homebrew
# ones are; with pyenv, install with PYTHON_CONFIGURE_OPTS=--enable-shared.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
BUILD_DIR="${BUILD_DIR:-build}"
DIST_DIR="${DIST_DIR:-dist}"
VENV="$BUILD_DIR/pyinstaller-venv"
# Pinned so that two builds of the same commit bundle the same thing; bump them deliberately.
PYINSTALLER="pyinstaller==6.22.3"
HOOKS_CONTRIB="pyinstaller-hooks-contrib==2026.9"

log() { printf '== %s\n' "$*"; }
started=$(date +%s)

log "clean build venv ($VENV) with $($PYTHON --version 2>&1)"
# build/lib: setuptools' in-tree staging, which can keep modules deleted since the last build.
rm -rf "$VENV" "$BUILD_DIR/pyinstaller" build/lib build/bdist.* "$DIST_DIR/edgeproxy"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
# A plain (not editable) install: the binary is made from what the wheel carries, package data included.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check . "$PYINSTALLER" "$HOOKS_CONTRIB"

for tool in pytest pytest-trio openai ruff mypy; do
  if "$VENV/bin/python" -m pip show --quiet "$tool" >/dev/null 2>&1; then
    echo "build.sh: $tool is in the build venv: test tools must not be bundled" >&2
    exit 1
  fi
done

log "pyinstaller"
"$VENV/bin/pyinstaller" --noconfirm --clean --log-level WARN \
  --distpath "$DIST_DIR" --workpath "$BUILD_DIR/pyinstaller" packaging/edgeproxy.spec

log "check"
"$VENV/bin/python" packaging/check_bundle.py "$DIST_DIR/edgeproxy" .
"$DIST_DIR/edgeproxy" --version
size=$("$VENV/bin/python" -c 'import os, sys; print(os.path.getsize(sys.argv[1]))' "$DIST_DIR/edgeproxy")
log "$DIST_DIR/edgeproxy: $((size / 1000000)).$(((size % 1000000) / 100000)) MB, built in $(($(date +%s) - started)) s"
