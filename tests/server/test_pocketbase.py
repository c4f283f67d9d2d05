"""The PocketBase job API over HTTP, answer by answer and field by field (seed-systems.md §5), on every store."""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.server.conftest import LiveServer, StartServer, wait_for

PB_FIELDS = {"id", "topic", "payload", "status", "run_at", "retries", "max_retries", "created", "updated"}
RFC3339_SECONDS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def test_enqueue_answers_the_pocketbase_job(server: LiveServer) -> None:
    r = server.admin.post(
        "/api/jobs/enqueue",
        json={"topic": "send_email", "payload": {"to": "user@example.com", "subject": "Hello"}, "max_retries": 5},
    )
    assert r.status_code == 200
    job = r.json()
    assert set(job) >= PB_FIELDS
    assert uuid.UUID(job["id"]).version == 7
    assert job["topic"] == "send_email"
    assert job["payload"] == {"to": "user@example.com", "subject": "Hello"}
    assert job["status"] == "pending"
    assert job["retries"] == 0
    assert job["max_retries"] == 5
    for key in ("run_at", "created", "updated"):
        assert RFC3339_SECONDS.match(job[key]), job[key]
    assert "locked_until" not in job  # omitempty
    assert "last_error" not in job
    # Conveyor's extra fields
    assert job["namespace"] == "default" and job["queue"] == "default" and job["priority"] == 0


def test_enqueue_defaults_and_run_at(server: LiveServer) -> None:
    run_at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    r = server.admin.post(
        "/api/jobs/enqueue", json={"topic": "later", "run_at": run_at.isoformat().replace("+00:00", "Z")}
    )
    assert r.status_code == 200
    job = r.json()
    assert job["payload"] == {}  # PocketBase's default payload
    assert job["max_retries"] == 3
    assert job["run_at"] == run_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    for bad in (0, -4):  # PocketBase: max_retries ≤ 0 means the default
        assert (
            server.admin.post("/api/jobs/enqueue", json={"topic": "t", "max_retries": bad}).json()["max_retries"] == 3
        )


def test_enqueue_errors(server: LiveServer) -> None:
    for body in ({}, {"topic": ""}, {"topic": "   "}, {"payload": {"a": 1}}):
        r = server.admin.post("/api/jobs/enqueue", json=body)
        assert r.status_code == 400, body
        assert r.json()["message"] == "Topic is required"
        assert r.json()["field"] == "topic"
        assert r.json()["code"] == 400
    r = server.admin.post("/api/jobs/enqueue", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["field"] == "body"
    r = server.admin.post("/api/jobs/enqueue", json={"topic": "t", "max_retries": "many"})
    assert r.status_code == 400 and r.json()["field"] == "max_retries"
    r = server.admin.post("/api/jobs/enqueue", json={"topic": "t", "payload": "x" * (1 << 20)})
    assert r.status_code == 400  # as PocketBase answers it (its JobMaxPayloadSize check)
    assert r.json()["field"] == "payload" and r.json()["message"] == "payload too large (max 1MB)"
    assert server.admin.get("/api/jobs").json()["total"] == 0  # nothing stored


def test_list_paging_newest_first(server: LiveServer) -> None:
    ids = [server.admin.post("/api/jobs/enqueue", json={"topic": f"t{i % 2}"}).json()["id"] for i in range(25)]
    page = server.admin.get("/api/jobs").json()
    assert set(page) == {"items", "total", "limit", "offset"}
    assert page["total"] == 25 and page["limit"] == 20 and page["offset"] == 0
    assert [j["id"] for j in page["items"]] == ids[::-1][:20]
    rest = server.admin.get("/api/jobs", params={"offset": 20}).json()
    assert [j["id"] for j in rest["items"]] == ids[::-1][20:]
    for bad in ("0", "-1", "abc"):  # invalid or non-positive limits are ignored
        assert server.admin.get("/api/jobs", params={"limit": bad}).json()["limit"] == 20
    assert len(server.admin.get("/api/jobs", params={"limit": 5}).json()["items"]) == 5
    t1 = server.admin.get("/api/jobs", params={"topic": "t1", "status": "pending"}).json()
    assert t1["total"] == 12 and all(j["topic"] == "t1" for j in t1["items"])
    assert server.admin.get("/api/jobs", params={"status": "nonsense"}).json()["total"] == 0


def test_get_stats_requeue_delete(start_server: StartServer, store_url: str) -> None:
    live = start_server(store_url, run_worker=True)
    admin = live.admin
    ok = admin.post("/api/jobs/enqueue", json={"topic": "echo", "payload": {"x": 1}}).json()
    bad = admin.post("/api/jobs/enqueue", json={"topic": "fail"}).json()
    wait_for(lambda: admin.get(f"/api/jobs/{ok['id']}").json()["status"] == "completed")
    failed = wait_for(lambda: (j := admin.get(f"/api/jobs/{bad['id']}").json())["status"] == "failed" and j)
    assert failed["last_error"] and "refused by test" in failed["last_error"]
    assert failed["retries"] == 0 and failed["max_retries"] == 1

    stats = admin.get("/api/jobs/stats").json()
    assert {k: stats[k] for k in ("pending", "processing", "completed", "failed", "total")} == {
        "pending": 0,
        "processing": 0,
        "completed": 1,
        "failed": 1,
        "total": 2,
    }
    assert stats["success_rate"] == 0.5

    # requeue only failed
    r = admin.post(f"/api/jobs/{ok['id']}/requeue")
    assert r.status_code == 400
    assert r.json()["message"] == "Job cannot be requeued (must be in 'failed' status)"
    # delete only pending/failed
    r = admin.delete(f"/api/jobs/{ok['id']}")
    assert r.status_code == 400
    assert r.json()["message"] == "Job cannot be deleted (must be in 'pending' or 'failed' status)"
    missing = str(uuid.uuid4())
    for method, path in (
        ("GET", f"/api/jobs/{missing}"),
        ("POST", f"/api/jobs/{missing}/requeue"),
        ("DELETE", f"/api/jobs/{missing}"),
        ("GET", "/api/jobs/not-a-uuid"),
    ):
        r = admin.request(method, path)
        assert r.status_code == 404 and r.json()["message"] == "Job not found", (method, path)

    r = admin.post(f"/api/jobs/{bad['id']}/requeue")
    assert r.status_code == 200
    requeued = r.json()
    assert requeued["retries"] == 0 and "last_error" not in requeued
    assert requeued["status"] in ("pending", "processing", "failed")
    wait_for(lambda: admin.get(f"/api/jobs/{bad['id']}").json()["status"] == "failed")
    assert admin.delete(f"/api/jobs/{bad['id']}").json() == {"ok": True}
    assert admin.get(f"/api/jobs/{bad['id']}").status_code == 404


def test_batch_and_options(server: LiveServer) -> None:
    r = server.admin.post(
        "/api/jobs/enqueue/batch",
        json={
            "jobs": [
                {"topic": "a", "queue": "mail", "priority": -5, "namespace": "ns1", "user_id": "u1"},
                {"topic": "b", "delay": 3600, "unique_key": "k"},
                {"topic": "b", "delay": 3600, "unique_key": "k"},
            ]
        },
    )
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [j["topic"] for j in items] == ["a", "b", "b"]
    assert items[0]["queue"] == "mail" and items[0]["priority"] == -5 and items[0]["namespace"] == "ns1"
    assert items[0]["user_id"] == "u1"
    assert items[2]["duplicate"] is True and items[2]["id"] == items[1]["id"]
    r = server.admin.post("/api/jobs/enqueue/batch", json={"jobs": [{"topic": "a"}, {"payload": 1}]})
    assert r.status_code == 400 and r.json()["field"] == "jobs.1.topic"
    assert server.admin.get("/api/jobs").json()["total"] == 2


def test_idempotency_key(server: LiveServer) -> None:
    headers = {"Idempotency-Key": "abc-123"}
    first = server.admin.post("/api/jobs/enqueue", json={"topic": "t"}, headers=headers)
    again = server.admin.post("/api/jobs/enqueue", json={"topic": "t"}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    assert server.admin.get("/api/jobs").json()["total"] == 1
    other = server.admin.post("/api/jobs/enqueue", json={"topic": "different"}, headers=headers)
    assert other.status_code == 422 and other.json()["field"] == "Idempotency-Key"
    # the same JSON with its keys in another order and other spacing is the same request (canonical JSON)
    body = {"topic": "t", "payload": {"a": 1, "b": [1, 2]}, "priority": 3}
    headers = {**headers, "Idempotency-Key": "canon", "Content-Type": "application/json"}
    first = server.admin.post("/api/jobs/enqueue", content=json.dumps(body), headers=headers)
    reordered = json.dumps({"priority": 3, "payload": {"b": [1, 2], "a": 1}, "topic": "t"}, indent=2)
    again = server.admin.post("/api/jobs/enqueue", content=reordered, headers=headers)
    assert first.status_code == again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert again.headers.get("idempotent-replayed") == "true"
    for other_api, other_body in (("/api/v1/jobs", {"task": "t", "priority": 1}),):
        h = {"Idempotency-Key": "canon-v1", "Content-Type": "application/json"}
        a = server.admin.post(other_api, json=other_body, headers=h)
        b = server.admin.post(other_api, content=json.dumps(dict(reversed(other_body.items()))), headers=h)
        assert a.status_code == b.status_code == 201 and a.json()["id"] == b.json()["id"]
    # a refused request frees its key
    bad = server.admin.post("/api/jobs/enqueue", json={}, headers={"Idempotency-Key": "k2"})
    assert bad.status_code == 400
    assert server.admin.post("/api/jobs/enqueue", json={"topic": "t"}, headers={"Idempotency-Key": "k2"}).is_success


@pytest.mark.parametrize("path", ["/api/jobs", "/api/jobs/stats"])
def test_pocketbase_needs_admin(server: LiveServer, path: str) -> None:
    assert server.client().get(path).status_code == 401
    user = server.client(server.user_token("u1"))
    assert user.get(path).status_code == 403


def test_processing_job_shows_locked_until(start_server: StartServer, sqlite_url: str) -> None:
    live = start_server(sqlite_url, run_worker=True)
    job = live.admin.post("/api/jobs/enqueue", json={"topic": "slow", "payload": {"seconds": 3}}).json()
    running = wait_for(lambda: (j := live.admin.get(f"/api/jobs/{job['id']}").json())["status"] == "processing" and j)
    assert RFC3339_SECONDS.match(running["locked_until"])
    assert running["locked_until"] > running["run_at"]
    assert running["retries"] == 0 and running["attempts"] == 1
    stats = live.admin.get("/api/jobs/stats").json()
    assert stats["processing"] == 1 and stats["success_rate"] == 0
    done = wait_for(lambda: (j := live.admin.get(f"/api/jobs/{job['id']}").json())["status"] == "completed" and j)
    assert "locked_until" not in done


def test_the_servers_worker_is_handed_jobs_enqueued_over_http(start_server: StartServer, store_url: str) -> None:
    """`conveyor serve` runs the API and the worker on one event loop, so on a store with hand-off an HTTP enqueue
    claims for the idle worker in the same round trip (store/base.py: "Hand-off")."""
    live = start_server(store_url, run_worker=True, worker_options={"poll_interval": 30})
    worker = live.api.state.worker
    wait_for(lambda: worker.started.is_set())
    time.sleep(0.2)  # the worker's first claim found nothing: it waits
    for i in range(5):
        job = live.admin.post("/api/jobs/enqueue", json={"topic": "echo", "payload": {"n": i}}).json()
        wait_for(lambda job=job: live.admin.get(f"/api/jobs/{job['id']}").json()["status"] == "completed")
    assert worker.handed_off == (5 if live.app.store.supports_handoff else 0)
