"""Browser tests: a real ``kanscope serve`` process (SQLite in a temp dir) and Debian's chromium.

Screenshots go to ``test-artifacts/screenshots/`` (gitignored).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server_process import (
    CHROMIUM,
    CHROMIUM_ARGS,
    SCREENSHOTS,
    VIEWPORT,
    RunningServer,
    ServerProcess,
)


@pytest.fixture(scope="session")
def kanscope_server() -> Iterator[ServerProcess | RunningServer]:
    if os.environ.get("KANSCOPE_E2E_URL"):
        server = RunningServer(os.environ["KANSCOPE_E2E_URL"])
        yield server
        server.api.close()
        return
    data_dir = Path(tempfile.mkdtemp(prefix="kanscope-e2e-"))
    server = ServerProcess(data_dir)
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():  # the project's rule: fail, never skip, when a part is missing
        pytest.fail(f"chromium not found at {CHROMIUM}: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, kanscope_server):
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    # waits, not speed checks (benchmarks time the pages): at load 16, 30 s was short
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors  # type: ignore[attr-defined]
    yield page
    context.close()


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
