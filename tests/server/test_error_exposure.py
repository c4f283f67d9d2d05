"""Errors shown to users never carry internal exception text, tracebacks, webhook URLs or store details.

A game client's user token reads its own jobs' attempts (Run answers, results, dead letters, on Conveyor's API and
on GS2's): the text of a deliberate failure (`Fail("…")`) is its handler's message for them and is shown; the text
of an unexpected exception, a traceback, and anything of Conveyor's own `conveyor:` jobs are not. The admin sees
everything. A store that is down answers 503 to everyone, but only the admin reads the store's own words."""

from __future__ import annotations

import json
import socket
from typing import Any

from conveyor import Conveyor, Fail
from conveyor.server.common import INTERNAL_ERROR_TEXT, STORE_UNAVAILABLE_TEXT
from tests.server.conftest import ADMIN_TOKEN, StartServer

LEAK = "postgresql://app:hunter2@db.internal:5432/app"


def leaky_app(url: str) -> Conveyor:
    app = Conveyor(url)

    @app.task("crash", max_attempts=1)
    async def crash(payload: Any) -> Any:
        raise RuntimeError(f"could not connect to {LEAK}")

    @app.task("sold_out", max_attempts=1)
    async def sold_out(payload: Any) -> Any:
        raise Fail("the item is sold out", status_code=410)

    return app


def test_user_tokens_read_no_internal_exception_text(start_server: StartServer, sqlite_url: str) -> None:
    live = start_server(sqlite_url, app=leaky_app(sqlite_url))
    admin = live.admin
    admin.post("/api/v1/namespaces", json={"name": "game", "auto_run": False}).raise_for_status()
    pushed = admin.post(
        "/api/v1/namespaces/game/users/alice/jobs", json={"jobs": [{"task": "crash"}, {"task": "sold_out"}]}
    ).json()["items"]
    alice = live.client(live.user_token("alice"))

    crashed = alice.post("/api/v1/namespaces/game/users/me/run").json()
    assert crashed["attempt"]["status_code"] == 500
    assert crashed["attempt"]["error"] == INTERNAL_ERROR_TEXT and crashed["attempt"]["traceback"] is None
    assert crashed["job"]["last_error"] == INTERNAL_ERROR_TEXT
    refused = alice.post("/api/v1/namespaces/game/users/me/run").json()
    assert refused["attempt"]["error"] == "the item is sold out"  # the handler's own words for its callers

    crash_id = pushed[0]["id"]
    for path in (
        f"/api/v1/namespaces/game/users/me/jobs/{crash_id}",
        f"/api/v1/namespaces/game/users/me/jobs/{crash_id}/attempts",
        f"/api/v1/namespaces/game/users/me/jobs/{crash_id}/result",
        "/api/v1/namespaces/game/users/me/jobs",
    ):
        text = alice.get(path).text
        assert "hunter2" not in text and "Traceback" not in text and "RuntimeError" not in text, (path, text)

    # the admin sees the real error and the traceback
    attempt = admin.get(f"/api/v1/jobs/{crash_id}/result").json()
    assert LEAK in attempt["error"] and "Traceback" in attempt["traceback"]
    assert LEAK in admin.get(f"/api/v1/namespaces/game/users/alice/jobs/{crash_id}/attempts").text


def test_gs2_results_and_dead_letters_shown_to_a_game_client(start_server: StartServer, sqlite_url: str) -> None:
    live = start_server(sqlite_url, app=leaky_app(sqlite_url))
    admin = live.admin
    assert admin.post("/job-queue/", json={"name": "game"}).status_code == 200
    entries = [{"scriptId": "crash", "args": "{}", "maxTryCount": 1}]
    job = admin.post("/job-queue/game/user/alice/job", content=json.dumps({"jobs": entries})).json()["items"][0]
    token = live.user_token("alice")
    game = live.client(token)
    headers = {"X-GS2-ACCESS-TOKEN": token}
    ran = game.post("/job-queue/game/user/me/job/run", headers=headers, content=b"{}").json()
    assert json.loads(ran["result"]["result"]) == {"error": INTERNAL_ERROR_TEXT}
    for path in (
        f"/job-queue/game/user/me/job/{job['name']}/result",
        f"/job-queue/game/user/alice/job/{job['name']}/result",
        "/job-queue/game/user/alice/dead",
        f"/job-queue/game/user/alice/dead/{job['name']}",
    ):
        text = game.get(path, headers=headers).text
        assert "hunter2" not in text and "RuntimeError" not in text, (path, text)
    assert "hunter2" in admin.get(f"/job-queue/game/user/alice/job/{job['name']}/result").text


def test_a_store_that_is_down_tells_only_the_admin_why(start_server: StartServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    url = f"redis://127.0.0.1:{dead_port}/0?prefix=exposure"
    live = start_server(url, app=Conveyor(url))
    health = live.client().get("/health")
    assert health.status_code == 503 and health.json()["message"] == STORE_UNAVAILABLE_TEXT
    anonymous = live.client("cvu1.not.checkable").get("/api/v1/me")
    assert anonymous.status_code == 503 and anonymous.json()["message"] == STORE_UNAVAILABLE_TEXT
    gs2 = live.client().get("/job-queue/game/user/me/job/x/result", headers={"X-GS2-ACCESS-TOKEN": "cvu1.a.b"})
    assert gs2.status_code == 503 and str(dead_port) not in gs2.text
    assert str(dead_port) not in health.text + anonymous.text
    # the admin (its configured token needs no store to be checked) reads the store's own words
    detail = live.client(ADMIN_TOKEN).get("/api/v1/stats")
    assert detail.status_code == 503 and detail.json()["message"] != STORE_UNAVAILABLE_TEXT
