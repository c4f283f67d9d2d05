"""No HTTP API creates a `conveyor:` job, even for the admin: every way in that enqueues (PocketBase, Conveyor's
API, per-user push, GS2 push, a stamp sheet signed with a real key, a user-data import) answers 400 naming the rule,
and nothing is stored. (The webhook dispatcher, Conveyor's own code, is the one way they are made.)"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from conveyor.server.gs2_keys import get_key
from conveyor.server.gs2_models import Grn
from conveyor.server.gs2_stamp import PUSH_ACTION, _envelope
from tests.server.conftest import StartServer

RESERVED = "conveyor:webhook"


def test_every_enqueueing_route_refuses_reserved_tasks(start_server: StartServer, sqlite_url: str) -> None:
    live = start_server(sqlite_url)
    admin = live.admin
    admin.post("/api/v1/namespaces", json={"name": "game", "auto_run": False}).raise_for_status()
    forged_event = {"namespace": "victim", "type": "push", "event": {"forged": True}}

    attempts: dict[str, Any] = {
        "PocketBase enqueue": admin.post("/api/jobs/enqueue", json={"topic": RESERVED, "payload": forged_event}),
        "PocketBase batch": admin.post(
            "/api/jobs/enqueue/batch", json={"jobs": [{"topic": "echo"}, {"topic": RESERVED}]}
        ),
        "v1 enqueue": admin.post("/api/v1/jobs", json={"task": RESERVED, "payload": forged_event}),
        "v1 batch": admin.post("/api/v1/jobs/batch", json=[{"task": "echo"}, {"task": RESERVED}]),
        "per-user push": admin.post("/api/v1/namespaces/game/users/alice/jobs", json={"jobs": [{"task": RESERVED}]}),
        "GS2 push": admin.post(
            "/job-queue/game/user/alice/job", content=json.dumps({"jobs": [{"scriptId": RESERVED, "args": "{}"}]})
        ),
        "issuing a stamp sheet": None,
    }
    admin.post("/api/v1/gs2/keys", json={"name": "k"}).raise_for_status()
    attempts["issuing a stamp sheet"] = admin.post(
        "/api/v1/gs2/stamp-sheets",
        json={"key": "k", "namespace": "game", "user_id": "alice", "jobs": [{"scriptId": RESERVED}]},
    )
    # a sheet signed with the real key by another service (not through Conveyor's issuing API)
    key = live.app.runtime.call_sync(lambda: get_key(live.app, "k"))
    grn = Grn.from_env(None, None)
    args = {"namespaceName": "game", "userId": "alice", "jobs": [{"scriptId": RESERVED, "args": "{}"}]}
    body = {
        "sheetRequestId": str(uuid.uuid4()),
        "action": PUSH_ACTION,
        "args": json.dumps(args),
        "tasks": [],
        "keyId": key.key_id(grn),
        "userId": "alice",
        "timestamp": int(time.time() * 1000),
        "expiresAt": int(time.time() * 1000) + 60_000,
    }
    sheet = {"stampSheet": _envelope(key, body), "keyId": key.key_id(grn)}
    attempts["pushing a signed stamp sheet"] = live.client().post("/job-queue/stamp/job", json=sheet)
    attempts["replaying it"] = live.client().post("/job-queue/stamp/job", json=sheet)
    # a user-data import whose document names a reserved task
    document = admin.get("/api/v1/users/alice/data").json()
    document["jobs"] = [
        {
            "id": str(uuid.uuid4()),
            "namespace": "game",
            "userId": "alice",
            "task": RESERVED,
            "payload": forged_event,
            "status": "pending",
            "runAt": "2030-01-01T00:00:00Z",
            "maxAttempts": 3,
            "attempts": [],
        }
    ]
    attempts["user-data import"] = admin.post("/api/v1/users/alice/data", json=document)

    for label, answer in attempts.items():
        assert answer.status_code == 400, (label, answer.status_code, answer.text)
        assert "reserved" in answer.text, (label, answer.text)
    assert admin.get("/api/v1/stats").json()["total"] == 0
