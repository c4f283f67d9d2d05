"""/api/v1/schedules (issue 13 item 5): code and runtime schedules listed together, runtime ones created, changed,
paused, resumed, deleted and triggered over HTTP, their history, and the errors a caller gets (naming the field).
The server runs a worker, so its scheduler picks a new schedule up (a SQLite store)."""

from __future__ import annotations

from typing import Any

from tests.server.conftest import StartServer, make_app, wait_for


def test_schedules_over_http(start_server: StartServer, sqlite_url: str) -> None:
    app = make_app(sqlite_url)
    app.cron("@yearly", "echo", {"from": "code"}, name="code-yearly", timezone="Asia/Tokyo")
    live = start_server(sqlite_url, app=app, run_worker=True)
    admin = live.admin

    made = admin.post(
        "/api/v1/schedules",
        json={
            "name": "pulse",
            "spec": "@every 1s",
            "task": "echo",
            "payload": {"n": 1},
            "queue": "default",
            "backfill": "latest",
            "backfill_window": 3600,
        },
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert (body["source"], body["paused"], body["timezone"], body["backfill"]) == ("runtime", False, "UTC", "latest")
    assert body["next_run_at"] and body["last_run_at"] is None

    listed = admin.get("/api/v1/schedules").json()["items"]
    assert [(s["name"], s["source"], s["timezone"]) for s in listed] == [
        ("code-yearly", "code", "Asia/Tokyo"),
        ("pulse", "runtime", "UTC"),
    ]

    # the server's own worker runs it: runs with jobs appear in the history
    def ran() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = admin.get("/api/v1/schedules/pulse/runs").json()["items"]
        return [r for r in items if r["job"] is not None and r["job"]["status"] == "completed"]

    runs = wait_for(ran, timeout=30)
    assert runs[0]["job"]["payload"] == {"n": 1} and runs[0]["manual"] is False
    assert admin.get("/api/v1/schedules/pulse").json()["last_run_at"] is not None

    # errors: each names what is wrong
    conflict = admin.post("/api/v1/schedules", json={"name": "code-yearly", "spec": "@daily", "task": "echo"})
    assert conflict.status_code == 409 and "declared in code" in conflict.json()["message"]
    taken = admin.post("/api/v1/schedules", json={"name": "pulse", "spec": "@daily", "task": "echo"})
    assert taken.status_code == 409 and taken.json()["error"] == "schedule_exists"
    bad_zone = admin.post(
        "/api/v1/schedules", json={"name": "x", "spec": "@daily", "task": "echo", "timezone": "Mars/Base"}
    )
    assert bad_zone.status_code == 400 and bad_zone.json()["field"] == "timezone"
    bad_spec = admin.post("/api/v1/schedules", json={"name": "x", "spec": "every day", "task": "echo"})
    assert bad_spec.status_code == 400 and bad_spec.json()["field"] == "spec"
    assert admin.patch("/api/v1/schedules/code-yearly", json={"spec": "@daily"}).status_code == 409
    assert admin.delete("/api/v1/schedules/code-yearly").status_code == 409
    assert admin.get("/api/v1/schedules/nope").status_code == 404
    assert admin.patch("/api/v1/schedules/pulse", json={"surprise": 1}).status_code in (400, 422)

    # change, pause, resume
    changed = admin.patch(
        "/api/v1/schedules/pulse", json={"spec": "0 3 * * *", "timezone": "Europe/Berlin", "queue": None}
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["spec"], changed.json()["timezone"], changed.json()["queue"]) == (
        "0 3 * * *",
        "Europe/Berlin",
        None,
    )
    assert changed.json()["payload"] == {"n": 1}  # omitted: kept
    paused = admin.post("/api/v1/schedules/pulse/pause").json()
    assert paused["paused"] is True and paused["next_run_at"] is None
    assert admin.post("/api/v1/schedules/pulse/resume").json()["paused"] is False

    # trigger: a code schedule too; recorded as a manual run
    job = admin.post("/api/v1/schedules/code-yearly/trigger")
    assert job.status_code == 201 and job.json()["payload"] == {"from": "code"}
    (run,) = admin.get("/api/v1/schedules/code-yearly/runs").json()["items"]
    assert run["manual"] is True and run["job_id"] == job.json()["id"]

    assert admin.delete("/api/v1/schedules/pulse").json() == {"ok": True}
    assert admin.get("/api/v1/schedules/pulse").status_code == 404
    assert [s["name"] for s in admin.get("/api/v1/schedules").json()["items"]] == ["code-yearly"]
