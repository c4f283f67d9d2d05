"""The admin UI's handling of the admin token and the browser hardening, in real Chromium against a real server:
security headers on every answer, no token in any URL the page requests (every request is recorded), the token
in session storage only (never localStorage), a framed UI refused by the browser, no Content-Security-Policy
violation while the UI is used, and the live event stream working over fetch with the Authorization header."""

from __future__ import annotations

import http.server
import socketserver
import threading

import httpx
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, expect

from tests.server.conftest import ADMIN_TOKEN, LiveServer, wait_for
from tests.ui.conftest import Problems
from tests.ui.helpers import sign_in

REQUIRED = {
    "content-security-policy": "frame-ancestors 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def _check_headers(headers: httpx.Headers | dict[str, str], where: str) -> None:
    lowered = {k.lower(): v for k, v in headers.items()}
    for name, value in REQUIRED.items():
        assert value in lowered.get(name, ""), f"{where}: {name} = {lowered.get(name)!r}"
    csp = lowered["content-security-policy"]
    if not where.startswith(("/docs", "/redoc")):
        assert "'unsafe-inline'" not in csp and "script-src 'self'" in csp, where


def test_every_kind_of_answer_carries_the_security_headers(live: LiveServer) -> None:
    big = b"x" * (17 * 1024 * 1024)
    answers = {
        "/ui/": live.client().get("/ui/"),
        "/ui/app.js": live.client().get("/ui/app.js"),
        "/ui/app.css": live.client().get("/ui/app.css"),
        "/ui/missing.js": live.client().get("/ui/missing.js"),
        "/ (redirect)": live.client().get("/", follow_redirects=False),
        "/api/v1/stats": live.admin.get("/api/v1/stats"),
        "/api/v1/stats 401": live.client().get("/api/v1/stats"),
        "/api/jobs/enqueue 413": live.admin.post("/api/jobs/enqueue", content=big),
        "/job-queue/ 401": live.client().get("/job-queue/"),
        "/health": live.client().get("/health"),
        "/openapi.json": live.client().get("/openapi.json"),
        "/docs": live.client().get("/docs"),
        "/nowhere 404": live.client().get("/nowhere"),
    }
    for where, response in answers.items():
        _check_headers(response.headers, where)
    assert answers["/api/v1/stats"].headers["cache-control"] == "no-store"
    with live.admin.stream("GET", "/api/events") as stream:
        _check_headers(stream.headers, "/api/events")


def test_tokens_in_urls_are_refused_everywhere(live: LiveServer) -> None:
    for path in ("/ui/", "/api/events", "/api/v1/stats", "/job-queue/", "/health"):
        r = live.client().get(path, params={"token": ADMIN_TOKEN})
        assert r.status_code == 400, (path, r.text)
        assert ADMIN_TOKEN not in r.text
    r = live.client().get("/api/v1/stats", params={"access_token": ADMIN_TOKEN})
    assert r.status_code == 400 and r.json()["error"] == "token_in_url"


def test_the_token_never_appears_in_a_url_nor_in_local_storage(page: Page, live: LiveServer) -> None:
    requested: list[Request] = []
    page.on("request", lambda r: requested.append(r))
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)

    live.admin.post("/api/v1/jobs", json={"task": "echo", "payload": {"n": 1}}).raise_for_status()
    sign_in(page, live)
    expect(page.locator("#live-text")).to_have_text("live")  # the event stream is open (fetch + header)
    for route in ("jobs", "dead-letters", "queues", "workers", "schedules", "namespaces", "overview"):
        page.goto(f"{live.base_url}/ui/#/{route}")
        expect(page.locator("h1")).to_be_visible()
    page.click("a[href='#/namespaces']")
    page.click("button:has-text('New namespace')")
    expect(page.locator("#ns-form")).to_be_visible()

    assert page.evaluate("JSON.stringify(localStorage)").find(ADMIN_TOKEN) == -1
    assert page.evaluate("sessionStorage.getItem('conveyor.adminToken')") == ADMIN_TOKEN
    urls = [r.url for r in requested]
    assert any("/api/events" in u for u in urls) and any("/api/v1/stats" in u for u in urls)
    assert not [u for u in urls if ADMIN_TOKEN in u or "token=" in u], urls
    api_calls = [r for r in requested if "/api/" in r.url]
    assert api_calls and all(r.headers.get("authorization") == f"Bearer {ADMIN_TOKEN}" for r in api_calls)
    sent_referer = [r.url for r in requested if r.all_headers().get("referer")]
    assert not sent_referer, f"no Referer should leave the page: {sent_referer}"
    assert not violations, violations

    page.click("#logout")  # at 1400 px the navigation is open
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('conveyor.adminToken')") is None


def test_a_token_left_in_local_storage_by_an_older_version_is_removed(page: Page, live: LiveServer) -> None:
    page.goto(f"{live.base_url}/ui/")
    page.evaluate(f"localStorage.setItem('conveyor.adminToken', {ADMIN_TOKEN!r})")
    page.reload()
    expect(page.locator("#login")).to_be_visible()  # not signed in from it
    assert page.evaluate("localStorage.getItem('conveyor.adminToken')") is None


def test_a_new_tab_is_not_signed_in(browser: Browser, page: Page, live: LiveServer) -> None:
    sign_in(page, live)
    other = page.context.new_page()
    other.goto(f"{live.base_url}/ui/")
    expect(other.locator("#login")).to_be_visible()  # session storage is per tab
    other.close()


def test_the_ui_cannot_be_framed(page: Page, live: LiveServer, problems: Problems) -> None:
    """A page on another origin (another port, same loopback host) frames the UI: Chromium refuses to render it
    (frame-ancestors 'none', X-Frame-Options DENY). The same page framing a header-less page of its own shows it,
    so the refusal is the UI's headers' doing."""
    html = f'<html><body><iframe src="{live.base_url}/ui/"></iframe><iframe src="/plain"></iframe></body></html>'

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = html if self.path == "/" else '<div id="login-form">plain</div>'
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    problems.allowed.append("frame-ancestors")  # the refusal this test expects is logged by the browser
    problems.allowed.append("ERR_CONNECTION_RESET")  # the little framing server closes its connections abruptly
    evil = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        blocked: list[str] = []
        page.on("console", lambda m: _note_frame_refusal(m, blocked))
        page.goto(f"http://127.0.0.1:{evil.server_address[1]}/")
        wait_for(lambda: len(page.frames) == 3, timeout=15)
        ui_frame, plain_frame = page.frames[1], page.frames[2]
        expect(plain_frame.locator("#login-form")).to_have_count(1)
        wait_for(lambda: blocked or ui_frame.url.startswith("chrome-error://"), timeout=15)
        assert ui_frame.locator("#login-form").count() == 0
        assert ui_frame.locator("#token-input").count() == 0
    finally:
        evil.shutdown()
        evil.server_close()


def _note_frame_refusal(message: ConsoleMessage, into: list[str]) -> None:
    if "frame" in message.text.lower() and ("refused" in message.text.lower() or "ancestors" in message.text):
        into.append(message.text)
