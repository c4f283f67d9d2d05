"""Issue 4's promise end to end over HTTP, on a private redis-server (never the shared one): the server starts
while Redis is down, enqueue answers 503 "job queue service is unavailable: Redis is not connected", Redis is
killed (-9) in the middle of a load and started again, and every enqueue the API acknowledged completes without
restarting the server or its worker."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from conveyor.server import create_app
from tests.server.conftest import ADMIN_TOKEN, make_app, serve_in_thread, wait_for
from tests.stores.redis_server import PrivateRedis

pytestmark = pytest.mark.slow
UNAVAILABLE = "job queue service is unavailable: Redis is not connected"


def test_api_answers_503_while_redis_is_down_and_every_acknowledged_job_completes(tmp_path: Path) -> None:
    redis = PrivateRedis(tmp_path / "redis")
    app = make_app(f"{redis.url}?prefix=http-outage")
    api = create_app(
        app,
        admin_token=ADMIN_TOKEN,
        demo=True,
        run_worker=True,
        print_admin_token=False,
        worker_options={"poll_interval": 0.2, "concurrency": 8, "grace_period": 2.0},
    )
    live = serve_in_thread(api, app)  # Redis is not running yet: the server must start anyway
    try:
        admin = live.admin
        assert admin.get("/health").status_code == 503
        demo = admin.post("/api/dm-jobqueue/register", json={"message": "hi"})
        assert demo.status_code == 503 and demo.json()["message"] == UNAVAILABLE
        pb = admin.post("/api/jobs/enqueue", json={"topic": "echo", "payload": {"n": -1}})
        assert pb.status_code == 503 and pb.json()["message"] == UNAVAILABLE

        redis.start()
        wait_for(lambda: admin.get("/health").status_code == 200)
        acknowledged: list[str] = []
        refused = 0
        deadline = time.monotonic() + 60
        n = 0
        while len(acknowledged) < 300 and time.monotonic() < deadline:
            n += 1
            if n == 100:
                redis.kill()  # kill -9 in the middle of the load
            if n == 140:
                redis.start()
            try:
                r = admin.post("/api/jobs/enqueue", json={"topic": "echo", "payload": {"n": n}})
            except httpx.HTTPError:  # pragma: no cover - the server itself must stay up
                raise
            if r.status_code == 200:
                acknowledged.append(r.json()["id"])
            else:
                assert r.status_code == 503, r.text
                assert r.json()["message"] == UNAVAILABLE
                refused += 1
                time.sleep(0.02)
        assert refused > 0, "Redis was down for a while: some enqueues must have been refused with 503"
        assert len(acknowledged) == 300

        def all_completed() -> bool:
            stats = admin.get("/api/jobs/stats").json()
            return bool(stats["completed"] == len(acknowledged))

        wait_for(all_completed, timeout=60)
        for job_id in acknowledged[::25]:
            assert admin.get(f"/api/jobs/{job_id}").json()["status"] == "completed"
        assert admin.get("/api/v1/workers").json()["items"], "the worker recovered without a restart"
    finally:
        live.stop()
        redis.kill()
