"""The GS2-compatible surface, driven over real HTTP by the OFFICIAL `gs2` SDK, unchanged (gzip bodies on).

A uvicorn server runs in a thread with the GS2 routers mounted on a FastAPI app built here, so these tests depend
only on the routers, the Conveyor app and the server's auth object. The SDK reaches it through its documented
`steady_endpoint` (every `https://{service}.{region}.gen2.gs2io.com` URL becomes `http://127.0.0.1:PORT/{service}`).
Store: SQLite by default; `CONVEYOR_GS2_TEST_STORE=memory|postgresql|redis` picks another (tests/backends).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI
from gs2.core import BasicGs2Credential, Gs2RestSession, ProjectTokenGs2Credential
from gs2.core.exception import (
    BadRequestException,
    ConflictException,
    NotFoundException,
    ServiceUnavailableException,
    UnauthorizedException,
)
from gs2.job_queue import Gs2JobQueueRestClient
from gs2.job_queue.model import JobEntry, LogSetting, NotificationSetting, TransactionSetting
from gs2.job_queue.request import (
    CreateNamespaceRequest,
    DeleteJobByUserIdRequest,
    DeleteJobRequest,
    DeleteNamespaceRequest,
    DescribeJobsByUserIdRequest,
    DescribeNamespacesRequest,
    GetJobByUserIdRequest,
    GetJobResultByUserIdRequest,
    GetJobResultRequest,
    GetNamespaceRequest,
    GetNamespaceStatusRequest,
    GetServiceVersionRequest,
    PushByUserIdRequest,
    RunByUserIdRequest,
    RunRequest,
    UpdateNamespaceRequest,
)

from conveyor import Conveyor, Fail, StoreUnavailable
from conveyor.backoff import Backoff
from conveyor.server.access import Guard
from conveyor.server.auth import ServerAuth
from conveyor.server.gs2 import build_identifier_router, build_router
from tests.conftest import backend

ADMIN_TOKEN = "cva_test-admin-token"
TOKEN_SECRET = "test-token-secret"
REGION = "ap-northeast-1"
OWNER = "owner-test"
SCRIPT_OK = "grn:gs2:ap-northeast-1:owner-test:script:ns:script:grant"  # a GRN is a valid task name
SCRIPT_FAIL = "always_fails"
SCRIPT_SLOW = "slow"
SCRIPT_BAD_REQUEST = "bad_request"


# ---- harness -----------------------------------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    app: Conveyor
    auth: ServerAuth
    slow_started: threading.Event
    slow_release: threading.Event

    def user_token(self, user_id: str, namespace: str | None = None) -> str:
        return self.auth.issue(user_id, namespace=namespace).token

    def session(self, token: str = ADMIN_TOKEN) -> Gs2RestSession:
        session = Gs2RestSession(ProjectTokenGs2Credential(OWNER, token), REGION, steady_endpoint=self.url)
        session.connect()
        return session


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _store_url(tmp_path: Path) -> tuple[str, Callable[[], None]]:
    """A fresh isolated store of the kind CONVEYOR_GS2_TEST_STORE names (default sqlite), and its cleanup."""
    kind = os.environ.get("CONVEYOR_GS2_TEST_STORE", "sqlite")
    module = backend(kind)
    url: str = module.fresh_url(tmp_path)
    return url, lambda: asyncio.run(module.cleanup(url))


def _conveyor(url: str, slow_started: threading.Event, slow_release: threading.Event) -> Conveyor:
    app = Conveyor(url)
    no_wait = Backoff(base=0.0, jitter=0.0)

    @app.task(SCRIPT_OK, backoff=no_wait)
    def grant(payload: dict[str, Any]) -> dict[str, Any]:
        return {"granted": payload.get("item"), "count": payload.get("count", 1)}

    @app.task(SCRIPT_FAIL, backoff=no_wait)
    def always_fails(payload: dict[str, Any]) -> None:
        raise RuntimeError("the reward service is down")

    @app.task(SCRIPT_BAD_REQUEST, backoff=no_wait)
    def bad_request(payload: dict[str, Any]) -> None:
        raise Fail("unknown item", status_code=400)

    @app.task(SCRIPT_SLOW, backoff=no_wait)
    def slow(payload: dict[str, Any]) -> str:
        slow_started.set()
        slow_release.wait(20)
        return "done"

    return app


def _asgi(conveyor_app: Conveyor, auth: ServerAuth, *, worker: bool) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await conveyor_app.aopen()  # the server's loop becomes the app's home loop
        background = None
        if worker:  # executes the jobs of namespaces with auto_run on (GS2 enableAutoRun)
            background = asyncio.create_task(
                conveyor_app.arun_worker(install_signal_handlers=False, poll_interval=0.1, maintenance=False)
            )
        try:
            yield
        finally:
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
            await conveyor_app.aclose()

    guard = Guard(auth)  # the server's access matrix, enforced as create_app does
    api = FastAPI(lifespan=lifespan, dependencies=[Depends(guard)])
    api.include_router(build_router(conveyor_app, auth, region=REGION, owner_id=OWNER))
    api.include_router(build_identifier_router(auth))
    guard.install(api)
    return api


@contextlib.contextmanager
def _serve(tmp_path: Path, *, worker: bool = False) -> Iterator[Server]:
    started, release = threading.Event(), threading.Event()
    url, cleanup = _store_url(tmp_path)
    conveyor_app = _conveyor(url, started, release)
    auth = ServerAuth(ADMIN_TOKEN, TOKEN_SECRET)
    port = _free_port()
    config = uvicorn.Config(_asgi(conveyor_app, auth, worker=worker), host="127.0.0.1", port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, name="gs2-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the GS2 test server did not start")
        time.sleep(0.02)
    try:
        yield Server(f"http://127.0.0.1:{port}", conveyor_app, auth, started, release)
    finally:
        release.set()
        uv.should_exit = True
        thread.join(timeout=30)
        cleanup()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with _serve(tmp_path) as running:
        yield running


@pytest.fixture
def worker_server(tmp_path: Path) -> Iterator[Server]:
    with _serve(tmp_path, worker=True) as running:
        yield running


@pytest.fixture
def sessions(server: Server) -> Iterator[Callable[..., Gs2RestSession]]:
    """Opened SDK sessions, disconnected afterwards (each has a non-daemon receive thread)."""
    opened: list[Gs2RestSession] = []

    def make(token: str = ADMIN_TOKEN) -> Gs2RestSession:
        session = server.session(token)
        opened.append(session)
        return session

    try:
        yield make
    finally:
        for session in opened:
            session.disconnect()


@pytest.fixture
def client(sessions: Callable[..., Gs2RestSession]) -> Gs2JobQueueRestClient:
    return Gs2JobQueueRestClient(sessions())


def _create_ns(client: Gs2JobQueueRestClient, name: str = "ns1", **settings: Any) -> Any:
    request = CreateNamespaceRequest().with_name(name)
    for key, value in settings.items():
        getattr(request, f"with_{key}")(value)
    return client.create_namespace(request).item


def _push(client: Gs2JobQueueRestClient, user: str, entries: list[JobEntry], ns: str = "ns1") -> Any:
    return client.push_by_user_id(PushByUserIdRequest().with_namespace_name(ns).with_user_id(user).with_jobs(entries))


def _entry(script: str = SCRIPT_OK, args: dict[str, Any] | None = None, tries: int | None = None) -> JobEntry:
    entry = JobEntry().with_script_id(script).with_args(json.dumps(args if args is not None else {"item": "sword"}))
    if tries is not None:
        entry = entry.with_max_try_count(tries)
    return entry


def _run(client: Gs2JobQueueRestClient, user: str, ns: str = "ns1") -> Any:
    return client.run_by_user_id(RunByUserIdRequest().with_namespace_name(ns).with_user_id(user))


# ---- namespaces --------------------------------------------------------------------------------------------------


def test_namespace_lifecycle(client: Gs2JobQueueRestClient) -> None:
    created = _create_ns(
        client,
        "game-0001",
        description="rewards",
        transaction_setting=TransactionSetting().with_enable_auto_run(True).with_queue_namespace_id("grn:q"),
        log_setting=LogSetting().with_logging_namespace_id("grn:log"),
        run_notification=NotificationSetting().with_gateway_namespace_id("grn:gw"),
    )
    assert created.name == "game-0001"
    assert created.namespace_id == f"grn:gs2:{REGION}:{OWNER}:queue:game-0001"
    assert created.description == "rewards"
    assert created.enable_auto_run is False  # GS2's default
    assert created.transaction_setting.queue_namespace_id == "grn:q"
    assert created.transaction_setting.enable_auto_run is True
    assert created.log_setting.logging_namespace_id == "grn:log"
    assert created.run_notification.gateway_namespace_id == "grn:gw"
    assert created.push_notification is None
    assert abs(created.created_at - time.time() * 1000) < 60_000

    with pytest.raises(ConflictException):
        _create_ns(client, "game-0001")
    with pytest.raises(BadRequestException) as bad:
        _create_ns(client, "bad name!")
    assert bad.value.errors[0].component == "name"

    got = client.get_namespace(GetNamespaceRequest().with_namespace_name("game-0001")).item
    assert got.to_dict() == created.to_dict()
    status = client.get_namespace_status(GetNamespaceStatusRequest().with_namespace_name("game-0001")).status
    assert status == "ACTIVE"

    updated = client.update_namespace(
        UpdateNamespaceRequest()
        .with_namespace_name("game-0001")
        .with_description("rewards v2")
        .with_enable_auto_run(True)
        .with_push_notification(NotificationSetting().with_gateway_namespace_id("grn:gw2"))
    ).item
    assert updated.description == "rewards v2"
    assert updated.enable_auto_run is True
    assert updated.push_notification.gateway_namespace_id == "grn:gw2"
    assert updated.log_setting.logging_namespace_id == "grn:log"  # untouched fields keep their value
    assert updated.revision > created.revision
    assert updated.updated_at >= created.updated_at

    _create_ns(client, "game-0002")
    _create_ns(client, "other")
    everything = client.describe_namespaces(DescribeNamespacesRequest())
    assert {"default", "game-0001", "game-0002", "other"} <= {n.name for n in everything.items}
    prefixed = client.describe_namespaces(DescribeNamespacesRequest().with_name_prefix("game-").with_limit(1))
    assert [n.name for n in prefixed.items] == ["game-0001"]
    assert prefixed.next_page_token is not None
    rest = client.describe_namespaces(
        DescribeNamespacesRequest().with_name_prefix("game-").with_limit(1).with_page_token(prefixed.next_page_token)
    )
    assert [n.name for n in rest.items] == ["game-0002"]
    assert rest.next_page_token is None

    deleted = client.delete_namespace(DeleteNamespaceRequest().with_namespace_name("game-0001")).item
    assert deleted.name == "game-0001"
    with pytest.raises(NotFoundException):
        client.get_namespace(GetNamespaceRequest().with_namespace_name("game-0001"))

    version = client.get_service_version(GetServiceVersionRequest()).item
    assert isinstance(version, str) and version


# ---- push, describe, get, delete ---------------------------------------------------------------------------------


def test_push_describe_get_delete(client: Gs2JobQueueRestClient) -> None:
    _create_ns(client)
    one = _push(client, "alice", [_entry(args={"item": "shield"})])
    assert one.auto_run is False
    (job,) = one.items
    assert job.user_id == "alice"
    assert job.script_id == SCRIPT_OK
    assert job.args == '{"item": "shield"}'  # the exact string pushed, not a re-serialisation
    assert job.max_try_count == 3  # GS2's default
    assert job.current_retry_count == 0
    assert job.job_id == f"grn:gs2:{REGION}:{OWNER}:queue:ns1:user:alice:job:{job.name}"

    ten = _push(client, "alice", [_entry(args={"item": f"gem{i}"}, tries=5) for i in range(10)])
    assert len(ten.items) == 10 and all(j.max_try_count == 5 for j in ten.items)

    with pytest.raises(BadRequestException) as too_many:
        _push(client, "alice", [_entry() for _ in range(11)])
    assert too_many.value.errors[0].component == "jobs"
    with pytest.raises(BadRequestException):
        _push(client, "alice", [JobEntry().with_args("{}")])  # scriptId required
    with pytest.raises(BadRequestException):
        _push(client, "alice", [_entry(args={"blob": "x" * 131_072})])  # args > 128 KiB
    with pytest.raises(NotFoundException):
        _push(client, "alice", [_entry()], ns="missing")

    page = client.describe_jobs_by_user_id(
        DescribeJobsByUserIdRequest().with_namespace_name("ns1").with_user_id("alice").with_limit(4)
    )
    assert [j.name for j in page.items] == [job.name] + [j.name for j in ten.items[:3]]  # FIFO
    seen = [j.name for j in page.items]
    token = page.next_page_token
    while token:
        page = client.describe_jobs_by_user_id(
            DescribeJobsByUserIdRequest()
            .with_namespace_name("ns1")
            .with_user_id("alice")
            .with_limit(4)
            .with_page_token(token)
        )
        seen += [j.name for j in page.items]
        token = page.next_page_token
    assert seen == [job.name] + [j.name for j in ten.items]
    empty = client.describe_jobs_by_user_id(
        DescribeJobsByUserIdRequest().with_namespace_name("ns1").with_user_id("bob")
    )
    assert empty.items == []

    got = client.get_job_by_user_id(
        GetJobByUserIdRequest().with_namespace_name("ns1").with_user_id("alice").with_job_name(job.name)
    ).item
    assert got.to_dict() == job.to_dict()
    with pytest.raises(NotFoundException):  # someone else's job is not found under bob
        client.get_job_by_user_id(
            GetJobByUserIdRequest().with_namespace_name("ns1").with_user_id("bob").with_job_name(job.name)
        )

    deleted = client.delete_job_by_user_id(
        DeleteJobByUserIdRequest().with_namespace_name("ns1").with_user_id("alice").with_job_name(job.name)
    ).item
    assert deleted.name == job.name
    with pytest.raises(NotFoundException):
        client.get_job_by_user_id(
            GetJobByUserIdRequest().with_namespace_name("ns1").with_user_id("alice").with_job_name(job.name)
        )


def test_duplication_avoider_replays_the_first_answer(client: Gs2JobQueueRestClient) -> None:
    _create_ns(client)
    request = (
        PushByUserIdRequest()
        .with_namespace_name("ns1")
        .with_user_id("alice")
        .with_jobs([_entry()])
        .with_duplication_avoider("push-0001")
    )
    first = client.push_by_user_id(request)
    again = client.push_by_user_id(request)
    assert [j.name for j in again.items] == [j.name for j in first.items]
    listed = client.describe_jobs_by_user_id(
        DescribeJobsByUserIdRequest().with_namespace_name("ns1").with_user_id("alice")
    )
    assert len(listed.items) == 1

    _push(client, "alice", [_entry(args={"item": "second"})])
    run = RunByUserIdRequest().with_namespace_name("ns1").with_user_id("alice").with_duplication_avoider("run-0001")
    ran = client.run_by_user_id(run)
    replayed = client.run_by_user_id(run)  # a retried Run must not execute the next job
    assert replayed.item.name == ran.item.name == first.items[0].name
    assert replayed.result.to_dict() == ran.result.to_dict()
    assert _run(client, "alice").item.name != first.items[0].name  # without the avoider: the next job

    # same avoider, other user: a different call, not a replay
    other = _push(client, "bob", [_entry()])
    assert other.items[0].user_id == "bob"
    bob_run = client.run_by_user_id(
        RunByUserIdRequest().with_namespace_name("ns1").with_user_id("bob").with_duplication_avoider("run-0001")
    )
    assert bob_run.item.name == other.items[0].name


# ---- Run and results ---------------------------------------------------------------------------------------------


def test_run_until_last_job_with_results(server: Server, sessions: Callable[..., Gs2RestSession]) -> None:
    admin = Gs2JobQueueRestClient(sessions())
    _create_ns(admin)
    pushed = _push(admin, "alice", [_entry(args={"item": f"gem{i}", "count": i}) for i in range(3)]).items

    # the player runs its own queue with its access token (the SDK's `run`, path /user/me/job/run)
    token = server.user_token("alice")
    player = Gs2JobQueueRestClient(sessions(token))
    executed = []
    for _ in range(10):
        answer = player.run(RunRequest().with_namespace_name("ns1").with_access_token(token))
        if answer.item is not None:
            executed.append(answer.item.name)
            assert answer.result.status_code == 200
            assert answer.result.try_number == 1
            assert json.loads(answer.result.result) == {
                "granted": f"gem{len(executed) - 1}",
                "count": len(executed) - 1,
            }
            assert answer.item.current_retry_count == 0
        if answer.is_last_job:
            break
    assert executed == [j.name for j in pushed]  # FIFO, one per call
    assert answer.is_last_job is True

    empty = _run(admin, "alice")
    assert empty.item is None and empty.result is None and empty.is_last_job is True

    listed = admin.describe_jobs_by_user_id(
        DescribeJobsByUserIdRequest().with_namespace_name("ns1").with_user_id("alice")
    )
    assert listed.items == []  # executed jobs leave the queue

    result = admin.get_job_result_by_user_id(
        GetJobResultByUserIdRequest().with_namespace_name("ns1").with_user_id("alice").with_job_name(pushed[0].name)
    ).item
    assert result.try_number == 1 and result.status_code == 200
    assert result.job_id == pushed[0].job_id
    assert result.job_result_id == f"{pushed[0].job_id}:jobResult:1"
    assert result.script_id == SCRIPT_OK
    assert json.loads(result.args) == {"item": "gem0", "count": 0}
    mine = player.get_job_result(
        GetJobResultRequest().with_namespace_name("ns1").with_access_token(token).with_job_name(pushed[1].name)
    ).item
    assert json.loads(mine.result) == {"granted": "gem1", "count": 1}


def test_failing_script_is_retried_then_dead_lettered(server: Server, client: Gs2JobQueueRestClient) -> None:
    _create_ns(client)
    (job,) = _push(client, "bob", [_entry(SCRIPT_FAIL, tries=2)]).items

    first = _run(client, "bob")
    assert first.item.name == job.name
    assert first.result.status_code == 500
    assert first.result.try_number == 1
    assert "reward service is down" in json.loads(first.result.result)["error"]
    assert first.item.current_retry_count == 1
    _wait_until(lambda: _run_peek(client, "bob") is not None, "the retry to become due")

    second = _run(client, "bob")
    assert second.item.name == job.name
    assert second.result.status_code == 500 and second.result.try_number == 2
    assert second.item.current_retry_count == 2
    assert second.is_last_job is True

    by_try = client.get_job_result_by_user_id(
        GetJobResultByUserIdRequest()
        .with_namespace_name("ns1")
        .with_user_id("bob")
        .with_job_name(job.name)
        .with_try_number(1)
    ).item
    latest = client.get_job_result_by_user_id(
        GetJobResultByUserIdRequest().with_namespace_name("ns1").with_user_id("bob").with_job_name(job.name)
    ).item
    assert (by_try.try_number, latest.try_number) == (1, 2)
    with pytest.raises(NotFoundException):
        client.get_job_result_by_user_id(
            GetJobResultByUserIdRequest()
            .with_namespace_name("ns1")
            .with_user_id("bob")
            .with_job_name(job.name)
            .with_try_number(7)
        )

    # dead letters: the SDK dropped these methods in 2024-12, so plain HTTP with the same auth
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    base = f"{server.url}/job-queue/ns1/user/bob/dead"
    listed = httpx.get(base, headers=headers)
    assert listed.status_code == 200
    (dead,) = listed.json()["items"]
    assert dead["name"] == job.name
    assert dead["deadLetterJobId"] == f"grn:gs2:{REGION}:{OWNER}:queue:ns1:user:bob:dead:{job.name}"
    assert dead["scriptId"] == SCRIPT_FAIL
    assert [r["tryNumber"] for r in dead["result"]] == [1, 2]
    assert all(r["statusCode"] == 500 for r in dead["result"])
    assert httpx.get(f"{base}/{job.name}", headers=headers).json()["item"] == dead
    assert httpx.delete(f"{base}/{job.name}", headers=headers).json()["item"]["name"] == job.name
    assert httpx.get(f"{base}/{job.name}", headers=headers).status_code == 404
    assert httpx.get(base, headers=headers).json()["items"] == []


def test_permanent_failure_is_dead_lettered_at_once(server: Server, client: Gs2JobQueueRestClient) -> None:
    _create_ns(client)
    (job,) = _push(client, "carol", [_entry(SCRIPT_BAD_REQUEST, tries=5)]).items
    answer = _run(client, "carol")
    assert answer.result.status_code == 400
    assert answer.is_last_job is True
    dead = httpx.get(f"{server.url}/job-queue/ns1/user/carol/dead", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert [d["name"] for d in dead.json()["items"]] == [job.name]


def test_concurrent_run_conflicts(server: Server, sessions: Callable[..., Gs2RestSession]) -> None:
    admin = Gs2JobQueueRestClient(sessions())
    _create_ns(admin)
    _push(admin, "dave", [_entry(SCRIPT_SLOW), _entry()])

    outcome: dict[str, Any] = {}
    background = Gs2JobQueueRestClient(sessions())

    def first_run() -> None:
        outcome["answer"] = _run(background, "dave")

    thread = threading.Thread(target=first_run)
    thread.start()
    assert server.slow_started.wait(20), "the slow job did not start"
    with pytest.raises(ConflictException) as conflict:
        _run(admin, "dave")
    assert conflict.value.errors[0].message == "Job queue execution conflict. Retry required."
    server.slow_release.set()
    thread.join(20)
    assert outcome["answer"].result.status_code == 200
    assert outcome["answer"].is_last_job is False
    assert _run(admin, "dave").is_last_job is True


def test_delete_job_with_access_token(server: Server, sessions: Callable[..., Gs2RestSession]) -> None:
    admin = Gs2JobQueueRestClient(sessions())
    _create_ns(admin)
    (job,) = _push(admin, "erin", [_entry()]).items
    token = server.user_token("erin")
    player = Gs2JobQueueRestClient(sessions(token))
    other = server.user_token("mallory")
    with pytest.raises(NotFoundException):
        player.delete_job(
            DeleteJobRequest().with_namespace_name("ns1").with_access_token(other).with_job_name(job.name)
        )
    deleted = player.delete_job(
        DeleteJobRequest().with_namespace_name("ns1").with_access_token(token).with_job_name(job.name)
    ).item
    assert deleted.name == job.name
    assert (
        admin.describe_jobs_by_user_id(
            DescribeJobsByUserIdRequest().with_namespace_name("ns1").with_user_id("erin")
        ).items
        == []
    )


# ---- auth --------------------------------------------------------------------------------------------------------


def test_wrong_tokens_are_unauthorized(server: Server, sessions: Callable[..., Gs2RestSession]) -> None:
    intruder = Gs2JobQueueRestClient(sessions("not-a-token"))
    with pytest.raises(UnauthorizedException) as denied:
        intruder.describe_namespaces(DescribeNamespacesRequest())
    assert denied.value.errors and denied.value.errors[0].component == "auth"
    with pytest.raises(UnauthorizedException):
        _create_ns(intruder, "nope")
    with pytest.raises(UnauthorizedException):
        intruder.run(RunRequest().with_namespace_name("default").with_access_token("forged"))

    # a user token reaches its own queue, not namespace management nor other users' queues, and never pushes
    # (PushByUserId is a server-side call in GS2: a game client only runs, reads and deletes its own jobs)
    alice = server.user_token("alice")
    player = Gs2JobQueueRestClient(sessions(alice))
    with pytest.raises(UnauthorizedException):
        player.describe_namespaces(DescribeNamespacesRequest())
    with pytest.raises(UnauthorizedException):
        _push(player, "alice", [_entry()], ns="default")
    with pytest.raises(UnauthorizedException):
        _push(player, "bob", [_entry()], ns="default")
    assert (
        player.describe_jobs_by_user_id(
            DescribeJobsByUserIdRequest().with_namespace_name("default").with_user_id("alice")
        ).items
        == []
    )
    with pytest.raises(NotFoundException):
        player.describe_jobs_by_user_id(
            DescribeJobsByUserIdRequest().with_namespace_name("default").with_user_id("bob")
        )


def test_login_exchanges_client_secret_for_project_token(server: Server) -> None:
    session = Gs2RestSession(BasicGs2Credential("admin", ADMIN_TOKEN), REGION, steady_endpoint=server.url)
    session.connect()  # POST /identifier/projectToken/login, gzip body
    try:
        assert session.project_token == ADMIN_TOKEN
        client = Gs2JobQueueRestClient(session)
        assert client.get_namespace(GetNamespaceRequest().with_namespace_name("default")).item.name == "default"
    finally:
        session.disconnect()

    bad = Gs2RestSession(BasicGs2Credential("admin", "wrong"), REGION, steady_endpoint=server.url)
    with pytest.raises(UnauthorizedException):
        bad.connect()


# ---- wire details the SDK does not show ---------------------------------------------------------------------------


def test_wire_format_errors_and_gzip(server: Server) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    body = gzip.compress(json.dumps({"name": "wire", "contextStack": None}).encode())
    created = httpx.post(f"{server.url}/job-queue/", content=body, headers={**headers, "Content-Encoding": "gzip"})
    assert created.status_code == 200
    assert created.json()["item"]["enableAutoRun"] is False

    plain = httpx.post(f"{server.url}/job-queue/wire/user/u1/job", json={"jobs": []}, headers=headers)
    assert plain.status_code == 400
    errors = json.loads(plain.json()["message"])
    assert errors[0].keys() == {"component", "message", "code"}

    broken = httpx.post(
        f"{server.url}/job-queue/wire/user/u1/job", content=b"not gzip", headers={**headers, "Content-Encoding": "gzip"}
    )
    assert broken.status_code == 400
    bomb = gzip.compress(b"{" + b" " * (9 * 1024 * 1024) + b"}")  # 9 MiB inflated from a few KiB
    inflated = httpx.post(
        f"{server.url}/job-queue/wire/user/u1/job", content=bomb, headers={**headers, "Content-Encoding": "gzip"}
    )
    assert inflated.status_code == 400
    assert json.loads(inflated.json()["message"])[0]["component"] == "body"
    form_login = httpx.post(
        f"{server.url}/identifier/projectToken/login", data={"client_id": "admin", "client_secret": ADMIN_TOKEN}
    )
    assert form_login.status_code == 200
    assert form_login.json() == {"access_token": ADMIN_TOKEN, "token_type": "Bearer", "expires_in": 3600}
    nul = httpx.post(
        f"{server.url}/job-queue/wire/user/u1/job",
        json={"jobs": [{"scriptId": "s", "args": json.dumps({"a": "\x00"})}]},
        headers=headers,
    )
    assert nul.status_code == 400
    assert httpx.get(f"{server.url}/job-queue/wire/user/u%00x/job", headers=headers).status_code == 400
    tampered = httpx.post(f"{server.url}/job-queue/stamp/job", json={"stampSheet": "x", "keyId": "k"}, headers=headers)
    assert tampered.status_code == 400
    assert json.loads(tampered.json()["message"])[0]["component"] == "stampSheet"
    unknown = httpx.patch(f"{server.url}/job-queue/no/such/route", headers=headers)
    assert unknown.status_code == 404
    assert json.loads(unknown.json()["message"])[0]["code"] == "jobQueue.operation.error.notSupported"
    assert httpx.get(f"{server.url}/job-queue/", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(f"{server.url}/job-queue/").status_code == 401
    missing = httpx.get(f"{server.url}/job-queue/wire/user/u1/job/not-a-uuid", headers=headers)
    assert missing.status_code == 404
    assert json.loads(missing.json()["message"])[0]["component"] == "job"


def _run_peek(client: Gs2JobQueueRestClient, user: str) -> Any:
    """The first queued job, if any (describe, without running)."""
    items = client.describe_jobs_by_user_id(
        DescribeJobsByUserIdRequest().with_namespace_name("ns1").with_user_id(user)
    ).items
    return items[0] if items else None


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_auto_run_namespace_is_executed_by_workers(worker_server: Server) -> None:
    session = worker_server.session()
    try:
        client = Gs2JobQueueRestClient(session)
        _create_ns(client, "auto", enable_auto_run=True)
        pushed = _push(client, "frank", [_entry(args={"item": "bow"})], ns="auto")
        assert pushed.auto_run is True
        (job,) = pushed.items
        request = (
            GetJobResultByUserIdRequest().with_namespace_name("auto").with_user_id("frank").with_job_name(job.name)
        )

        def executed() -> bool:
            try:
                return bool(client.get_job_result_by_user_id(request).item.status_code == 200)
            except NotFoundException:
                return False

        _wait_until(executed, "the worker to run the auto-run job")
        assert json.loads(client.get_job_result_by_user_id(request).item.result) == {"granted": "bow", "count": 1}
    finally:
        session.disconnect()


def test_store_outage_is_service_unavailable(
    server: Server, client: Gs2JobQueueRestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("cannot reach the store: connection refused")

    monkeypatch.setattr(server.app.store, "list_namespaces", down)
    monkeypatch.setattr(server.app.store, "get_namespace", down)
    with pytest.raises(ServiceUnavailableException):
        client.describe_namespaces(DescribeNamespacesRequest())
    answer = httpx.get(f"{server.url}/job-queue/ns1", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert answer.status_code == 503
    assert "cannot reach the store" in json.loads(answer.json()["message"])[0]["message"]


def test_endpoint_host_patch_for_older_sdks(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other documented way to point the SDK at Conveyor (works in SDKs without steady_endpoint)."""
    from gs2.core import Gs2Constant

    monkeypatch.setattr(Gs2Constant, "ENDPOINT_HOST", server.url + "/{service}")
    session = Gs2RestSession(BasicGs2Credential("admin", ADMIN_TOKEN), REGION)
    session.connect()
    try:
        client = Gs2JobQueueRestClient(session)
        assert client.get_namespace(GetNamespaceRequest().with_namespace_name("default")).item.name == "default"
    finally:
        session.disconnect()
