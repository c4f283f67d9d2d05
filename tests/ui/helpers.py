"""Helpers shared by the browser tests: sign in, screenshots, axe-core, page width."""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.server.conftest import ADMIN_TOKEN, LiveServer
from tests.ui.conftest import AXE, SCREENSHOTS

PAGES = ("overview", "jobs", "dead-letters", "queues", "workers", "schedules", "namespaces")


def sign_in(page: Page, live: LiveServer, route: str = "") -> None:
    page.goto(f"{live.base_url}/ui/{route}")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#token-input", ADMIN_TOKEN)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#shell")).to_be_visible()
    expect(page.locator("#live-text")).to_have_text("live")


def go(page: Page, live: LiveServer, route: str, *, loaded: bool = True) -> None:
    """Open a page of the signed-in UI and wait until its heading shows and (`loaded`) its data is in."""
    page.goto(f"{live.base_url}/ui/#/{route}")
    expect(page.locator("main h1")).to_be_visible()
    if loaded:
        expect(page.locator("main [data-loaded]")).to_have_count(1)


def shot(page: Page, name: str, *, full_page: bool = True) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


def page_width(page: Page) -> int:
    """How wide the document is: more than the viewport means the page scrolls sideways."""
    return int(page.evaluate("Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"))


def axe(page: Page) -> list[dict[str, Any]]:
    """Run axe-core in the page and return its serious and critical violations.

    axe is evaluated through the DevTools protocol (Playwright's evaluate), not added as a <script>: the UI's
    Content-Security-Policy stays as strict as users get it (no inline script, nothing from elsewhere)."""
    if not AXE.exists():
        pytest.fail(f"axe-core is missing ({AXE}): run `cd ui && npm ci` (scripts/test.sh does)")
    page.evaluate(AXE.read_text())
    result = page.evaluate(
        """async () => {
            const r = await axe.run(document, { resultTypes: ['violations'] });
            return r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical').map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 5).map(n => ({ target: n.target.join(' '), summary: n.failureSummary })),
            }));
        }"""
    )
    return list(result)


def describe(violations: list[dict[str, Any]]) -> str:
    return json.dumps(violations, indent=2)
