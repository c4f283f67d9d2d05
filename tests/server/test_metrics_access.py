"""/metrics: an optional metrics token (and nothing else reachable with it), and label values that cannot grow with
what callers send — junk task names, queues and namespaces are all counted under one `other` value."""

from __future__ import annotations

import json
import re

import httpx

from tests.server.conftest import ADMIN_TOKEN, StartServer, wait_for

METRICS_TOKEN = "metrics-token-" + "m" * 30


def series(text: str, metric: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(metric + "{")]


def test_metrics_token_guards_metrics_and_nothing_else(start_server: StartServer, sqlite_url: str) -> None:
    live = start_server(sqlite_url, metrics_token=METRICS_TOKEN)
    url = live.base_url + "/metrics"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert live.client(live.user_token("alice")).get("/metrics").status_code == 403
    scraped = live.client(METRICS_TOKEN).get("/metrics")
    assert scraped.status_code == 200 and "conveyor_store_up 1.0" in scraped.text
    assert live.client(ADMIN_TOKEN).get("/metrics").status_code == 200
    # the metrics token is no admin token, no user token
    scraper = live.client(METRICS_TOKEN)
    assert scraper.get("/api/v1/stats").status_code == 401
    assert scraper.get("/api/jobs").status_code == 401
    assert scraper.get("/job-queue/").status_code == 401


def test_without_a_metrics_token_metrics_are_public(start_server: StartServer, sqlite_url: str) -> None:
    live = start_server(sqlite_url)
    assert httpx.get(live.base_url + "/metrics").status_code == 200


def test_two_hundred_junk_task_names_make_a_bounded_number_of_series(
    start_server: StartServer, sqlite_url: str
) -> None:
    """200 distinct 200-character task names pushed through the GS2 API (and junk queues and namespaces through the
    other APIs) show up as one `other` label, counted right, instead of 200 new series each."""
    live = start_server(sqlite_url, run_worker=True)
    admin = live.admin
    assert admin.post("/job-queue/", json={"name": "game"}).status_code == 200
    names = [f"junk-{i:03d}-" + "x" * 191 for i in range(200)]
    for start in range(0, 200, 10):
        entries = [{"scriptId": name, "args": "{}"} for name in names[start : start + 10]]
        r = admin.post("/job-queue/game/user/alice/job", content=json.dumps({"jobs": entries}))
        assert r.status_code == 200, r.text
    for i in range(30):  # junk queues and namespaces without a record, through the admin APIs
        admin.post("/api/jobs/enqueue", json={"topic": "echo", "queue": f"q-{i}", "delay": 3600}).raise_for_status()
        admin.post("/api/v1/jobs", json={"task": "echo", "namespace": f"ns-{i}", "delay": 3600}).raise_for_status()
    admin.post("/api/v1/jobs", json={"task": "echo"}).raise_for_status()
    wait_for(lambda: admin.get("/api/v1/stats", params={"task": "echo"}).json()["completed"] >= 1)

    text = httpx.get(live.base_url + "/metrics").text
    enqueued = series(text, "conveyor_jobs_enqueued_total")
    assert 'conveyor_jobs_enqueued_total{queue="default",task="other"} 200.0' in enqueued
    assert 'conveyor_jobs_enqueued_total{queue="other",task="echo"} 30.0' in enqueued
    assert 'conveyor_jobs_enqueued_total{queue="default",task="echo"} 31.0' in enqueued
    assert len(enqueued) <= 4, enqueued
    depth = series(text, "conveyor_queue_jobs")
    namespaces = {re.search(r'namespace="([^"]*)"', line).group(1) for line in depth}  # type: ignore[union-attr]
    queues = {re.search(r'queue="([^"]*)"', line).group(1) for line in depth}  # type: ignore[union-attr]
    assert namespaces <= {"default", "game", "other"} and "other" in namespaces, namespaces
    assert queues <= {"default", "other"}, queues
    assert 'conveyor_queue_jobs{namespace="game",queue="default",status="pending"} 200.0' in depth
    assert 'conveyor_queue_jobs{namespace="other",queue="default",status="scheduled"} 30.0' in depth
    assert not any("junk-" in line for line in text.splitlines())
    assert len(text.splitlines()) < 400, len(text.splitlines())
