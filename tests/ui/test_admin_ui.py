"""The admin UI in a real browser (Debian's Chromium driven by Playwright) against a real server and worker."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.server.conftest import ADMIN_TOKEN, LiveServer, wait_for
from tests.ui.conftest import SCREENSHOTS


def sign_in(page: Page, live: LiveServer) -> None:
    page.goto(f"{live.base_url}/ui/")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#token-input", ADMIN_TOKEN)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#shell")).to_be_visible()


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_wrong_token_is_refused_and_right_token_shows_the_overview(page: Page, live: LiveServer) -> None:
    page.goto(f"{live.base_url}/ui/")
    page.fill("#token-input", "not-the-token")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).not_to_be_empty()
    expect(page.locator("#shell")).to_be_hidden()

    live.admin.post("/api/jobs/enqueue", json={"topic": "echo", "payload": {"n": 1}}).raise_for_status()
    wait_for(lambda: live.admin.get("/api/jobs/stats").json()["completed"] == 1)
    sign_in(page, live)
    expect(page.locator("[data-stat=completed] .value")).to_have_text("1")
    expect(page.locator("[data-stat=success_rate] .value")).to_have_text("100.0%")
    expect(page.locator("#live-text")).to_have_text("live")
    shot(page, "overview")


def test_jobs_list_filters_job_page_attempts_and_requeue(page: Page, live: LiveServer) -> None:
    failed = live.admin.post("/api/v1/jobs", json={"task": "fail", "payload": {"why": "test"}}).json()
    live.admin.post("/api/v1/jobs", json={"task": "echo", "payload": {"x": 1}}).raise_for_status()
    wait_for(lambda: live.admin.get(f"/api/v1/jobs/{failed['id']}").json()["status"] == "failed")
    sign_in(page, live)

    page.goto(f"{live.base_url}/ui/#/jobs")
    expect(page.locator("tr[data-job-row]")).to_have_count(2)
    page.select_option("select[name=status]", "failed")
    page.click("form.toolbar button[type=submit]")
    expect(page.locator("tr[data-job-row]")).to_have_count(1)
    expect(page.locator(f"tr[data-job-row='{failed['id']}'] [data-status=failed]")).to_be_visible()

    page.click(f"tr[data-job-row='{failed['id']}'] a")
    expect(page.locator(".attempt[data-try='1']")).to_contain_text("400 failed")
    expect(page.locator(".attempt[data-try='1']")).to_contain_text("refused by test")
    expect(page.locator("pre").first).to_contain_text('"why": "test"')
    shot(page, "job")

    page.click("button:has-text('Requeue')")
    expect(page.locator(".toast")).to_contain_text("Requeued")
    wait_for(lambda: len(live.admin.get(f"/api/v1/jobs/{failed['id']}/attempts").json()["items"]) == 2)
    expect(page.locator(".attempt[data-try='2']")).to_be_visible()


def test_dead_letters_bulk_delete(page: Page, live: LiveServer) -> None:
    ids = [live.admin.post("/api/v1/jobs", json={"task": "fail"}).json()["id"] for _ in range(3)]
    wait_for(lambda: live.admin.get("/api/v1/dead-letters").json()["total"] == 3)
    sign_in(page, live)
    page.goto(f"{live.base_url}/ui/#/dead-letters")
    expect(page.locator("tr[data-job-row]")).to_have_count(3)
    page.on("dialog", lambda d: d.accept())
    page.check("thead input[type=checkbox]")
    expect(page.locator("#selected-count")).to_have_text("3 selected")
    page.click(".bulk button.danger")
    expect(page.locator(".toast")).to_contain_text("delete: 3 done")
    expect(page.locator("tr[data-job-row]")).to_have_count(0)
    for job_id in ids:
        assert live.admin.get(f"/api/v1/jobs/{job_id}").status_code == 404


def test_queues_pause_and_resume_and_live_updates(page: Page, live: LiveServer) -> None:
    live.admin.post("/api/v1/jobs", json={"task": "echo", "queue": "mail", "delay": 3600}).raise_for_status()
    sign_in(page, live)
    page.goto(f"{live.base_url}/ui/#/queues")
    row = page.locator("tr[data-queue='default/mail']")
    expect(row).to_contain_text("running")
    row.locator("button").click()
    expect(row.locator(".badge.paused")).to_be_visible()
    assert any(q["paused"] for q in live.admin.get("/api/v1/queues").json()["items"] if q["name"] == "mail")
    row.locator("button").click()
    expect(row.locator(".badge.running")).to_be_visible()

    page.goto(f"{live.base_url}/ui/#/jobs?queue=mail")
    expect(page.locator("tr[data-job-row]")).to_have_count(1)
    live.admin.post("/api/v1/jobs", json={"task": "echo", "queue": "mail", "delay": 3600}).raise_for_status()
    expect(page.locator("tr[data-job-row]")).to_have_count(2)  # arrives without a reload
    expect(page.locator("[data-status=scheduled]").first).to_be_visible()


def test_workers_schedules_and_namespaces(page: Page, live: LiveServer) -> None:
    sign_in(page, live)
    page.goto(f"{live.base_url}/ui/#/workers")
    expect(page.locator("tr[data-worker]")).to_have_count(1)
    page.goto(f"{live.base_url}/ui/#/schedules")
    expect(page.locator("h1")).to_have_text("Schedules")
    page.goto(f"{live.base_url}/ui/#/namespaces")
    page.click("button:has-text('New namespace')")
    page.fill("#ns-form input[name=name]", "game")
    page.uncheck("#ns-form input[name=auto_run]")
    page.fill("#ns-form input[name=max_attempts]", "5")
    page.click("#ns-form button[type=submit]")
    expect(page.locator("tr[data-namespace=game]")).to_contain_text("Run only")
    ns = live.admin.get("/api/v1/namespaces/game").json()
    assert ns["auto_run"] is False and ns["max_attempts"] == 5
    shot(page, "namespaces")


def test_payloads_are_shown_as_text_never_as_html(page: Page, live: LiveServer) -> None:
    evil = "<img src=x onerror=\"document.body.dataset.pwned='1'\">"
    job = live.admin.post("/api/v1/jobs", json={"task": "echo", "payload": {"html": evil}, "delay": 3600}).json()
    sign_in(page, live)
    page.goto(f"{live.base_url}/ui/#/jobs/{job['id']}")
    expect(page.locator("pre").first).to_contain_text("<img src=x")
    assert page.locator("main img").count() == 0
    assert page.evaluate("document.body.dataset.pwned") is None
