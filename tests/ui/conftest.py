"""Fixtures for the browser tests: Debian's Chromium driven by Playwright, against a real server with a worker.

Every page the tests open records its console errors, page errors and Content-Security-Policy violations; a test
that leaves any fails (`page` fixture teardown), so a JavaScript exception or a blocked script anywhere in the UI
is a failure, not a log line.

Screenshots go to /tmp/conveyor-ui, or to `CONVEYOR_SCREENSHOTS` (`CONVEYOR_SCREENSHOTS=docs/img` refreshes the
README's pictures)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, expect, sync_playwright

from conveyor.ui import mount_ui
from tests.server.conftest import ADMIN_TOKEN, LiveServer, make_app, serve_in_thread

CHROMIUM = os.environ.get("CONVEYOR_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("CONVEYOR_SCREENSHOTS", "/tmp/conveyor-ui"))
ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "ui" / "node_modules" / "axe-core" / "axe.min.js"
DESKTOP = {"width": 1400, "height": 900}
PHONE = {"width": 390, "height": 844}

# Conditions in the UI tests wait up to 15 s: this 2-core machine runs several suites at once, and a page that is
# right but late is not a failure.
expect.set_options(timeout=15_000)


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

    @app.task("boom", max_attempts=1)
    async def boom(payload: Any) -> Any:
        raise ValueError(f"bad input: {payload!r}")

    app.cron("0 0 1 1 *", "echo", {"report": "yearly"}, name="yearly-report")
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


class Problems:
    """What went wrong in the browser while a test ran: console errors, uncaught exceptions, CSP violations."""

    def __init__(self) -> None:
        self.items: list[str] = []
        # substrings of messages a test expects (e.g. a deliberate 401). ERR_NETWORK_CHANGED: Chromium drops its
        # connections when the machine's network interfaces change (other suites make network namespaces on this
        # machine); the UI reconnects, which the tests check where it matters.
        self.allowed: list[str] = ["net::ERR_NETWORK_CHANGED"]

    def watch(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.items.append(f"uncaught: {e}"))

    def _console(self, message: ConsoleMessage) -> None:
        serious = message.type == "error" or "Content Security Policy" in message.text
        if serious and not any(a in message.text for a in self.allowed):
            self.items.append(f"console {message.type}: {message.text}")


@pytest.fixture
def problems() -> Problems:
    return Problems()


def new_page(browser: Browser, problems: Problems, **options: object) -> tuple[BrowserContext, Page]:
    context = browser.new_context(**{"viewport": DESKTOP, **options})  # type: ignore[arg-type]
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems.watch(page)
    return context, page


@pytest.fixture
def page(browser: Browser, live: LiveServer, problems: Problems) -> Iterator[Page]:
    context, page = new_page(browser, problems)
    yield page
    context.close()
    assert not problems.items, "the browser reported problems:\n" + "\n".join(problems.items)
