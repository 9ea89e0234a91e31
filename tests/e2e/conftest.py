"""One running studio (web + embedded worker, tiny profile) shared by every end-to-end test."""

from __future__ import annotations

import shutil

import pytest

from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, UI_TIMEOUT_MS, sync_api
from tests.support import StudioServer, studio_env


@pytest.fixture(scope="session")
def studio(tmp_path_factory, models_dir):
    """``python app.py --profile tiny`` on a free port, ready with its worker; stopped after the session."""
    data_dir = tmp_path_factory.mktemp("studio-data")
    server = StudioServer(studio_env(data_dir, models_dir), data_dir / "studio.log")
    try:
        server.wait_ready(timeout=120)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        pytest.skip(f"no chromium at {CHROMIUM} or on PATH: install Debian's chromium package to run browser tests")
    executable = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, studio):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.goto(studio.url)
    yield page
    context.close()
