"""Notifications over HTTP: SSE delivery of push/run events (filtered, users see only their own) and signed
webhooks delivered through the queue to a real test HTTP server; plus /metrics and /health."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from conveyor.server.notify import WEBHOOK_TASK, verify_webhook
from tests.server.conftest import LiveServer, StartServer, wait_for


class EventReader:
    """Reads an SSE stream in a thread; `events` collects (type, data) as they arrive."""

    def __init__(self, live: LiveServer, token: str, **params: str) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.connected = threading.Event()
        self.status: int | None = None
        self._client = httpx.Client(base_url=live.base_url, timeout=httpx.Timeout(30, read=60))
        self._params = params
        self._token = token
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.connected.wait(10), "SSE stream did not open"

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            with self._client.stream("GET", "/api/events", params=self._params, headers=headers) as r:
                self.status = r.status_code
                event = ""
                for line in r.iter_lines():
                    if line.startswith(": connected"):
                        self.connected.set()
                    elif line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        self.events.append((event, json.loads(line[6:])))
        except httpx.HTTPError:
            pass
        finally:
            self.connected.set()

    def close(self) -> None:
        self._client.close()


def test_sse_push_and_run_events(start_server: StartServer, store_url: str) -> None:
    live = start_server(store_url, run_worker=True)
    admin_stream = EventReader(live, "test-admin-token")
    alice_stream = EventReader(live, live.user_token("alice"))
    push_only = EventReader(live, "test-admin-token", types="push", namespace="default")
    try:
        r = live.admin.post("/api/v1/namespaces/default/users/alice/jobs", json={"jobs": [{"task": "echo"}]})
        job_id = r.json()["items"][0]["id"]
        live.admin.post("/api/v1/namespaces/default/users/bob/jobs", json={"jobs": [{"task": "echo"}]})
        wait_for(lambda: len([e for e in admin_stream.events if e[0] == "run"]) == 2)
        wait_for(lambda: len(alice_stream.events) == 2)
        kinds = [(e, d["userId"]) for e, d in alice_stream.events]
        assert kinds == [("push", "alice"), ("run", "alice")]
        push, run = alice_stream.events[0][1], alice_stream.events[1][1]
        assert push["jobName"] == job_id and push["namespaceName"] == "default" and push["task"] == "echo"
        assert run["jobName"] == job_id and run["statusCode"] == 200 and run["outcome"] == "completed"
        wait_for(lambda: len(push_only.events) == 2)
        assert {e for e, _ in push_only.events} == {"push"}
    finally:
        for reader in (admin_stream, alice_stream, push_only):
            reader.close()


def test_sse_rejects_bad_requests(server: LiveServer) -> None:
    assert server.client().get("/api/events").status_code == 401
    r = server.admin.get("/api/events", params={"types": "push,nope"})
    assert r.status_code == 400 and r.json()["field"] == "types"
    token = server.user_token("alice")
    assert server.client(token).get("/api/events", params={"user_id": "bob"}).status_code == 403
    # tokens are never taken from a URL (logs, history, Referer): the query-string token is refused
    r = httpx.get(f"{server.base_url}/api/events", params={"token": token}, timeout=10)
    assert r.status_code == 400 and r.json()["field"] == "token"


class Receiver:
    """A webhook receiver: records every POST; answers with the codes in `answers` first, then 200."""

    def __init__(self, answers: list[int] | None = None) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.answers = list(answers or [])
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                outer.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                code = outer.answers.pop(0) if outer.answers else 200
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(answers=[500])  # the first delivery fails: the queue retries it
    yield r
    r.close()


def test_webhook_signed_and_retried(start_server: StartServer, store_url: str, receiver: Receiver) -> None:
    live = start_server(store_url, run_worker=True)
    live.admin.post(
        "/api/v1/namespaces",
        json={
            "name": "game",
            "auto_run": True,
            "push_notification": True,
            "run_notification": True,
            "webhook_url": receiver.url,
            "webhook_secret": "hook-secret",
            "webhook_allow_private": True,  # the receiver is on 127.0.0.1
        },
    )
    job_id = live.admin.post(
        "/api/v1/namespaces/game/users/alice/jobs", json={"jobs": [{"task": "echo", "payload": 1}]}
    ).json()["items"][0]["id"]
    wait_for(lambda: len([r for r in receiver.requests]) >= 3, timeout=30)  # 500, then push and run
    delivered = {}
    for headers, body in receiver.requests:
        assert headers["content-type"] == "application/json"
        assert verify_webhook("hook-secret", headers["x-conveyor-signature"], body)
        assert not verify_webhook("wrong-secret", headers["x-conveyor-signature"], body)
        data = json.loads(body)
        delivered[data["type"]] = data
    assert set(delivered) == {"push", "run"}
    assert delivered["push"]["jobName"] == job_id and delivered["push"]["userId"] == "alice"
    assert delivered["run"]["jobName"] == job_id and delivered["run"]["statusCode"] == 200
    # delivery is an ordinary job: visible, with its attempts (one failed try was retried)
    hooks = wait_for(
        lambda: (
            (p := live.admin.get("/api/v1/jobs", params={"task": WEBHOOK_TASK}).json())["total"] == 2
            and all(j["status"] == "completed" for j in p["items"])
            and p
        ),
        timeout=30,
    )
    assert sorted(j["attempts"] for j in hooks["items"]) == [1, 2]
    assert "hook-secret" not in json.dumps(hooks)  # the secret never sits in a job


def test_metrics_and_health(start_server: StartServer, store_url: str) -> None:
    live = start_server(store_url, run_worker=True)
    job = live.admin.post("/api/jobs/enqueue", json={"topic": "echo", "queue": "default"}).json()
    wait_for(lambda: live.admin.get(f"/api/jobs/{job['id']}").json()["status"] == "completed")
    live.admin.post("/api/jobs/enqueue", json={"topic": "echo", "delay": 600})
    text = httpx.get(live.base_url + "/metrics").text
    assert 'conveyor_jobs_enqueued_total{queue="default",task="echo"} 2.0' in text
    assert 'conveyor_jobs_completed_total{queue="default",task="echo"} 1.0' in text
    assert 'conveyor_job_run_duration_seconds_count{queue="default",task="echo"} 1.0' in text
    assert 'conveyor_job_start_latency_seconds_count{queue="default",task="echo"} 1.0' in text
    assert 'conveyor_queue_jobs{namespace="default",queue="default",status="scheduled"} 1.0' in text
    assert 'conveyor_queue_processing{namespace="default",queue="default"} 0.0' in text
    assert 'conveyor_queue_rate_limited_jobs{namespace="default",queue="default"} 0.0' in text
    assert 'conveyor_queue_oldest_due_age_seconds{namespace="default",queue="default"} 0.0' in text
    health = httpx.get(live.base_url + "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"


async def test_worker_only_process_delivers_webhooks(sqlite_url: str) -> None:
    """`conveyor worker` nodes publish the run events, so they dispatch webhooks themselves."""
    import asyncio

    from conveyor import Conveyor, Namespace
    from conveyor.worker import Worker

    receiver = Receiver()
    app = Conveyor(sqlite_url)

    @app.task("echo")
    async def echo(payload: Any) -> Any:
        return payload

    try:
        async with app:
            await app.aput_namespace(
                Namespace(
                    name="game",
                    run_notification=True,
                    webhook_url=receiver.url,
                    webhook_secret="k",
                    webhook_allow_private=True,
                )
            )
            # no webhook_notifications(): a worker delivers its namespaces' webhooks by itself
            worker = Worker(app, poll_interval=0.1, install_signal_handlers=False, grace_period=1.0)
            task = asyncio.create_task(worker.run())
            job = await app.aenqueue("echo", 1, namespace="game", user_id="u")
            for _ in range(400):
                if receiver.requests:
                    break
                await asyncio.sleep(0.05)
            worker.stop()
            await task
        headers, body = receiver.requests[0]
        assert verify_webhook("k", headers["x-conveyor-signature"], body)
        assert json.loads(body)["jobName"] == job.id and json.loads(body)["type"] == "run"
    finally:
        receiver.close()


def test_event_wire_formats() -> None:
    """The SSE data and webhook bodies made from typed events, key by key (the wire formats clients parse)."""
    from datetime import UTC, datetime

    from conveyor.events import Event
    from conveyor.model import Attempt, AttemptOutcome, Job, JobStatus
    from conveyor.server.notify import sse_data
    from conveyor.webhooks import webhook_body

    due = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    started = datetime(2026, 1, 2, 3, 4, 6, 654321, tzinfo=UTC)
    at = datetime(2026, 1, 2, 3, 4, 7, 999999, tzinfo=UTC)
    job = Job(
        "j1", "game", "q", "echo", None, JobStatus.PROCESSING, 0, due, 1, 3, 1, due, due, user_id="u",
        started_at=started, lease_token="t" * 32,
    )  # fmt: skip
    attempt = Attempt("j1", 1, AttemptOutcome.COMPLETED, 200, started, at)
    push, run, cancel = Event("push", job, at=at), Event("run", job, attempt, at=at), Event("cancel", job, at=at)
    common = {"namespaceName": "game", "userId": "u", "jobName": "j1", "task": "echo"}
    assert list(sse_data(push).items()) == [*common.items(), ("queue", "q"), ("at", "2026-01-02T03:04:07.999Z")]
    assert list(sse_data(run).items()) == [
        *common.items(),
        ("statusCode", 200),
        ("outcome", "completed"),
        ("queue", "q"),
        ("tryNumber", 1),
        ("startedAt", "2026-01-02T03:04:06.654321+00:00"),
        ("runAt", "2026-01-02T03:04:05.123456+00:00"),
        ("at", "2026-01-02T03:04:07.999Z"),
    ]
    assert sse_data(cancel) == {"jobName": "j1", "at": "2026-01-02T03:04:07.999Z"}
    assert webhook_body(push) == {"type": "push", **sse_data(push)}
    assert list(webhook_body(run)) == ["type", *sse_data(run)] and webhook_body(run) == {"type": "run", **sse_data(run)}
    assert run.run_time == (at - started).total_seconds() and run.queue_wait == (started - due).total_seconds()
    assert push.run_time is None and push.queue_wait is None
