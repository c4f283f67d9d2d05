"""The admin UI's pages and actions in a real browser (Debian's Chromium driven by Playwright) against a real server
and worker. Where the server's API lacks what a feature needs (docs/ui-api-needs.md), the tests check that the page
says so clearly and does the part it can."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.server.conftest import LiveServer, wait_for
from tests.ui.conftest import Problems
from tests.ui.helpers import go, shot, sign_in


def _enqueue(live: LiveServer, **job: object) -> str:
    answer = live.admin.post("/api/v1/jobs", json=job)
    answer.raise_for_status()
    return str(answer.json()["id"])


def _status(live: LiveServer, job_id: str) -> str:
    return str(live.admin.get(f"/api/v1/jobs/{job_id}").json()["status"])


def test_sign_in_refuses_wrong_and_user_tokens(page: Page, live: LiveServer, problems: Problems) -> None:
    problems.allowed.append("401")  # the browser logs the refused sign-in request
    page.goto(f"{live.base_url}/ui/")
    expect(page).to_have_title("Sign in · Conveyor")
    page.fill("#token-input", "not-the-token")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("The token was not accepted.")
    user_token = live.admin.post("/api/v1/tokens", json={"user_id": "alice"}).json()["token"]
    page.fill("#token-input", user_token)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("user token")
    expect(page.locator("#shell")).to_have_count(0)


def test_overview_cards_separators_links_and_paused_queues(page: Page, live: LiveServer) -> None:
    sign_in(page, live)
    expect(page).to_have_title("Overview · Conveyor")
    expect(page.locator("[data-stat=success_rate] .value")).to_have_text("no jobs yet")  # not "0.0 %"

    batch = [{"task": "echo", "queue": "mail", "delay": 3600} for _ in range(1000)]
    live.admin.post("/api/v1/jobs/batch", json=batch).raise_for_status()
    live.admin.post("/api/v1/jobs/batch", json=batch[:234]).raise_for_status()
    done = _enqueue(live, task="echo", payload={"n": 1})
    wait_for(lambda: _status(live, done) == "completed")
    live.admin.post("/api/v1/queues/mail/pause").raise_for_status()

    expect(page.locator("[data-stat=scheduled] .value")).to_have_text("1,234")  # live, with separators
    expect(page.locator("[data-stat=total] .value")).to_have_text("1,235")
    expect(page.locator("[data-stat=success_rate] .value")).to_have_text("100.0%")
    banner = page.locator("[data-paused-banner]")
    expect(banner).to_contain_text("1 queue paused")
    expect(banner).to_contain_text("default / mail")
    expect(page.locator("tr[data-queue='default/mail'] .badge.paused")).to_be_visible()

    # the history charts need the server's metrics history: said plainly, and the sampled charts draw with axes
    expect(page.locator(".needs[data-needs*='metrics history']")).to_be_visible()
    expect(page.locator("[data-chart=throughput] canvas")).to_be_visible(timeout=20_000)
    expect(page.locator("[data-chart=throughput] .u-axis").first).to_be_attached()
    shot(page, "overview")

    page.click("[data-stat=failed]")
    expect(page).to_have_url(re.compile(r"#/dead-letters$"))
    go(page, live, "overview")
    page.click("[data-stat=completed]")
    expect(page).to_have_url(re.compile(r"#/jobs\?status=completed$"))
    expect(page.locator("tr[data-job-row]")).to_have_count(1)


def test_jobs_filters_drop_downs_and_job_page_breadcrumb(page: Page, live: LiveServer) -> None:
    live.admin.post("/api/v1/namespaces", json={"name": "game"}).raise_for_status()
    failed = _enqueue(live, task="fail", payload={"why": "test"})
    _enqueue(live, task="echo", payload={"x": 1})
    _enqueue(live, task="echo", namespace="game", queue="mail", delay=3600)
    wait_for(lambda: _status(live, failed) == "failed")
    sign_in(page, live)

    go(page, live, "jobs")
    expect(page.locator("tr[data-job-row]")).to_have_count(3)
    expect(page.locator("select[name=namespace] option")).to_have_text(["All", "default", "game"])
    expect(page.locator("#task-options option[value=fail]")).to_be_attached()  # tasks come from the live workers
    page.select_option("select[name=namespace]", "game")
    page.click("form.filters button[type=submit]")
    expect(page).to_have_url(re.compile(r"namespace=game"))
    expect(page.locator("tr[data-job-row]")).to_have_count(1)
    expect(page.locator("tr[data-job-row] [data-status=scheduled]")).to_be_visible()

    page.click("form.filters button:has-text('Clear')")
    page.select_option("select[name=status]", "failed")
    page.fill("input[name=task]", "fail")
    page.click("form.filters button[type=submit]")
    expect(page.locator("tr[data-job-row]")).to_have_count(1)
    row = page.locator(f"tr[data-job-row='{failed}']")
    id_link = row.locator("a.id")
    expect(id_link).to_have_text(f"…{failed[-8:]}")
    box = id_link.bounding_box()
    assert box is not None and box["height"] < 24, "the short id must stay on one line"
    expect(row.locator("time").first).to_have_attribute("datetime", re.compile(r"^\d{4}-"))

    id_link.click()
    expect(page).to_have_title(re.compile(r"^Job …"))
    crumb = page.locator("[data-breadcrumb]")
    expect(crumb).to_contain_text("status: failed")
    expect(page.locator(".attempt[data-try='1']")).to_contain_text("400 failed")
    expect(page.locator("pre").first).to_contain_text('"why": "test"')
    shot(page, "job")
    crumb.click()
    expect(page).to_have_url(re.compile(r"#/jobs\?.*status=failed"))
    expect(page.locator("tr[data-job-row]")).to_have_count(1)

    # searching a whole id opens the job; its last characters (as the list shows them) find it too
    page.fill("input[name=search]", failed)
    page.click("form.filters button[type=submit]")
    expect(page).to_have_url(re.compile(f"#/jobs/{failed}$"))
    go(page, live, "jobs")
    expect(page.locator("[data-needs]")).to_have_count(0)  # the server has every search, filter and sort
    page.fill("input[name=search]", failed[-8:])
    page.click("form.filters button[type=submit]")
    expect(page).to_have_url(re.compile(f"id={failed[-8:]}"))
    expect(page.locator("tr[data-job-row]")).to_have_count(1)
    expect(page.locator(f"tr[data-job-row='{failed}']")).to_be_visible()
    # payload text, partial task names, the "retrying" status, sorting
    go(page, live, "jobs")
    page.select_option("select[name=mode]", "q")
    page.fill("input[name=search]", "TEST")
    page.click("form.filters button[type=submit]")
    expect(page.locator("tr[data-job-row]")).to_have_count(1)
    expect(page.locator(f"tr[data-job-row='{failed}']")).to_be_visible()
    go(page, live, "jobs")
    page.fill("input[name=task]", "ech")
    page.click("form.filters button[type=submit]")
    expect(page).to_have_url(re.compile(r"task_contains=ech"))
    expect(page.locator("tr[data-job-row]")).to_have_count(2)
    go(page, live, "jobs")
    page.select_option("select[name=status]", "retrying")
    page.click("form.filters button[type=submit]")
    expect(page).to_have_url(re.compile(r"status=retrying"))
    expect(page.locator("tbody")).to_contain_text("No jobs match this filter.")
    go(page, live, "jobs")
    page.click("th button.sort:has-text('Tries')")
    expect(page).to_have_url(re.compile(r"sort=-attempts"))
    expect(page.locator("th[aria-sort=descending]")).to_contain_text("Tries")
    expect(page.locator("tr[data-job-row]").last.locator("td.num")).to_have_text("0/3")  # the scheduled job: no try


def test_jobs_page_by_cursor_never_skip_or_repeat(page: Page, live: LiveServer) -> None:
    """Pages follow the server's keyset cursor: jobs that arrive while the user pages never push a job onto the
    next page twice, nor one off it (issue 11 item 2)."""
    batch = [{"task": "echo", "payload": {"n": i}, "delay": 3600} for i in range(25)]
    live.admin.post("/api/v1/jobs/batch", json=batch).raise_for_status()
    sign_in(page, live)
    go(page, live, "jobs?limit=10")
    rows = page.locator("tr[data-job-row]")
    expect(rows).to_have_count(10)
    expect(page.locator(".pager")).to_contain_text("Showing 1–10 of 25")
    seen = [rows.nth(i).get_attribute("data-job-row") for i in range(10)]
    page.click("button[data-next-page]")
    page.mouse.move(0, 0)  # not over the table, where the row order freezes
    expect(page).to_have_url(re.compile(r"cursor=.*page=2|page=2.*cursor="))
    expect(page.locator(".pager")).to_contain_text("Showing 11–20 of 25")
    expect(rows.first).not_to_have_attribute("data-job-row", str(seen[0]))
    expect(rows).to_have_count(10)
    second = [rows.nth(i).get_attribute("data-job-row") for i in range(10)]
    for _ in range(3):  # newer jobs arrive between pages: with offsets they would shift the next page
        _enqueue(live, task="echo", delay=3600)
    expect(page.locator(".pager")).to_contain_text("of 28")  # the live refresh sees them; page 2 stays page 2
    expect(rows.first).to_have_attribute("data-job-row", str(second[0]))
    page.click("button[data-next-page]")
    page.mouse.move(0, 0)
    expect(page.locator(".pager")).to_contain_text("Showing 21–25 of 28")
    expect(rows).to_have_count(5)
    third = [rows.nth(i).get_attribute("data-job-row") for i in range(5)]
    expect(page.locator("button[data-next-page]")).to_be_disabled()
    listed = seen + second + third
    assert len(set(listed)) == 25 == len(listed), "a job was listed twice or left out"
    page.click(".pager button:has-text('Previous')")
    page.mouse.move(0, 0)
    expect(page.locator(".pager")).to_contain_text("Showing 11–20 of 28")
    expect(rows.first).to_have_attribute("data-job-row", str(second[0]))


def test_tries_stay_consistent_after_a_requeue(page: Page, live: LiveServer) -> None:
    failed = _enqueue(live, task="fail", payload={"why": "again"})
    wait_for(lambda: _status(live, failed) == "failed")
    sign_in(page, live)
    go(page, live, f"jobs/{failed}")
    expect(page.locator("[data-tries]")).to_have_text("1 of 1")
    page.click("button[data-action=requeue]")
    expect(page.locator(".toast")).to_contain_text("Job requeued")
    wait_for(lambda: len(live.admin.get(f"/api/v1/jobs/{failed}/attempts").json()["items"]) == 2)
    wait_for(lambda: _status(live, failed) == "failed")
    # the job counts 1 try toward its limit since the requeue; the try numbers go on: the page says both
    expect(page.locator("[data-tries]")).to_have_text("1 of 1 since the last requeue · 2 in all")
    expect(page.locator("h2:has-text('Tries (1 since the last requeue, 2 in all)')")).to_be_visible()
    expect(page.locator(".attempt[data-try='2']:not(.earlier)")).to_be_visible()
    expect(page.locator("[data-earlier] ~ .attempt.earlier[data-try='1']")).to_be_visible()


def test_run_now_only_where_it_means_something(page: Page, live: LiveServer) -> None:
    live.admin.post("/api/v1/queues/held/pause").raise_for_status()
    due = _enqueue(live, task="echo", queue="held")  # pending and due: run now would change nothing
    later = _enqueue(live, task="echo", queue="held", delay=3600)
    done = _enqueue(live, task="echo")
    wait_for(lambda: _status(live, done) == "completed")
    sign_in(page, live)
    go(page, live, "jobs")
    expect(page.locator(f"tr[data-job-row='{later}'] button[data-action=run_now]")).to_be_visible()
    expect(page.locator(f"tr[data-job-row='{due}'] button[data-action=run_now]")).to_have_count(0)
    expect(page.locator(f"tr[data-job-row='{due}'] button[data-action=cancel]")).to_be_visible()
    expect(page.locator(f"tr[data-job-row='{done}'] td.actions button")).to_have_count(0)
    page.click(f"tr[data-job-row='{later}'] button[data-action=run_now]")
    expect(page.locator(".toast")).to_contain_text("Job made due now")
    expect(page.locator(f"tr[data-job-row='{later}'] button[data-action=run_now]")).to_have_count(0)


def test_bulk_action_names_the_count_and_reports_what_the_rule_left(page: Page, live: LiveServer) -> None:
    failed = [_enqueue(live, task="fail") for _ in range(2)]
    scheduled = [_enqueue(live, task="echo", delay=3600) for _ in range(3)]
    wait_for(lambda: all(_status(live, j) == "failed" for j in failed))
    sign_in(page, live)
    go(page, live, "jobs")
    expect(page.locator("tr[data-job-row]")).to_have_count(5)
    page.check("thead input[type=checkbox]")
    expect(page.locator("#selected-count")).to_have_text("5 selected")
    expect(page.locator(f"tr[data-job-row='{failed[0]}'] input[type=checkbox]")).to_have_attribute(
        "aria-label", f"Select job {failed[0]}"
    )
    page.click("button[data-bulk=requeue]")
    dialog = page.locator("dialog.confirm")
    expect(dialog.locator("h2")).to_have_text("Requeue 2 jobs?")
    expect(dialog).to_contain_text("2 of the 5 selected jobs will be requeued; 3 cannot be")
    dialog.locator("button[type=submit]").click()
    expect(page.locator(".toast")).to_contain_text("2 jobs requeued; 3 left as they were")
    for job_id in failed:  # requeued, run again, failed again
        wait_for(lambda job_id=job_id: len(live.admin.get(f"/api/v1/jobs/{job_id}/attempts").json()["items"]) == 2)
        expect(page.locator(f"tr[data-job-row='{job_id}'] [data-status=failed]")).to_be_visible()
    assert all(_status(live, j) == "pending" for j in scheduled)

    page.check("thead input[type=checkbox]")
    page.click("button[data-bulk=cancel]")
    expect(dialog.locator("h2")).to_have_text("Cancel 3 jobs?")
    dialog.locator("button:has-text('Cancel'):not([type=submit])").click()  # dismissed: nothing happens
    expect(dialog).to_be_hidden()
    assert all(_status(live, j) == "pending" for j in scheduled)


def test_dead_letters_bulk_delete_error_class_and_retry_all_needs_the_server(page: Page, live: LiveServer) -> None:
    ids = [_enqueue(live, task="boom", payload=n) for n in range(3)]
    wait_for(lambda: live.admin.get("/api/v1/dead-letters").json()["total"] == 3)
    sign_in(page, live)
    go(page, live, "dead-letters")
    expect(page.locator("tr[data-job-row]")).to_have_count(3)
    expect(page.locator("tr[data-job-row] .error-class").first).to_have_text("ValueError")
    expect(page.locator(".needs[data-needs*='bulk']")).to_contain_text("Retry all")
    page.check("thead input[type=checkbox]")
    page.click("button[data-bulk=delete]")
    dialog = page.locator("dialog.confirm")
    expect(dialog.locator("h2")).to_have_text("Delete 3 jobs?")
    expect(dialog).to_contain_text("cannot be undone")
    dialog.locator("button[type=submit]").click()
    expect(page.locator(".toast")).to_contain_text("3 jobs deleted")
    expect(page.locator("tr[data-job-row]")).to_have_count(0)
    expect(page.locator(".empty")).to_contain_text("No dead letters")
    for job_id in ids:
        assert live.admin.get(f"/api/v1/jobs/{job_id}").status_code == 404


def test_queues_pause_resume_settings_and_what_needs_the_server(page: Page, live: LiveServer) -> None:
    _enqueue(live, task="echo", queue="mail", delay=3600)
    sign_in(page, live)
    go(page, live, "queues")
    row = page.locator("tr[data-queue='default/mail']")
    expect(row).to_contain_text("running")
    row.locator("button[data-toggle-pause]").click()
    expect(row.locator(".badge.paused")).to_be_visible()
    assert any(q["paused"] for q in live.admin.get("/api/v1/queues").json()["items"] if q["name"] == "mail")
    row.locator("button[data-toggle-pause]").click()
    expect(row.locator(".badge.running")).to_be_visible()

    expect(row.locator("[data-latency]")).to_have_text("n/a")
    expect(page.locator("[data-needs=latency]")).to_be_visible()
    row.locator("button:has-text('Settings')").click()
    settings = page.locator("#queue-settings")  # PATCH /api/v1/queues/{queue} is served (issue 13): editable
    expect(settings.locator(".needs")).to_have_count(0)
    expect(settings.locator("[data-flow-due]")).to_have_text("0")  # GET /api/v1/queues/{queue}: the live limits
    settings.locator("input[name=concurrency]").fill("7")
    settings.locator("input[name=key_concurrency]").fill("2")
    settings.locator("input[name=rate_limit]").fill("3/10s")
    settings.locator("input[name=rate_burst]").fill("2")
    settings.locator("input[name=rate_key]").fill("payload.account")
    settings.locator("button[type=submit]").click()
    expect(page.locator(".toast", has_text="Queue mail saved")).to_be_visible()
    mail = next(q for q in live.admin.get("/api/v1/queues").json()["items"] if q["name"] == "mail")
    assert mail["concurrency"] == 7 and mail["rate_limit"]["limit"] == 3 and mail["rate_limit"]["period"] == 10
    assert mail["rate_limit"]["burst"] == 2 and mail["rate_key"] == "payload.account" and mail["key_concurrency"] == 2
    expect(row).to_contain_text("3/10s (burst 2) per payload.account")
    row.locator("button:has-text('Settings')").click()
    expect(settings.locator("[data-flow-keys]")).to_have_text("0")
    expect(settings.locator("input[name=rate_key]")).to_have_value("payload.account")
    settings.locator("button:has-text('Close')").click()
    row.locator("button[data-clear]").click()
    expect(page.locator(".toast.error")).to_contain_text("bulk endpoint")

    row.locator("a", has_text="mail").click()
    expect(page).to_have_url(re.compile(r"#/jobs\?namespace=default&queue=mail"))
    expect(page.locator("tr[data-job-row]")).to_have_count(1)


def test_workers_show_each_running_job_with_its_task_and_runtime(page: Page, live: LiveServer) -> None:
    job = _enqueue(live, task="slow", payload={"seconds": 30})
    wait_for(lambda: _status(live, job) == "processing")
    sign_in(page, live)
    go(page, live, "workers")
    expect(page.locator("tr[data-worker]")).to_have_count(1)
    running = page.locator(f"[data-running='{job}']")
    expect(running).to_contain_text("slow")
    first = running.locator("[data-runtime]").inner_text()
    expect(running.locator("[data-runtime]")).not_to_have_text(first, timeout=5000)  # it ticks
    assert re.match(r"^\d+(\.\d+)? s$", running.locator("[data-runtime]").inner_text())
    live.admin.post(f"/api/v1/jobs/{job}/cancel").raise_for_status()


def test_schedules_trigger_now_enqueues_the_schedules_job(page: Page, live: LiveServer) -> None:
    sign_in(page, live)
    go(page, live, "schedules")
    row = page.locator("tr[data-schedule=yearly-report]")
    expect(row).to_contain_text("0 0 1 1 *")
    expect(row).to_contain_text("in code")
    expect(row.locator("button[data-delete]")).to_have_count(0)  # declared in code: read-only here
    expect(page.locator(".needs")).to_have_count(0)  # the server has history and runtime management
    row.locator("button[data-trigger]").click()
    dialog = page.locator("dialog.confirm")
    expect(dialog).to_contain_text("recorded in the schedule's history")
    dialog.locator("button[type=submit]").click()
    expect(page.locator(".toast")).to_contain_text("yearly-report triggered")
    jobs = live.admin.get("/api/v1/jobs", params={"task": "echo"}).json()["items"]
    assert [j["payload"] for j in jobs] == [{"report": "yearly"}]
    row.locator("button:has-text('History')").click()
    history = page.locator("[data-history=yearly-report]")
    expect(history.locator("[data-run=manual]")).to_have_count(1)
    expect(history.locator("[data-run=manual] a")).to_have_count(1)  # a link to the job


def test_schedules_created_paused_edited_and_deleted_in_the_browser(
    page: Page, live: LiveServer, problems: Problems
) -> None:
    problems.allowed.extend(["400", "409"])  # the browser logs the refused requests the test makes on purpose
    sign_in(page, live)
    go(page, live, "schedules")
    page.click("button:has-text('New schedule')")
    form = page.locator("#schedule-form")
    form.locator("input[name=name]").fill("reset-berlin")
    form.locator("input[name=spec]").fill("30 2 * * *")
    form.locator("input[name=timezone]").fill("Mars/Base")
    form.locator("input[name=task]").fill("echo")
    form.locator("textarea[name=payload]").fill('{"scope": "daily"}')
    form.locator("select[name=backfill]").select_option("latest")
    form.locator("button[type=submit]").click()
    expect(page.locator("#schedule-error")).to_contain_text("Time zone: unknown timezone 'Mars/Base'")
    form.locator("input[name=timezone]").fill("Europe/Berlin")
    form.locator("button[type=submit]").click()
    row = page.locator("tr[data-schedule=reset-berlin]")
    expect(row).to_contain_text("Europe/Berlin")
    expect(row).to_contain_text("runtime")
    made = live.admin.get("/api/v1/schedules/reset-berlin").json()
    assert (made["payload"], made["backfill"], made["source"]) == ({"scope": "daily"}, "latest", "runtime")

    page.click("button:has-text('New schedule')")  # a code schedule's name is refused in the form's words
    page.fill("#schedule-form input[name=name]", "yearly-report")
    page.fill("#schedule-form input[name=spec]", "@daily")
    page.fill("#schedule-form input[name=task]", "echo")
    page.click("#schedule-form button[type=submit]")
    expect(page.locator("#schedule-error")).to_contain_text("declared in the app's code")
    page.click("#schedule-form button:has-text('Close')")

    row.locator("button[data-pause]").click()
    expect(row).to_contain_text("paused")
    assert live.admin.get("/api/v1/schedules/reset-berlin").json()["paused"] is True
    row.locator("button[data-pause]").click()
    expect(row.locator("button[data-pause]")).to_have_text("Pause")

    row.locator("button[data-edit]").click()
    page.fill("#schedule-form input[name=spec]", "0 3 * * *")
    page.click("#schedule-form button[type=submit]")
    expect(row).to_contain_text("0 3 * * *")
    assert live.admin.get("/api/v1/schedules/reset-berlin").json()["payload"] == {"scope": "daily"}

    row.locator("button[data-delete]").click()
    page.locator("dialog.confirm button[type=submit]").click()
    expect(page.locator("tr[data-schedule=reset-berlin]")).to_have_count(0)
    assert live.admin.get("/api/v1/schedules/reset-berlin").status_code == 404
    shot(page, "schedules")


def test_namespaces_counts_create_and_errors_in_the_uis_words(page: Page, live: LiveServer, problems: Problems) -> None:
    problems.allowed.append("409")  # the browser logs the refused creation of an existing namespace
    live.admin.post("/api/v1/namespaces", json={"name": "game"}).raise_for_status()
    for _ in range(3):
        _enqueue(live, task="echo", namespace="game", delay=3600)
    sign_in(page, live)
    go(page, live, "namespaces")
    expect(page.locator("tr[data-namespace=game] [data-count]")).to_have_attribute("data-count", "3")
    expect(page.locator("tr[data-namespace=game]")).to_contain_text("3 pending")

    page.click("button:has-text('New namespace')")
    page.fill("#ns-form input[name=name]", "arena")
    page.uncheck("#ns-form input[name=auto_run]")
    page.fill("#ns-form input[name=max_attempts]", "5")
    page.click("#ns-form button[type=submit]")
    expect(page.locator("tr[data-namespace=arena]")).to_contain_text("Run only")
    ns = live.admin.get("/api/v1/namespaces/arena").json()
    assert ns["auto_run"] is False and ns["max_attempts"] == 5

    page.click("button:has-text('New namespace')")
    page.fill("#ns-form input[name=name]", "game")
    page.click("#ns-form button[type=submit]")
    error = page.locator("#ns-error")
    expect(error).to_have_text("A namespace named “game” already exists: edit it in the list below.")
    expect(page.locator("#ns-error")).not_to_contain_text("PATCH")
    shot(page, "namespaces")

    page.locator("tr[data-namespace=game] button:has-text('Delete')").click()
    dialog = page.locator("dialog.confirm")
    expect(dialog.locator("button[type=submit]")).to_have_text("Delete it and 3 jobs")
    dialog.locator("button[type=submit]").click()
    expect(page.locator("tr[data-namespace=game]")).to_have_count(0)


def test_workflow_page_says_it_needs_the_server(page: Page, live: LiveServer) -> None:
    sign_in(page, live)
    go(page, live, "workflows/wf-1", loaded=False)
    expect(page.locator(".needs")).to_contain_text("GET /api/v1/workflows/{workflow_id}")


def test_payloads_are_shown_as_text_never_as_html(page: Page, live: LiveServer) -> None:
    evil = "<img src=x onerror=\"document.body.dataset.pwned='1'\">"
    job = _enqueue(live, task="echo", payload={"html": evil}, delay=3600)
    sign_in(page, live)
    go(page, live, f"jobs/{job}")
    expect(page.locator("pre").first).to_contain_text("<img src=x")
    assert page.locator("main img").count() == 0
    assert page.evaluate("document.body.dataset.pwned") is None
