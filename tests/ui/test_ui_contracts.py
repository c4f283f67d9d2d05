"""The UI against the endpoints docs/ui-api-needs.md specifies, before the server has them.

The real server answers everything it has; the browser is given, on top, an OpenAPI document that lists the new
operations and answers for them shaped exactly as the contract says (Playwright's request routing, in the browser
only: the server, its store and every existing endpoint stay real). This pins the contract from the UI's side:
when the server implements an endpoint as written, these are the pages that light up — and a change to the
contract that the UI does not follow fails here."""

from __future__ import annotations

import json
import time
from typing import Any

from playwright.sync_api import Page, Route, expect

from tests.server.conftest import LiveServer
from tests.ui.helpers import go, sign_in

NEW_OPERATIONS: dict[str, dict[str, Any]] = {
    "/api/v1/metrics/history": {"get": {"parameters": [{"name": "range", "in": "query"}]}},
    "/api/v1/jobs/bulk": {"post": {}},
    "/api/v1/queues/{queue}": {"patch": {}},
    "/api/v1/workflows/{workflow_id}": {"get": {}},
}


def _with_new_operations(route: Route) -> None:
    doc = route.fetch().json()
    doc["paths"].update(NEW_OPERATIONS)
    route.fulfill(json=doc)


def _history(route: Route) -> None:
    now = int(time.time()) // 60 * 60
    t = [now - 60 * (59 - i) for i in range(60)]
    body = {
        "range": "1h",
        "step_seconds": 60,
        "from": "",
        "to": "",
        "series": {
            "t": t,
            "completed": [100 + i for i in range(60)],
            "failed": [i % 3 for i in range(60)],
            "retried": [0] * 60,
            "wait_p50": [0.01] * 60,
            "wait_p95": [0.2] * 60,
            "run_p50": [0.04] * 60,
            "run_p95": [0.9] * 60,
            "depth": [300 - i for i in range(60)],
            "oldest_due_age": [2.5] * 60,
        },
    }
    route.fulfill(json=body)


def test_overview_draws_the_history_charts_with_ranges(page: Page, live: LiveServer) -> None:
    asked: list[str] = []
    page.route("**/openapi.json", _with_new_operations)
    page.route("**/api/v1/metrics/history*", lambda r: (asked.append(r.request.url), _history(r)))
    sign_in(page, live)
    expect(page.locator(".chart-card canvas")).to_have_count(3)
    expect(page.locator(".needs")).to_have_count(0)
    with page.expect_request("**/api/v1/metrics/history?range=24h*"):  # (lets Playwright run the route handlers)
        page.click("button[aria-pressed]:has-text('24 hours')")
    expect(page.locator("button[aria-pressed=true]")).to_have_text("24 hours")
    expect(page.locator(".chart-card canvas")).to_have_count(3)
    assert any("range=1h" in u for u in asked)


def test_bulk_by_filter_confirms_the_servers_counts(page: Page, live: LiveServer) -> None:
    for _ in range(25):
        live.admin.post("/api/v1/jobs", json={"task": "echo", "delay": 3600}).raise_for_status()
    bodies: list[dict[str, Any]] = []

    def bulk(route: Route) -> None:
        body = json.loads(route.request.post_data or "{}")
        bodies.append(body)
        route.fulfill(json={"matched": 25, "applied": 25, "skipped": {}, "dry_run": body["dry_run"]})

    page.route("**/openapi.json", _with_new_operations)
    page.route("**/api/v1/metrics/history*", _history)
    page.route("**/api/v1/jobs/bulk", bulk)
    sign_in(page, live)
    go(page, live, "jobs?status=pending")
    page.check("thead input[type=checkbox]")
    page.click("button[data-select-all-matching]")
    expect(page.locator("#selected-count")).to_have_text("All 25 matching selected")
    page.click("button[data-bulk=cancel]")
    dialog = page.locator("dialog.confirm")
    expect(dialog.locator("h2")).to_have_text("Cancel 25 jobs?")
    dialog.locator("button[type=submit]").click()
    expect(page.locator(".toast")).to_contain_text("25 jobs cancelled")
    assert bodies[0] == {"action": "cancel", "dry_run": True, "filter": {"status": "pending"}}
    assert bodies[1] == {"action": "cancel", "dry_run": False, "expected": 25, "filter": {"status": "pending"}}


def test_job_page_shows_progress_and_the_workflow(page: Page, live: LiveServer) -> None:
    job = live.admin.post("/api/v1/jobs", json={"task": "echo", "delay": 3600}).json()

    def with_progress(route: Route) -> None:
        answer = route.fetch().json()
        answer.update(progress={"fraction": 0.4, "message": "resizing"}, workflow_id="wf-1", depends_on=[])
        route.fulfill(json=answer)

    def workflow(route: Route) -> None:
        first = {**job, "id": job["id"], "depends_on": [], "status": "completed"}
        second = {**job, "id": "0190aaaa-0000-7000-8000-00000000beef", "depends_on": [job["id"]]}
        route.fulfill(json={"id": "wf-1", "name": "thumbnails", "status": "processing", "jobs": [first, second]})

    page.route("**/openapi.json", _with_new_operations)
    page.route("**/api/v1/metrics/history*", _history)
    page.route(f"**/api/v1/jobs/{job['id']}", with_progress)
    page.route("**/api/v1/workflows/wf-1", workflow)
    sign_in(page, live)
    go(page, live, f"jobs/{job['id']}")
    expect(page.locator(".progress")).to_contain_text("40% · resizing")
    page.click("[data-workflow-link]")
    expect(page.locator(".wf-layer")).to_have_count(2)
    expect(page.locator(".wf-layer").nth(1)).to_contain_text(f"after …{job['id'][-8:]}")
