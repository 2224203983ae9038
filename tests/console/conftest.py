"""A headless Chromium driven by selenium, against a real `kelpie-trio serve`.

The browser comes from Debian's `chromium` and `chromium-driver` packages (nothing is
downloaded at run time); where they or selenium are missing the browser tests skip and say
so. A failing browser test saves a screenshot and the page's HTML, and names where.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("KELPIE_CHROMIUM") or shutil.which("chromium")
CHROMEDRIVER = os.environ.get("KELPIE_CHROMEDRIVER") or shutil.which("chromedriver")


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if not CHROMIUM or not CHROMEDRIVER:
        return (
            "no headless browser here: install Debian's chromium and chromium-driver "
            "(apt-get install chromium chromium-driver) to run the console's browser tests"
        )
    return None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def new_browser(width: int = 1280, height: int = 900) -> Any:
    from selenium.common.exceptions import SessionNotCreatedException

    # Chromium's start-up alone may fail on a loaded machine ("DevToolsActivePort file
    # doesn't exist"): that is the launch, not the console, so it is tried a second time.
    try:
        return _launch(width, height)
    except SessionNotCreatedException:
        return _launch(width, height)


def _launch(width: int, height: int) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="kelpie-console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",  # offline: nothing to update, sync or fetch
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",  # a profile of its own: no two browsers share one
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except BaseException:
        shutil.rmtree(profile, ignore_errors=True)
        raise
    driver.kelpie_profile = profile  # removed by close_browser
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


@pytest.fixture
def browser(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    missing = _missing()
    if missing:
        pytest.skip(missing)
    driver = new_browser()
    try:
        yield driver
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            shot = tmp_path / "failure.png"
            driver.save_screenshot(str(shot))
            (tmp_path / "failure.html").write_text(driver.page_source)
            logs = "\n".join(str(e) for e in driver.get_log("browser"))
            (tmp_path / "browser.log").write_text(logs)
            print(f"\nconsole test failed: screenshot {shot}, page and browser log beside it")
        close_browser(driver)


def close_browser(driver: Any) -> None:
    driver.quit()
    shutil.rmtree(driver.kelpie_profile, ignore_errors=True)
