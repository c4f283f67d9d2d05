"""The GS2 surface as the real server mounts it (`create_app`: its auth, middleware and error handlers), driven by
the official `gs2` SDK with gzip on. The router's full behaviour is covered in test_gs2_sdk.py; this proves the
integration: login through the server's tokens, user tokens from `/api/v1/tokens`, Run, dead letters, OpenAPI."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from gs2.core import BasicGs2Credential, Gs2RestSession, ProjectTokenGs2Credential
from gs2.core.exception import NotFoundException, UnauthorizedException
from gs2.job_queue import Gs2JobQueueRestClient
from gs2.job_queue.model import JobEntry
from gs2.job_queue.request import (
    CreateNamespaceRequest,
    DescribeNamespacesRequest,
    GetJobResultRequest,
    PushByUserIdRequest,
    RunRequest,
)

from conveyor.server.access import MATRIX, Kind
from tests.server.conftest import ADMIN_TOKEN, LiveServer, StartServer

REGION = "ap-northeast-1"


@pytest.fixture
def live(start_server: StartServer, sqlite_url: str) -> LiveServer:
    return start_server(sqlite_url)


@pytest.fixture
def opened() -> Iterator[list[Gs2RestSession]]:
    sessions: list[Gs2RestSession] = []
    yield sessions
    for session in sessions:
        session.disconnect()


def _session(live: LiveServer, opened: list[Gs2RestSession], credential: object) -> Gs2RestSession:
    session = Gs2RestSession(credential, REGION, steady_endpoint=live.base_url)
    session.connect()
    opened.append(session)
    return session


def test_sdk_against_create_app(live: LiveServer, opened: list[Gs2RestSession]) -> None:
    admin = Gs2JobQueueRestClient(_session(live, opened, BasicGs2Credential("admin", ADMIN_TOKEN)))
    ns = admin.create_namespace(CreateNamespaceRequest().with_name("game")).item
    assert ns.enable_auto_run is False
    pushed = admin.push_by_user_id(
        PushByUserIdRequest()
        .with_namespace_name("game")
        .with_user_id("alice")
        .with_jobs(
            [
                JobEntry().with_script_id("echo").with_args(json.dumps({"gift": 1})),
                JobEntry().with_script_id("fail"),
            ]
        )
    ).items

    token = live.user_token("alice")
    player = Gs2JobQueueRestClient(_session(live, opened, ProjectTokenGs2Credential("alice", token)))
    first = player.run(RunRequest().with_namespace_name("game").with_access_token(token))
    assert first.item.name == pushed[0].name
    assert (first.result.status_code, json.loads(first.result.result)) == (200, {"gift": 1})
    assert first.is_last_job is False
    second = player.run(RunRequest().with_namespace_name("game").with_access_token(token))
    assert second.result.status_code == 400  # Fail(status_code=400): permanent, dead-lettered at once
    assert second.is_last_job is True

    result = player.get_job_result(
        GetJobResultRequest().with_namespace_name("game").with_access_token(token).with_job_name(pushed[0].name)
    ).item
    assert result.try_number == 1 and json.loads(result.result) == {"gift": 1}

    dead = live.admin.get("/job-queue/game/user/alice/dead")
    assert dead.status_code == 200
    assert [d["name"] for d in dead.json()["items"]] == [pushed[1].name]

    bob = live.user_token("bob")
    with pytest.raises(NotFoundException):  # bob's token never reaches alice's results
        player.get_job_result(
            GetJobResultRequest().with_namespace_name("game").with_access_token(bob).with_job_name(pushed[0].name)
        )


def test_bad_credentials_through_create_app(live: LiveServer, opened: list[Gs2RestSession]) -> None:
    with pytest.raises(UnauthorizedException):
        _session(live, opened, BasicGs2Credential("admin", "wrong-secret"))
    intruder = Gs2JobQueueRestClient(_session(live, opened, ProjectTokenGs2Credential("x", "wrong")))
    with pytest.raises(UnauthorizedException):
        intruder.describe_namespaces(DescribeNamespacesRequest())


def test_openapi_lists_the_gs2_paths(live: LiveServer) -> None:
    schema = live.admin.get("/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/job-queue/{namespaceName}/user/me/job/run" in paths
    assert "/job-queue/{namespaceName}/user/{userId}/dead/{deadLetterJobName}" in paths
    assert "/identifier/projectToken/login" in paths
    assert not any("{rest}" in p for p in paths)


def _gs2_operations(live: LiveServer) -> list[tuple[str, str]]:
    paths = live.admin.get("/openapi.json").json()["paths"]
    return sorted(
        (method.upper(), path)
        for path, item in paths.items()
        if path.startswith(("/job-queue", "/identifier", "/auth"))
        for method in item
    )


def _concrete(path: str) -> str:
    return (
        path.replace("{namespaceName}", "default")
        .replace("{userId}", "bob")
        .replace("{jobName}", "0190f2a4-0000-7000-8000-000000000001")
        .replace("{deadLetterJobName}", "0190f2a4-0000-7000-8000-000000000001")
        .replace("{uploadToken}", "no-such-token")
    )


def _signed(path: str) -> bool:
    """Routes whose credential is a signature, not a token: stamp sheets/tasks, signed login, signed file URLs."""
    return path.startswith("/job-queue/stamp") or path == "/auth/login/signed" or path.endswith(("/data", "/report"))


def test_auth_on_every_gs2_route(live: LiveServer) -> None:
    """No token → 401 everywhere; a user token → 401 on admin routes (push too), 404 on another user's queue, and the
    `/user/me` routes need it in X-GS2-ACCESS-TOKEN. Every refusal is in GS2's error format."""
    operations = _gs2_operations(live)
    assert len(operations) >= 20
    alice = live.user_token("alice")
    anonymous = live.client()
    as_alice = live.client(alice)
    for method, path in operations:
        url = _concrete(path)
        body = {"content": b"{}", "headers": {"Content-Type": "application/json"}} if method in ("POST", "PUT") else {}
        denied = anonymous.request(method, url, **body)  # type: ignore[arg-type]
        if _signed(path) or "/upload/" in path:
            assert denied.status_code in (400, 404), (method, path, denied.text)  # refused, and no data
            assert json.loads(denied.json()["message"])[0]["component"], (method, path)
            continue
        assert denied.status_code == 401, (method, path, denied.text)
        assert json.loads(denied.json()["message"])[0]["component"], (method, path)
        if path.startswith("/identifier"):
            continue
        answer = as_alice.request(method, url, **body)  # type: ignore[arg-type]
        # the access matrix: admin-only operations (push included) and `user/me` without X-GS2-ACCESS-TOKEN
        # are 401, another user's queue is 404
        expected = 404 if MATRIX[(method, path)].kind is Kind.GS2_USER else 401
        assert answer.status_code == expected, (method, path, answer.text)
        assert "message" in answer.json()
