"""Live updates that never redraw under the user: rows keep their DOM nodes (updated in place), the row order is
frozen while the pointer is over the table, an opened traceback and a text selection survive refreshes, and
"Pause live" stops them."""

from __future__ import annotations

import time

from playwright.sync_api import Page, expect

from tests.server.conftest import LiveServer, wait_for
from tests.ui.helpers import go, sign_in

REFRESHES = 3.0  # seconds: more than one refresh (every 2 s) has happened


def _enqueue(live: LiveServer, **job: object) -> str:
    answer = live.admin.post("/api/v1/jobs", json=job)
    answer.raise_for_status()
    return str(answer.json()["id"])


def _row_ids(page: Page) -> list[str]:
    return list(page.eval_on_selector_all("tr[data-job-row]", "rows => rows.map(r => r.dataset.jobRow)"))


def test_rows_update_in_place_and_do_not_move_under_the_pointer(page: Page, live: LiveServer) -> None:
    ids = [_enqueue(live, task="echo", payload={"n": n}, delay=3600) for n in range(4)]
    sign_in(page, live)
    go(page, live, "jobs")
    expect(page.locator("tr[data-job-row]")).to_have_count(4)
    before = _row_ids(page)
    assert before == ids[::-1]  # newest first
    page.eval_on_selector(f"tr[data-job-row='{ids[1]}']", "row => { row.dataset.marker = 'same-node'; }")

    page.hover(f"tr[data-job-row='{ids[1]}'] td.task")  # the pointer rests on a row, as before a click
    expect(page.locator("table.jobs")).to_have_attribute("data-frozen", "1")
    newest = _enqueue(live, task="echo", payload={"n": "new"}, delay=3600)
    live.admin.post(f"/api/v1/jobs/{ids[1]}/run-now").raise_for_status()  # this row's job changes status
    expect(page.locator("[data-waiting]")).to_have_text("1 new job will show when the pointer leaves the table.")
    expect(page.locator(f"tr[data-job-row='{ids[1]}'] [data-status=completed]")).to_be_visible()
    assert _row_ids(page) == before, "rows moved under the pointer"
    assert page.eval_on_selector(f"tr[data-job-row='{ids[1]}']", "row => row.dataset.marker") == "same-node"

    page.mouse.move(5, 5)  # away from the table: the new job shows at the top
    expect(page.locator("tr[data-job-row]").first).to_have_attribute("data-job-row", newest)
    assert page.eval_on_selector(f"tr[data-job-row='{ids[1]}']", "row => row.dataset.marker") == "same-node"


def test_a_row_that_leaves_the_view_stays_in_place_while_hovered(page: Page, live: LiveServer) -> None:
    ids = [_enqueue(live, task="echo", delay=3600) for _ in range(3)]
    sign_in(page, live, "#/jobs?status=pending")
    expect(page.locator("tr[data-job-row]")).to_have_count(3)
    page.hover(f"tr[data-job-row='{ids[0]}'] td.task")
    live.admin.post(f"/api/v1/jobs/{ids[1]}/cancel").raise_for_status()  # no longer pending
    expect(page.locator(f"tr[data-job-row='{ids[1]}'].gone")).to_contain_text("no longer in this view")
    assert _row_ids(page) == ids[::-1]
    page.mouse.move(5, 5)
    expect(page.locator("tr[data-job-row]")).to_have_count(2)


def test_an_opened_traceback_and_a_selection_survive_refreshes(page: Page, live: LiveServer) -> None:
    job = _enqueue(live, task="boom", payload={"user": 7})
    wait_for(lambda: live.admin.get(f"/api/v1/jobs/{job}").json()["status"] == "failed")
    sign_in(page, live)
    go(page, live, f"jobs/{job}")
    details = page.locator(".attempt[data-try='1'] details.traceback")
    details.locator("summary").click()
    expect(details).to_have_attribute("open", "")
    expect(details.locator("pre")).to_contain_text("ValueError")
    page.evaluate(
        """() => {
            const pre = document.querySelector('pre.json');
            const range = document.createRange();
            range.selectNodeContents(pre);
            getSelection().removeAllRanges();
            getSelection().addRange(range);
        }"""
    )
    selected = page.evaluate("getSelection().toString()")
    assert '"user": 7' in selected
    live.admin.post("/api/v1/jobs", json={"task": "echo"}).raise_for_status()  # an event: a refresh at once
    time.sleep(REFRESHES)
    expect(details).to_have_attribute("open", "")
    assert page.evaluate("getSelection().toString()") == selected


def test_pause_live_stops_refreshes_until_resumed(page: Page, live: LiveServer) -> None:
    _enqueue(live, task="echo", delay=3600)
    sign_in(page, live)
    go(page, live, "jobs")
    expect(page.locator("tr[data-job-row]")).to_have_count(1)
    page.click("#pause-live")
    expect(page.locator("#pause-live")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#live-text")).to_have_text("paused")
    _enqueue(live, task="echo", delay=3600)
    time.sleep(REFRESHES)
    expect(page.locator("tr[data-job-row]")).to_have_count(1)
    page.click("#pause-live")
    expect(page.locator("#live-text")).to_have_text("live")
    expect(page.locator("tr[data-job-row]")).to_have_count(2)
