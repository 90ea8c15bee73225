"""Headless Debian Chromium under Selenium, for the admin page's browser tests (sync: run it in a thread).

No browser or driver is ever downloaded: Selenium gets /usr/bin/chromium and /usr/bin/chromedriver from Debian's
`chromium` and `chromium-driver` packages (`.ci/run` installs them), and Selenium Manager is skipped because
the driver path is given.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("EDGEPROXY_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("EDGEPROXY_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",  # we run as root in CI; the sandbox refuses to start then
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers have a tiny /dev/shm
    "--no-first-run",
    "--disable-background-networking",  # nothing may be fetched from outside
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)
WAIT_S = 10


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed (pip install -e '.[test]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).is_file():
            return f"{path} not found: apt-get install -y {package} (.ci/run does this)"
    return None


def require_browser() -> None:
    """Skip without Chromium, except in CI, where .ci/run installs it and a skip would hide a broken step."""
    reason = missing_browser()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"browser tests must run in CI: {reason}")
    pytest.skip(f"browser tests need headless Chromium: {reason}")


@contextmanager
def open_chrome(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A fresh headless Chromium with its own throwaway profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="edgeproxy-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshots_dir(tmp_path: Path) -> Path:
    """EDGEPROXY_UI_SCREENSHOTS when set (to keep them), else the test's temporary directory."""
    chosen = os.environ.get("EDGEPROXY_UI_SCREENSHOTS")
    path = Path(chosen) if chosen else tmp_path / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path
