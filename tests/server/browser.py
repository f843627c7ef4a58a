"""Headless Chromium driven by Selenium for the chat page tests: Debian's `chromium` and
`chromium-driver` (`.ci/run` installs them). Missing on a user's machine: the tests skip with the
reason; missing in CI: they fail, because a skipped browser test proves nothing."""
from __future__ import annotations

import shutil
import stat
import time
from pathlib import Path

import pytest

from tests.conftest import IN_CI

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver",)


def _first(names) -> str | None:
    return next((path for path in map(shutil.which, names) if path), None)


def require_chromium() -> tuple[str, str]:
    """(browser binary, driver binary), or skip/fail with what is missing."""
    missing = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[test]')")
    browser, driver = _first(BROWSERS), _first(DRIVERS)
    if browser is None or driver is None:
        missing.append("chromium and chromium-driver (apt-get install chromium chromium-driver)")
    if missing:
        message = "browser tests need " + " and ".join(missing)
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return browser, driver


def start_chromium(width: int = 1280, height: int = 800):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = require_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}", "--no-first-run", "--disable-extensions",
                     "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def wait_for(condition, seconds: float = 30, what: str = "condition"):
    """Poll `condition()` until it returns something truthy (returned) or the time runs out."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {seconds} s waiting for {what}"
        time.sleep(0.05)


def url_recorder(directory: Path) -> tuple[Path, Path]:
    """An executable for $BROWSER that writes the URL it is asked to open to a file instead: (the
    executable, the file)."""
    record = directory / "opened-url"
    script = directory / "record-url"
    script.write_text(f"#!/bin/sh\nprintf '%s' \"$1\" > '{record}'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, record


def local_storage(driver, key: str):
    import json

    raw = driver.execute_script("return localStorage.getItem(arguments[0])", key)
    return None if raw is None else json.loads(raw)

