"""Fixtures for the browser tests: Debian's Chromium driven by Playwright, against a real server with a worker."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from conveyor.ui import mount_ui
from tests.server.conftest import ADMIN_TOKEN, LiveServer, make_app, serve_in_thread

CHROMIUM = os.environ.get("CONVEYOR_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("CONVEYOR_SCREENSHOTS", "/tmp/conveyor-ui"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"Chromium is required for the UI tests (apt-get install chromium); looked at {CHROMIUM}")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    from conveyor.server import create_app

    app = make_app(f"sqlite:///{tmp_path / 'ui.db'}")
    api = create_app(
        app,
        admin_token=ADMIN_TOKEN,
        run_worker=True,
        print_admin_token=False,
        worker_options={"poll_interval": 0.1, "concurrency": 4, "grace_period": 2.0},
    )
    if not any(getattr(r, "name", None) == "ui" for r in api.routes):
        mount_ui(api)
    server = serve_in_thread(api, app)
    yield server
    server.stop()


@pytest.fixture
def page(browser: Browser, live: LiveServer) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()
