"""Layout, themes and accessibility: every page at a 390 px phone without sideways page scroll, dark mode from the
system preference and from the toggle, axe-core with no serious or critical violation on every page in both themes
(run through the DevTools protocol, so the UI's CSP is not relaxed), the navigation's aria-current and per-page
titles, a focus ring with at least 3:1 contrast, and the README's screenshots."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, expect

from tests.server.conftest import LiveServer, wait_for
from tests.ui.conftest import PHONE, Problems, new_page
from tests.ui.helpers import PAGES, axe, describe, go, page_width, shot, sign_in

TITLES = {
    "overview": "Overview",
    "jobs": "Jobs",
    "dead-letters": "Dead letters",
    "queues": "Queues",
    "workers": "Workers",
    "schedules": "Schedules",
    "namespaces": "Namespaces",
}


def _data(live: LiveServer) -> str:
    """Some of everything, so that pages have rows: completed, failed (with a traceback), scheduled, a paused queue,
    a second namespace. Returns the failed job's id."""
    live.admin.post("/api/v1/namespaces", json={"name": "game", "description": "per-player jobs"}).raise_for_status()
    for n in range(3):
        live.admin.post("/api/v1/jobs", json={"task": "echo", "payload": {"n": n}}).raise_for_status()
    failed = live.admin.post("/api/v1/jobs", json={"task": "boom", "payload": {"user": 42}}).json()["id"]
    live.admin.post("/api/v1/jobs", json={"task": "echo", "queue": "mail", "delay": 3600}).raise_for_status()
    live.admin.post(
        "/api/v1/jobs", json={"task": "echo", "namespace": "game", "user_id": "player-1", "delay": 600}
    ).raise_for_status()
    live.admin.post("/api/v1/queues/mail/pause").raise_for_status()
    wait_for(lambda: live.admin.get(f"/api/v1/jobs/{failed}").json()["status"] == "failed")
    return str(failed)


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_every_page_fits_a_phone_and_passes_axe(
    browser: Browser, live: LiveServer, problems: Problems, theme: str
) -> None:
    failed = _data(live)
    context, page = new_page(browser, problems, viewport=PHONE, color_scheme=theme, is_mobile=True, has_touch=True)
    try:
        sign_in(page, live)
        expect(page.locator("html")).to_have_attribute("data-theme", theme)
        for route in (*PAGES, f"jobs/{failed}"):
            go(page, live, route)
            expect(page.locator("main h1")).to_be_visible()
            width = page_width(page)
            assert width <= PHONE["width"], f"{route}: the page is {width} px wide on a {PHONE['width']} px phone"
            violations = axe(page)
            assert not violations, f"{route} ({theme}, phone):\n{describe(violations)}"
        # the menu: closed on a phone, opens with its button, marks the current page
        nav = page.locator("#nav")
        expect(nav).to_be_hidden()
        page.click(".menu-button")
        expect(nav).to_be_visible()
        expect(page.locator(".menu-button")).to_have_attribute("aria-expanded", "true")
        violations = axe(page)
        assert not violations, f"open menu ({theme}, phone):\n{describe(violations)}"
        page.click("#nav a[data-page=queues]")
        expect(nav).to_be_hidden()
        expect(page.locator("#nav a[aria-current=page]")).to_have_attribute("data-page", "queues")
    finally:
        context.close()
    assert not problems.items, problems.items


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_every_desktop_page_passes_axe_with_titles_and_aria_current(
    browser: Browser, live: LiveServer, problems: Problems, theme: str
) -> None:
    failed = _data(live)
    context, page = new_page(browser, problems, color_scheme=theme)
    try:
        page.goto(f"{live.base_url}/ui/")
        violations = axe(page)
        assert not violations, f"sign-in page ({theme}):\n{describe(violations)}"
        sign_in(page, live)
        for route in PAGES:
            go(page, live, route)
            expect(page).to_have_title(f"{TITLES[route]} · Conveyor")
            expect(page.locator("#nav a[aria-current=page]")).to_have_count(1)
            expect(page.locator("#nav a[aria-current=page]")).to_have_attribute("data-page", route)
            violations = axe(page)
            assert not violations, f"{route} ({theme}):\n{describe(violations)}"
        go(page, live, f"jobs/{failed}")
        page.locator("details.traceback summary").first.click()
        violations = axe(page)
        assert not violations, f"job page ({theme}):\n{describe(violations)}"
        go(page, live, "jobs")
        page.check("thead input[type=checkbox]")
        page.click("button[data-bulk=requeue]")
        expect(page.locator("dialog.confirm")).to_be_visible()
        violations = axe(page)
        assert not violations, f"confirmation dialog ({theme}):\n{describe(violations)}"
    finally:
        context.close()
    assert not problems.items, problems.items


def test_dark_mode_follows_the_system_and_the_toggle(browser: Browser, live: LiveServer, problems: Problems) -> None:
    context, page = new_page(browser, problems, color_scheme="dark")
    try:
        sign_in(page, live)
        html = page.locator("html")
        expect(html).to_have_attribute("data-theme", "dark")
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert _luminance(background) < 0.05, background
        toggle = page.locator("#theme-toggle")
        expect(toggle).to_have_text("Theme: system")
        toggle.click()
        expect(toggle).to_have_text("Theme: light")
        expect(html).to_have_attribute("data-theme", "light")
        assert _luminance(page.evaluate("getComputedStyle(document.body).backgroundColor")) > 0.8
        page.reload()  # the choice is kept (not a secret: localStorage)
        expect(page.locator("#shell")).to_be_visible()
        expect(html).to_have_attribute("data-theme", "light")
        page.click("#theme-toggle")
        expect(html).to_have_attribute("data-theme", "dark")
        page.click("#theme-toggle")
        expect(page.locator("#theme-toggle")).to_have_text("Theme: system")
        page.emulate_media(color_scheme="light")
        expect(html).to_have_attribute("data-theme", "light")
    finally:
        context.close()
    assert not problems.items, problems.items


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_focus_ring_has_three_to_one_contrast(
    browser: Browser, live: LiveServer, problems: Problems, theme: str
) -> None:
    """Tab through the page; for every focused control, the outline colour against the colour behind it (the
    nearest opaque background) is at least 3:1 (WCAG 2.2, 1.4.11 and 2.4.13)."""
    _data(live)
    context, page = new_page(browser, problems, color_scheme=theme)
    try:
        sign_in(page, live)
        go(page, live, "jobs")
        seen = 0
        for _ in range(40):
            page.keyboard.press("Tab")
            info = page.evaluate(
                """() => {
                    const el = document.activeElement;
                    if (!el || el === document.body) return null;
                    const s = getComputedStyle(el);
                    let p = el.parentElement, bg = 'rgba(0, 0, 0, 0)';
                    while (p) {
                        const c = getComputedStyle(p).backgroundColor;
                        if (!c.endsWith(', 0)') && c !== 'transparent') { bg = c; break; }
                        p = p.parentElement;
                    }
                    if (bg === 'rgba(0, 0, 0, 0)') bg = getComputedStyle(document.body).backgroundColor;
                    return { tag: el.tagName, text: (el.innerText || el.getAttribute('aria-label') || '').slice(0, 30),
                             style: s.outlineStyle, width: parseFloat(s.outlineWidth), color: s.outlineColor, bg };
                }"""
            )
            if info is None:
                continue
            seen += 1
            where = f"{info['tag']} {info['text']!r}"
            assert info["style"] != "none" and info["width"] >= 2, f"{where}: no visible focus ring ({info})"
            ratio = _contrast(info["color"], info["bg"])
            assert ratio >= 3, f"{where}: focus ring contrast {ratio:.2f}:1 ({info['color']} on {info['bg']})"
        assert seen >= 20
    finally:
        context.close()
    assert not problems.items, problems.items


@pytest.mark.parametrize(
    ("theme", "device"), [("light", "desktop"), ("dark", "desktop"), ("light", "phone"), ("dark", "phone")]
)
def test_screenshots(browser: Browser, live: LiveServer, problems: Problems, theme: str, device: str) -> None:
    """The pictures in the README (CONVEYOR_SCREENSHOTS=docs/img refreshes them)."""
    failed = _data(live)
    options: dict[str, object] = {"color_scheme": theme}
    if device == "phone":
        options.update(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    context, page = new_page(browser, problems, **options)
    try:
        sign_in(page, live)
        for n in range(5):  # work arriving while the overview samples it, so its charts have a shape
            jobs = [{"task": "echo", "payload": {"n": i}} for i in range(10 + 15 * n)]
            live.admin.post("/api/v1/jobs/batch", json=jobs).raise_for_status()
            page.wait_for_timeout(2100)
        for route in ("overview", "jobs", f"jobs/{failed}", "queues"):
            go(page, live, route)
            if route.startswith("jobs/"):
                page.locator("details.traceback summary").first.click()
            name = "job" if route.startswith("jobs/") else route
            shot(page, f"{name}-{theme}-{device}", full_page=device == "desktop")
    finally:
        context.close()
    assert not problems.items, problems.items


def _rgb(css: str) -> tuple[float, float, float]:
    parts = css[css.index("(") + 1 : css.index(")")].replace("/", " ").replace(",", " ").split()
    return float(parts[0]), float(parts[1]), float(parts[2])


def _luminance(css: str) -> float:
    def channel(c: float) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = _rgb(css)
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def _contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)
