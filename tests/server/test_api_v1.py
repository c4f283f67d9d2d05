"""Conveyor's own endpoints over HTTP: jobs, attempts, dead letters, namespaces, queues, workers, stats, tokens,
and the per-user calls with Run and its conflict."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.server.conftest import LiveServer, StartServer, wait_for


def test_jobs_cancel_run_now_requeue_delete(server: LiveServer) -> None:
    admin = server.admin
    r = admin.post("/api/v1/jobs", json={"task": "echo", "payload": [1, 2], "delay": 3600, "priority": 3})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["task"] == "echo" and job["payload"] == [1, 2] and job["scheduled"] is True and job["priority"] == 3
    assert admin.get(f"/api/v1/jobs/{job['id']}").json()["id"] == job["id"]
    now = admin.post(f"/api/v1/jobs/{job['id']}/run-now").json()
    assert now["scheduled"] is False
    cancelled = admin.post(f"/api/v1/jobs/{job['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    r = admin.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 400 and r.json()["error"] == "invalid_state"
    assert admin.post(f"/api/v1/jobs/{job['id']}/requeue").json()["status"] == "pending"
    page = admin.get("/api/v1/jobs", params={"task": "echo", "status": "pending"}).json()
    assert page["total"] == 1 and page["items"][0]["id"] == job["id"]
    assert admin.delete(f"/api/v1/jobs/{job['id']}").json()["id"] == job["id"]
    assert admin.get(f"/api/v1/jobs/{job['id']}").status_code == 404
    assert admin.get("/api/v1/jobs", params={"limit": 0}).status_code == 422
    assert admin.get("/api/v1/jobs", params={"status": "bogus"}).json()["field"] == "status"


def test_batch_and_validation_names_the_field(server: LiveServer) -> None:
    r = server.admin.post("/api/v1/jobs/batch", json=[{"task": "echo"}, {"task": "echo", "queue": "q2"}])
    assert r.status_code == 201 and r.json()["total"] == 2
    r = server.admin.post("/api/v1/jobs", json={"task": "echo", "priority": 99999})
    assert r.status_code == 422 and r.json()["field"] == "priority"
    r = server.admin.post("/api/v1/jobs", json={"task": "echo", "queue": "bad queue!"})
    assert r.status_code == 422 and r.json()["field"] == "queue"  # the schema's pattern (shown in OpenAPI)
    r = server.admin.post("/api/v1/jobs", json={"task": "echo", "nope": 1})
    assert r.status_code == 422 and r.json()["field"] == "nope"
    r = server.admin.post("/api/v1/jobs", json={"task": "echo\x00"})
    assert r.status_code == 400 and r.json()["field"] == "task"


def test_body_limit_413(start_server: StartServer, sqlite_url: str) -> None:
    live = start_server(sqlite_url, max_body_bytes=1000)
    r = live.admin.post("/api/jobs/enqueue", json={"topic": "t", "payload": "x" * 2000})
    assert r.status_code == 413 and r.json()["field"] == "body"


def test_attempts_and_dead_letters(start_server: StartServer, store_url: str) -> None:
    live = start_server(store_url, run_worker=True, worker_options={"heartbeat_interval": 0.2})
    admin = live.admin
    ok = admin.post("/api/v1/jobs", json={"task": "echo", "payload": {"v": 1}}).json()
    bad = admin.post("/api/v1/jobs", json={"task": "fail"}).json()
    wait_for(lambda: admin.get(f"/api/v1/jobs/{ok['id']}").json()["status"] == "completed")
    wait_for(lambda: admin.get(f"/api/v1/jobs/{bad['id']}").json()["status"] == "failed")

    attempts = admin.get(f"/api/v1/jobs/{ok['id']}/attempts").json()["items"]
    assert len(attempts) == 1 and attempts[0]["status_code"] == 200 and attempts[0]["result"] == {"v": 1}
    latest = admin.get(f"/api/v1/jobs/{ok['id']}/result").json()
    assert latest["try_number"] == 1 and latest["succeeded"] is True
    assert admin.get(f"/api/v1/jobs/{ok['id']}/result", params={"try_number": 1}).json() == latest
    assert admin.get(f"/api/v1/jobs/{ok['id']}/result", params={"try_number": 2}).status_code == 404

    dead = admin.get("/api/v1/dead-letters").json()
    assert dead["total"] == 1 and dead["items"][0]["id"] == bad["id"]
    assert admin.get(f"/api/v1/dead-letters/{bad['id']}").json()["last_error"]
    assert admin.get(f"/api/v1/dead-letters/{ok['id']}").status_code == 404
    failed_attempt = admin.get(f"/api/v1/jobs/{bad['id']}/result").json()
    assert failed_attempt["status_code"] == 400 and failed_attempt["outcome"] == "failed"
    assert admin.post(f"/api/v1/dead-letters/{bad['id']}/requeue").json()["status"] in ("pending", "processing")
    wait_for(lambda: admin.get(f"/api/v1/jobs/{bad['id']}").json()["status"] == "failed")
    assert admin.delete(f"/api/v1/dead-letters/{bad['id']}").json()["id"] == bad["id"]
    assert admin.get("/api/v1/dead-letters").json()["total"] == 0

    stats = admin.get("/api/v1/stats").json()
    assert stats["completed"] == 1 and stats["success_rate"] == 1.0

    workers = wait_for(lambda: admin.get("/api/v1/workers").json()["items"])
    assert workers[0]["heartbeat_at"] and workers[0]["concurrency"] == 4
    slow = admin.post("/api/v1/jobs", json={"task": "slow", "payload": {"seconds": 4}}).json()
    running = wait_for(
        lambda: [w for w in admin.get("/api/v1/workers").json()["items"] if slow["id"] in w["running"]], timeout=10
    )
    assert running


def test_concurrent_namespace_creates_and_updates_lose_nothing(server: LiveServer) -> None:
    """Ten creates of one name at once: one 201, nine 409, and the settings stored are the winner's. Eight PATCHes of
    different settings at once: every one lands (read-then-put let every create "succeed" and the last write win)."""
    admin = server.admin
    with ThreadPoolExecutor(10) as pool:
        answers = list(
            pool.map(
                lambda i: admin.post("/api/v1/namespaces", json={"name": "race", "description": f"writer {i}"}),
                range(10),
            )
        )
    assert sorted(r.status_code for r in answers) == [201] + [409] * 9, [r.text for r in answers]
    winner = next(r.json() for r in answers if r.status_code == 201)
    assert admin.get("/api/v1/namespaces/race").json()["description"] == winner["description"]
    changes: list[dict[str, Any]] = [
        {"description": "changed"},
        {"auto_run": False},
        {"max_attempts": 7},
        {"completed_retention": 61.0},
        {"failed_retention": 62.0},
        {"push_notification": True},
        {"run_notification": True},
        {"run_retry_backoff": True},
    ]
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda body: admin.patch("/api/v1/namespaces/race", json=body).status_code, changes))
    assert codes == [200] * 8
    stored = admin.get("/api/v1/namespaces/race").json()
    for body in changes:
        for key, value in body.items():
            assert stored[key] == value, (key, stored)


def test_namespaces_crud(server: LiveServer) -> None:
    admin = server.admin
    r = admin.post(
        "/api/v1/namespaces",
        json={
            "name": "game",
            "auto_run": False,
            "run_notification": True,
            "webhook_url": "http://example.invalid/hook",
            "webhook_secret": "s3cret",
            "max_attempts": 5,
            "completed_retention": 60,
        },
    )
    assert r.status_code == 201, r.text
    ns = r.json()
    assert ns["auto_run"] is False and ns["max_attempts"] == 5 and ns["webhook_secret_set"] is True
    assert "webhook_secret" not in ns
    assert admin.post("/api/v1/namespaces", json={"name": "game"}).status_code == 409
    assert admin.post("/api/v1/namespaces", json={"name": "bad name"}).json()["field"] == "name"
    names = [n["name"] for n in admin.get("/api/v1/namespaces").json()["items"]]
    assert "default" in names and "game" in names
    updated = admin.patch("/api/v1/namespaces/game", json={"auto_run": True, "webhook_url": ""}).json()
    assert updated["auto_run"] is True and updated["webhook_url"] is None and updated["max_attempts"] == 5
    assert admin.get("/api/v1/namespaces/game").json()["auto_run"] is True
    assert admin.patch("/api/v1/namespaces/game", json={"webhook_url": "ftp://x"}).json()["field"] == "webhook_url"
    assert admin.delete("/api/v1/namespaces/game").json() == {"ok": True}
    assert admin.get("/api/v1/namespaces/game").status_code == 404
    assert admin.delete("/api/v1/namespaces/game").status_code == 404
    assert admin.delete("/api/v1/namespaces/default").status_code == 400
    # jobs in a namespace take its default max_attempts
    admin.post("/api/v1/namespaces", json={"name": "five", "max_attempts": 5})
    job = admin.post("/api/v1/jobs", json={"task": "echo", "namespace": "five"}).json()
    assert job["max_attempts"] == 5


def test_queues_pause_resume(server: LiveServer) -> None:
    admin = server.admin
    admin.post("/api/v1/jobs", json={"task": "echo", "queue": "mail"})
    admin.post("/api/v1/jobs", json={"task": "echo", "queue": "mail", "delay": 600})
    queues = {q["name"]: q for q in admin.get("/api/v1/queues").json()["items"]}
    assert queues["mail"]["counts"]["pending"] == 2 and queues["mail"]["counts"]["scheduled"] == 1
    assert admin.post("/api/v1/queues/mail/pause").json()["paused"] is True
    assert {q["name"]: q for q in admin.get("/api/v1/queues").json()["items"]}["mail"]["paused"] is True
    assert admin.post("/api/v1/queues/mail/resume").json()["paused"] is False
    assert admin.post("/api/v1/queues/bad%20name/pause").status_code == 400


def test_queue_limits_are_set_at_runtime_and_kept_across_pause(server: LiveServer) -> None:
    admin = server.admin
    got = admin.patch("/api/v1/queues/mail", json={"concurrency": 5, "rate_limit": "100/s", "rate_burst": 10}).json()
    assert got["concurrency"] == 5 and got["rate_limit"] == {"limit": 100, "period": 1.0, "burst": 10}
    assert admin.post("/api/v1/queues/mail/pause").json()["rate_limit"]["limit"] == 100
    resumed = admin.post("/api/v1/queues/mail/resume").json()
    assert resumed["paused"] is False and resumed["concurrency"] == 5 and resumed["rate_limit"]["burst"] == 10
    got = admin.patch("/api/v1/queues/mail", json={"rate_limit": {"limit": 3, "period": 60.0}}).json()
    assert got["rate_limit"] == {"limit": 3, "period": 60.0, "burst": None} and got["concurrency"] == 5
    got = admin.patch("/api/v1/queues/mail?namespace=default", json={"concurrency": None}).json()
    assert got["concurrency"] is None and got["rate_limit"]["limit"] == 3
    listed = {q["name"]: q for q in admin.get("/api/v1/queues").json()["items"]}["mail"]
    assert listed["rate_limit"] == {"limit": 3, "period": 60.0, "burst": None}
    bad = admin.patch("/api/v1/queues/mail", json={"rate_limit": "lots"})
    assert bad.status_code == 400 and bad.json()["field"] == "rate_limit"
    assert admin.patch("/api/v1/queues/mail", json={"concurrency": -1}).status_code in (400, 422)
    alone = admin.patch("/api/v1/queues/mail", json={"rate_burst": 2})  # the stored limit's burst
    assert alone.status_code == 200 and alone.json()["rate_limit"] == {"limit": 3, "period": 60.0, "burst": 2}
    no_rate = admin.patch("/api/v1/queues/other", json={"rate_burst": 2})
    assert no_rate.status_code == 400 and no_rate.json()["field"] == "rate_burst"
    mixed = admin.patch("/api/v1/queues/mail", json={"rate_limit": {"limit": 3}, "rate_burst": 2})
    assert mixed.status_code == 400 and mixed.json()["field"] == "rate_burst"
    assert admin.patch("/api/v1/queues/mail", json={"speed": 2}).status_code in (400, 422)
    assert server.client(server.user_token("alice")).patch("/api/v1/queues/mail", json={}).status_code == 403


def test_rate_keys_over_http(server: LiveServer) -> None:
    admin = server.admin
    got = admin.patch("/api/v1/queues/mail", json={"rate_limit": "10/m", "rate_burst": 2, "rate_key": "user_id"})
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["rate_key"] == "user_id" and body["rate_limit"] == {"limit": 10, "period": 60.0, "burst": 2}
    paused = admin.post("/api/v1/queues/mail/pause").json()
    assert paused["rate_key"] == "user_id"
    listed = {q["name"]: q for q in admin.get("/api/v1/queues").json()["items"]}["mail"]
    assert listed["rate_key"] == "user_id"
    got = admin.patch("/api/v1/queues/mail", json={"rate_key": "payload.account"}).json()
    assert got["rate_key"] == "payload.account" and got["rate_limit"]["limit"] == 10
    for bad_key in ("payload.", "user", "payload.a.b"):
        bad = admin.patch("/api/v1/queues/mail", json={"rate_key": bad_key})
        assert bad.status_code == 400 and bad.json()["field"] == "rate_key", bad.text
        assert "payload.<field>" in bad.text
    assert admin.patch("/api/v1/queues/mail", json={"rate_key": None}).json()["rate_key"] is None


def test_a_queue_shows_its_live_limits(server: LiveServer) -> None:
    admin = server.admin
    admin.patch("/api/v1/queues/mail", json={"rate_limit": "2/m", "rate_burst": 1, "concurrency": 4})
    for _ in range(2):
        admin.post("/api/v1/jobs", json={"task": "echo", "queue": "mail", "concurrency_key": "t1"})
    got = admin.get("/api/v1/queues/mail")
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["concurrency"] == 4 and body["rate_limit"] == {"limit": 2, "period": 60.0, "burst": 1}
    flow = body["flow"]
    assert flow["rate"]["tokens"] == 1 and flow["rate"]["next_at"] is None and flow["rate_keys"] == []
    assert flow["processing"] == 0 and flow["due"] == 2 and flow["oldest_due_age"] >= 0
    assert flow["rate_limited"] is False and flow["processing_per_key"] == []
    keyed = admin.patch("/api/v1/queues/mail", json={"rate_key": "concurrency_key"}).json()
    assert keyed["rate_key"] == "concurrency_key"
    flow = admin.get("/api/v1/queues/mail").json()["flow"]
    assert flow["rate"] is None and flow["rate_keys_limited"] == 0
    empty = admin.get("/api/v1/queues/nothing-here").json()
    assert empty["flow"]["due"] == 0 and empty["flow"]["rate"] is None
    assert admin.get("/api/v1/queues/bad%20name").status_code == 400
    assert server.client(server.user_token("alice")).get("/api/v1/queues/mail").status_code == 403


def test_concurrency_keys_over_http(server: LiveServer) -> None:
    admin = server.admin
    got = admin.patch("/api/v1/queues/mail", json={"key_concurrency": 1}).json()
    assert got["key_concurrency"] == 1 and got["concurrency"] is None
    job = admin.post("/api/v1/jobs", json={"task": "echo", "queue": "mail", "concurrency_key": "tenant-7"}).json()
    assert job["concurrency_key"] == "tenant-7"
    assert admin.get(f"/api/v1/jobs/{job['id']}").json()["concurrency_key"] == "tenant-7"
    listed = {q["name"]: q for q in admin.get("/api/v1/queues").json()["items"]}["mail"]
    assert listed["key_concurrency"] == 1
    assert admin.patch("/api/v1/queues/mail", json={"key_concurrency": None}).json()["key_concurrency"] is None
    bad = admin.post("/api/v1/jobs", json={"task": "echo", "concurrency_key": ""})
    assert bad.status_code in (400, 422)


def test_tokens_and_me(server: LiveServer) -> None:
    token = server.user_token("alice", namespace="game")
    me = server.client(token).get("/api/v1/me").json()
    assert me == {"kind": "user", "name": None, "user_id": "alice", "namespace": "game", "expires_at": me["expires_at"]}
    assert server.admin.get("/api/v1/me").json()["kind"] == "admin"
    assert server.client("nope").get("/api/v1/me").status_code == 401
    assert server.client(token[:-2] + "xx").get("/api/v1/me").status_code == 401
    r = server.admin.post("/api/v1/tokens", json={"user_id": "a", "ttl": -1})
    assert r.status_code == 422 and r.json()["field"] == "ttl"
    r = httpx.get(server.base_url + "/api/v1/me", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401 and "Bearer" in r.json()["message"]


def _push(live: LiveServer, ns: str, user: str, jobs: list[dict[str, Any]]) -> httpx.Response:
    return live.admin.post(f"/api/v1/namespaces/{ns}/users/{user}/jobs", json={"jobs": jobs})


def test_user_push_list_get_delete_run(start_server: StartServer, store_url: str) -> None:
    live = start_server(store_url)
    live.admin.post("/api/v1/namespaces", json={"name": "game", "auto_run": False})
    r = _push(live, "game", "alice", [{"task": "echo", "payload": {"n": i}} for i in range(3)])
    assert r.status_code == 201, r.text
    assert r.json()["auto_run"] is False
    ids = [j["id"] for j in r.json()["items"]]
    assert _push(live, "game", "alice", []).status_code == 422
    assert _push(live, "game", "alice", [{"task": "echo"}] * 11).status_code == 422
    _push(live, "game", "bob", [{"task": "echo"}])

    alice = live.client(live.user_token("alice", namespace="game"))
    page = alice.get("/api/v1/namespaces/game/users/me/jobs").json()
    assert page["total"] == 3 and {j["id"] for j in page["items"]} == set(ids)
    assert alice.get(f"/api/v1/namespaces/game/users/alice/jobs/{ids[0]}").json()["payload"] == {"n": 0}

    results = []
    for _ in range(3):
        r = alice.post("/api/v1/namespaces/game/users/me/run")
        assert r.status_code == 200, r.text
        results.append(r.json())
    assert [x["job"]["id"] for x in results] == ids  # FIFO
    assert [x["attempt"]["result"] for x in results] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert [x["is_last"] for x in results] == [False, False, True]
    assert all(x["job"]["status"] == "completed" for x in results)
    empty = alice.post("/api/v1/namespaces/game/users/me/run").json()
    assert empty == {"job": None, "attempt": None, "is_last": True}

    attempts = alice.get(f"/api/v1/namespaces/game/users/me/jobs/{ids[0]}/attempts").json()["items"]
    assert len(attempts) == 1 and attempts[0]["status_code"] == 200
    assert alice.get(f"/api/v1/namespaces/game/users/me/jobs/{ids[0]}/result").json()["try_number"] == 1
    assert alice.delete(f"/api/v1/namespaces/game/users/me/jobs/{ids[0]}").json()["id"] == ids[0]
    assert alice.get(f"/api/v1/namespaces/game/users/me/jobs/{ids[0]}").status_code == 404


def test_run_conflict_409(start_server: StartServer, store_url: str) -> None:
    live = start_server(store_url)
    live.admin.post("/api/v1/namespaces", json={"name": "game", "auto_run": False})
    _push(live, "game", "carol", [{"task": "slow", "payload": {"seconds": 2}}, {"task": "echo"}])
    token = live.user_token("carol")
    first: dict[str, Any] = {}

    def run_first() -> None:
        with httpx.Client(base_url=live.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            r = c.post("/api/v1/namespaces/game/users/carol/run")
            first["status"] = r.status_code
            first["body"] = r.json()

    thread = threading.Thread(target=run_first)
    thread.start()
    wait_for(
        lambda: live.admin.get("/api/v1/jobs", params={"status": "processing", "user_id": "carol"}).json()["total"]
    )
    r = live.client(token).post("/api/v1/namespaces/game/users/carol/run")
    assert r.status_code == 409
    assert r.json()["error"] == "conflict"
    thread.join(30)
    assert first["status"] == 200 and first["body"]["attempt"]["result"] == "slept"
    assert first["body"]["is_last"] is False
    second = live.client(token).post("/api/v1/namespaces/game/users/carol/run").json()
    assert second["is_last"] is True and second["job"]["task"] == "echo"


def test_other_users_data_is_hidden(server: LiveServer) -> None:
    server.admin.post("/api/v1/namespaces", json={"name": "game", "auto_run": False})
    bob_job = _push(server, "game", "bob", [{"task": "echo"}]).json()["items"][0]["id"]
    alice = server.client(server.user_token("alice"))
    base = "/api/v1/namespaces/game/users"
    assert alice.get(f"{base}/bob/jobs").status_code == 403
    assert alice.post(f"{base}/bob/run").status_code == 403
    assert alice.get(f"{base}/bob/jobs/{bob_job}").status_code == 403
    # through her own path, bob's job does not exist
    assert alice.get(f"{base}/alice/jobs/{bob_job}").status_code == 404
    assert alice.delete(f"{base}/alice/jobs/{bob_job}").status_code == 404
    assert alice.get(f"{base}/alice/jobs/{bob_job}/attempts").status_code == 404
    # a token limited to another namespace
    other_ns = server.client(server.user_token("bob", namespace="elsewhere"))
    assert other_ns.get(f"{base}/bob/jobs").status_code == 403
    assert server.admin.get(f"{base}/bob/jobs/{bob_job}").status_code == 200
    assert server.admin.get(f"{base}/me/jobs").status_code == 400
    assert alice.get(f"{base}/alice/jobs/{uuid.uuid4()}").status_code == 404
