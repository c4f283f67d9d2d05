"""GS2-Gateway notifications across processes: an API node (`conveyor serve --no-worker`) holds the player's
WebSocket session, a separate `conveyor worker` runs the job, and the run notification reaches the session through
the store (conveyor.relay). On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from gs2.core import BasicGs2Credential, Gs2RestSession, ProjectTokenGs2Credential
from gs2.gateway import Gs2GatewayRestClient
from gs2.gateway import request as gw
from gs2.job_queue import Gs2JobQueueRestClient
from gs2.job_queue import request as jq
from gs2.job_queue.model import NotificationSetting

from tests.conftest import backend
from tests.server.test_gs2_gateway import ADMIN, OWNER, REGION, Session, _bind, _push, _token
from tests.server.test_serve_process import ServeProcess

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    module = backend(request.param)
    url: str = module.fresh_url(tmp_path)
    try:
        yield url
    finally:
        asyncio.run(module.cleanup(url))


def test_a_run_in_a_separate_worker_process_reaches_the_session(store_url: str) -> None:
    env = {"CONVEYOR_ADMIN_TOKEN": ADMIN, "CONVEYOR_URL": store_url, "PYTHONPATH": str(ROOT)}
    app = ("--app", "tests.server.gs2_scenario_app:app")
    api = ServeProcess(store_url, "--no-worker", "--gs2-owner-id", OWNER, env=env, global_args=app)
    worker: subprocess.Popen[str] | None = None
    try:
        rest = Gs2RestSession(ProjectTokenGs2Credential(OWNER, ADMIN), REGION, steady_endpoint=api.base_url)
        rest.connect()
        Gs2GatewayRestClient(rest).create_namespace(gw.CreateNamespaceRequest().with_name("gw"))
        Gs2JobQueueRestClient(rest).create_namespace(
            jq.CreateNamespaceRequest()
            .with_name("auto")
            .with_enable_auto_run(True)
            .with_push_notification(NotificationSetting().with_enable("Enabled"))
            .with_run_notification(NotificationSetting().with_enable("Enabled"))
        )
        session = Session(BasicGs2Credential("game", ADMIN), REGION, steady_endpoint=api.base_url)
        session.connect()
        _bind(session, _token(rest, "kim"))
        worker = subprocess.Popen(
            [sys.executable, "-m", "conveyor.cli", "--store", store_url, *app, "worker", "--poll-interval", "0.1"],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        pushed = _push(rest, "kim", ns="auto").items[0]
        note = session.wait_for("Gs2JobQueue:RunNotification", timeout=30)
        assert json.loads(note["payload"]) == {"namespaceName": "auto", "userId": "kim", "jobName": pushed.name}
        # pushNotification does not apply to an auto-run namespace (GS2's rule): only the run is notified
        assert [n for n in session.notifications if n["issuer"] == "Gs2JobQueue:PushNotification"] == []
        runs = [n for n in session.notifications if n["issuer"] == "Gs2JobQueue:RunNotification"]
        assert len(runs) == 1
        session.disconnect()
        rest.disconnect()
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
        api.stop()
