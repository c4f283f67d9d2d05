"""Issue 11 item 6: GS2-Gateway, driven by the OFFICIAL `gs2` SDK's own WebSocket session (`Gs2WebSocketSession`)
and its gateway/job-queue clients against a real `conveyor serve` process, on SQLite and on PostgreSQL.

Login handshake (client id/secret) · set_user_id binds the session · a push by user id through REST reaches that
user's session as GS2's notification (OnPushNotification), a Run as OnRunNotification · another user's session gets
nothing · notifications off in the namespace → nothing · send_notification arrives · disconnect_by_user_id closes
the session · the job-queue API over the WebSocket client · allow_concurrent_access.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gs2.core import BasicGs2Credential, Gs2RestSession, ProjectTokenGs2Credential
from gs2.core.exception import BadRequestException, ConflictException, NotFoundException, UnauthorizedException
from gs2.core.web_socket import Gs2WebSocketSession
from gs2.gateway import Gs2GatewayRestClient, Gs2GatewayWebSocketClient
from gs2.gateway import request as gw
from gs2.job_queue import Gs2JobQueueRestClient, Gs2JobQueueWebSocketClient
from gs2.job_queue import request as jq
from gs2.job_queue.model import JobEntry, NotificationSetting

from tests.conftest import backend
from tests.server.test_serve_process import ServeProcess

ADMIN = "cva_gateway-admin-token"
REGION = "ap-northeast-1"
OWNER = "owner-gw"


class Session(Gs2WebSocketSession):
    """The SDK's session; a game keeps notifications by overriding `on_notification` (the SDK's hook)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.notifications: list[dict[str, Any]] = []
        self.seen = threading.Event()

    def on_notification(self, message: Any) -> None:
        self.notifications.append(message)
        self.seen.set()

    def wait_for(self, issuer: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for n in self.notifications:
                if n.get("issuer") == issuer:
                    return n
            time.sleep(0.02)
        raise AssertionError(f"no {issuer} notification within {timeout} s; got {self.notifications}")


@pytest.fixture(params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServeProcess]:
    module = backend(request.param)
    url = module.fresh_url(tmp_path)
    env = {
        "CONVEYOR_ADMIN_TOKEN": ADMIN,
        "CONVEYOR_URL": url,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    process = ServeProcess(
        url,
        "--no-worker",
        "--gs2-region",
        REGION,
        "--gs2-owner-id",
        OWNER,
        env=env,
        global_args=("--app", "tests.server.gs2_scenario_app:app"),
    )
    try:
        yield process
    finally:
        process.stop()
        asyncio.run(module.cleanup(url))


@pytest.fixture
def rest(served: ServeProcess) -> Iterator[Gs2RestSession]:
    s = Gs2RestSession(ProjectTokenGs2Credential(OWNER, ADMIN), REGION, steady_endpoint=served.base_url)
    s.connect()
    try:
        yield s
    finally:
        s.disconnect()


@pytest.fixture
def connect(served: ServeProcess) -> Iterator[Callable[..., Session]]:
    sessions: list[Session] = []

    def make(client_id: str = "game-server", secret: str = ADMIN) -> Session:
        s = Session(BasicGs2Credential(client_id, secret), REGION, steady_endpoint=served.base_url)
        s.connect()  # the login handshake: identifier/projectToken/login over the WebSocket
        sessions.append(s)
        return s

    yield make
    for s in sessions:
        s.disconnect()


def _token(rest: Gs2RestSession, user: str) -> str:
    from gs2.auth import Gs2AuthRestClient
    from gs2.auth.request import LoginRequest

    token: str = Gs2AuthRestClient(rest).login(LoginRequest().with_user_id(user)).token
    return token


def _setup(rest: Gs2RestSession, ns: str = "game", *, push: bool = True, run: bool = True) -> None:
    gateway = Gs2GatewayRestClient(rest)
    gateway.create_namespace(gw.CreateNamespaceRequest().with_name("gw"))
    gw_id = f"grn:gs2:{REGION}:{OWNER}:gateway:gw"
    jobs = Gs2JobQueueRestClient(rest)
    jobs.create_namespace(
        jq.CreateNamespaceRequest()
        .with_name(ns)
        .with_push_notification(
            NotificationSetting().with_gateway_namespace_id(gw_id).with_enable("Enabled" if push else "Disabled")
        )
        .with_run_notification(
            NotificationSetting().with_gateway_namespace_id(gw_id).with_enable("Enabled" if run else "Disabled")
        )
    )


def _bind(session: Session, token: str, **options: Any) -> Any:
    request = gw.SetUserIdRequest().with_namespace_name("gw").with_access_token(token)
    if "allow" in options:
        request = request.with_allow_concurrent_access(options["allow"])
    if "force" in options:
        request = request.with_force(options["force"])
    return Gs2GatewayWebSocketClient(session).set_user_id(request).item


def _closed(session: Session, timeout: float = 10.0) -> bool:
    """Whether the SDK saw its socket closed by the server within `timeout`."""
    deadline = time.monotonic() + timeout
    while session.connection is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    return session.connection is None


def _push(rest: Gs2RestSession, user: str, ns: str = "game") -> Any:
    return Gs2JobQueueRestClient(rest).push_by_user_id(
        jq.PushByUserIdRequest()
        .with_namespace_name(ns)
        .with_user_id(user)
        .with_jobs([JobEntry().with_script_id("grant").with_args('{"item": "sword"}')])
    )


def test_push_and_run_reach_the_users_session_only(rest: Gs2RestSession, connect: Callable[..., Session]) -> None:
    _setup(rest)
    alice, bob = connect(), connect()
    assert alice.project_token == ADMIN  # the handshake's answer became the session's project token
    bound = _bind(alice, _token(rest, "alice"))
    assert bound.user_id == "alice" and bound.namespace_name == "gw" and bound.connection_id
    _bind(bob, _token(rest, "bob"))

    pushed = _push(rest, "alice").items[0]
    note = alice.wait_for("Gs2JobQueue:PushNotification")
    assert json.loads(note["payload"]) == {"namespaceName": "game", "userId": "alice"}

    ran = Gs2JobQueueRestClient(rest).run_by_user_id(
        jq.RunByUserIdRequest().with_namespace_name("game").with_user_id("alice")
    )
    assert ran.item.name == pushed.name and ran.result.status_code == 200
    note = alice.wait_for("Gs2JobQueue:RunNotification")
    assert json.loads(note["payload"]) == {"namespaceName": "game", "userId": "alice", "jobName": pushed.name}
    time.sleep(0.3)
    assert bob.notifications == []  # another user's session hears nothing

    # the sessions as the gateway lists them
    client = Gs2GatewayRestClient(rest)
    listed = client.describe_web_socket_sessions_by_user_id(
        gw.DescribeWebSocketSessionsByUserIdRequest().with_namespace_name("gw").with_user_id("alice")
    ).items
    assert [s.connection_id for s in listed] == [bound.connection_id]
    mine = Gs2GatewayWebSocketClient(alice).describe_web_socket_sessions(
        gw.DescribeWebSocketSessionsRequest().with_namespace_name("gw").with_access_token(_token(rest, "alice"))
    )
    assert [s.user_id for s in mine.items] == ["alice"]


def test_notifications_off_in_the_namespace_send_nothing(rest: Gs2RestSession, connect: Callable[..., Session]) -> None:
    _setup(rest, push=False, run=False)
    alice = connect()
    _bind(alice, _token(rest, "alice"))
    _push(rest, "alice")
    Gs2JobQueueRestClient(rest).run_by_user_id(
        jq.RunByUserIdRequest().with_namespace_name("game").with_user_id("alice")
    )
    time.sleep(0.5)
    assert alice.notifications == []


def test_send_notification_and_disconnect_by_user_id(rest: Gs2RestSession, connect: Callable[..., Session]) -> None:
    _setup(rest)
    alice, bob = connect(), connect()
    _bind(alice, _token(rest, "alice"))
    _bind(bob, _token(rest, "bob"))
    client = Gs2GatewayRestClient(rest)
    sent = client.send_notification(
        gw.SendNotificationRequest()
        .with_namespace_name("gw")
        .with_user_id("alice")
        .with_subject("mail")
        .with_payload('{"n": 1}')
    )
    assert sent.protocol == "websocket" and len(sent.send_connection_ids) == 1
    note = alice.wait_for("Gs2Gateway:SendNotification")
    assert note["subject"] == "mail" and note["payload"] == '{"n": 1}'

    # the same over the WebSocket client of the admin's own session
    server = connect()
    Gs2GatewayWebSocketClient(server).send_notification(
        gw.SendNotificationRequest().with_namespace_name("gw").with_user_id("bob").with_subject("hi").with_payload("x")
    )
    assert bob.wait_for("Gs2Gateway:SendNotification")["subject"] == "hi"
    assert [n for n in alice.notifications if n["subject"] == "hi"] == []

    gone = client.disconnect_by_user_id(gw.DisconnectByUserIdRequest().with_namespace_name("gw").with_user_id("alice"))
    assert [s.user_id for s in gone.items] == ["alice"]
    deadline = time.monotonic() + 10
    while alice.connection is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alice.connection is None  # the SDK saw the server close it
    assert bob.connection is not None
    left = client.describe_web_socket_sessions_by_user_id(
        gw.DescribeWebSocketSessionsByUserIdRequest().with_namespace_name("gw").with_user_id("alice")
    )
    assert left.items == []


def test_job_queue_calls_over_the_web_socket_client(rest: Gs2RestSession, connect: Callable[..., Session]) -> None:
    ws = Gs2JobQueueWebSocketClient(connect())
    ws.create_namespace(jq.CreateNamespaceRequest().with_name("wsq"))
    assert ws.get_namespace(jq.GetNamespaceRequest().with_namespace_name("wsq")).item.name == "wsq"
    assert ws.get_service_version(jq.GetServiceVersionRequest()).item
    pushed = ws.push_by_user_id(
        jq.PushByUserIdRequest()
        .with_namespace_name("wsq")
        .with_user_id("carol")
        .with_jobs([JobEntry().with_script_id("grant").with_args('{"item":  "bow"}')])
    ).items
    assert pushed[0].args == '{"item":  "bow"}'  # the exact text, as over REST
    listed = ws.describe_jobs_by_user_id(
        jq.DescribeJobsByUserIdRequest().with_namespace_name("wsq").with_user_id("carol")
    )
    assert [j.name for j in listed.items] == [pushed[0].name]
    # Run with the player's access token (the "me" call) over the same socket
    ran = ws.run(jq.RunRequest().with_namespace_name("wsq").with_access_token(_token(rest, "carol")))
    assert ran.item.name == pushed[0].name and ran.is_last_job is True
    result = ws.get_job_result_by_user_id(
        jq.GetJobResultByUserIdRequest().with_namespace_name("wsq").with_user_id("carol").with_job_name(ran.item.name)
    ).item
    assert result.status_code == 200 and json.loads(result.result)["granted"] == "bow"
    # errors come back as the SDK's exceptions, with GS2's error list
    with pytest.raises(NotFoundException) as caught:
        ws.get_namespace(jq.GetNamespaceRequest().with_namespace_name("nope"))
    assert caught.value.errors[0].component == "namespace"
    with pytest.raises(UnauthorizedException):  # Run needs the player's token, as over REST
        ws.run(jq.RunRequest().with_namespace_name("wsq"))

    # a user token as client secret: user calls work, admin calls are refused as over REST
    player = Gs2JobQueueWebSocketClient(connect("dave", _token(rest, "dave")))
    with pytest.raises(UnauthorizedException):
        player.push_by_user_id(
            jq.PushByUserIdRequest()
            .with_namespace_name("wsq")
            .with_user_id("dave")
            .with_jobs([JobEntry().with_script_id("grant")])
        )
    assert (
        player.describe_jobs_by_user_id(
            jq.DescribeJobsByUserIdRequest().with_namespace_name("wsq").with_user_id("dave")
        ).items
        == []
    )


def test_login_with_a_bad_secret_is_refused(served: ServeProcess) -> None:
    s = Session(BasicGs2Credential("x", "not-a-token"), REGION, steady_endpoint=served.base_url)
    with pytest.raises(UnauthorizedException):
        s.connect()


def test_concurrent_access_rules(rest: Gs2RestSession, connect: Callable[..., Session]) -> None:
    _setup(rest)
    token = _token(rest, "erin")
    first, second = connect(), connect()
    _bind(first, token, allow=False)
    with pytest.raises(ConflictException):
        _bind(second, token, allow=False)
    _bind(second, token, allow=False, force=True)  # force disconnects the first
    deadline = time.monotonic() + 10
    while first.connection is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.connection is None
    third = connect()
    with pytest.raises(ConflictException):  # the bound session disallowed concurrency
        _bind(third, token)
    # over plain HTTP there is no connection to bind
    with pytest.raises(BadRequestException):
        Gs2GatewayRestClient(rest).set_user_id_by_user_id(
            gw.SetUserIdByUserIdRequest().with_namespace_name("gw").with_user_id("erin")
        )
    with pytest.raises(NotFoundException):
        Gs2GatewayRestClient(rest).get_namespace(gw.GetNamespaceRequest().with_namespace_name("nope"))


async def test_async_twins_disconnect_all_and_auth_over_the_socket(
    rest: Gs2RestSession, connect: Callable[..., Session]
) -> None:
    from gs2.auth import Gs2AuthWebSocketClient
    from gs2.auth.request import LoginRequest

    _setup(rest)
    server = connect()
    # GS2-Auth over the socket: the game server obtains a player's token
    token = Gs2AuthWebSocketClient(server).login(LoginRequest().with_user_id("frank")).token
    player = connect()
    gateway = Gs2GatewayWebSocketClient(player)
    bound = (
        await gateway.set_user_id_async(gw.SetUserIdRequest().with_namespace_name("gw").with_access_token(token))
    ).item
    assert bound.user_id == "frank"
    jobs = Gs2JobQueueWebSocketClient(server)
    await jobs.push_by_user_id_async(
        jq.PushByUserIdRequest()
        .with_namespace_name("game")
        .with_user_id("frank")
        .with_jobs([JobEntry().with_script_id("grant")])
    )
    assert json.loads(player.wait_for("Gs2JobQueue:PushNotification")["payload"])["userId"] == "frank"
    # the namespace settings as GS2 echoes them, changed over the socket: run notifications off
    jobs_ns = await jobs.get_namespace_async(jq.GetNamespaceRequest().with_namespace_name("game"))
    assert jobs_ns.item.run_notification.enable == "Enabled"
    await jobs.update_namespace_async(
        jq.UpdateNamespaceRequest()
        .with_namespace_name("game")
        .with_run_notification(NotificationSetting().with_enable("Disabled"))
    )
    await asyncio.sleep(1.1)  # the hub re-reads a namespace's settings within a second
    await jobs.run_async(jq.RunRequest().with_namespace_name("game").with_access_token(token))
    await asyncio.sleep(0.5)
    assert [n for n in player.notifications if n["issuer"] == "Gs2JobQueue:RunNotification"] == []

    updated = Gs2GatewayWebSocketClient(server).update_namespace(
        gw.UpdateNamespaceRequest().with_namespace_name("gw").with_description("players")
    )
    assert updated.item.description == "players" and updated.item.revision == 1
    listed = Gs2GatewayRestClient(rest).describe_namespaces(gw.DescribeNamespacesRequest())
    assert [n.name for n in listed.items] == ["gw"]
    Gs2GatewayRestClient(rest).disconnect_all(gw.DisconnectAllRequest().with_namespace_name("gw"))
    assert await asyncio.to_thread(_closed, player)
    assert server.connection is not None  # never bound: not a session of the namespace


def test_a_job_run_by_the_servers_worker_notifies(tmp_path: Path) -> None:
    """With auto-run on, the worker of `conveyor serve` runs the job and its run event reaches the session (and
    no push notification: GS2 applies pushNotification only to namespaces consumed by Run)."""
    module = backend("sqlite")
    url = module.fresh_url(tmp_path)
    env = {"CONVEYOR_ADMIN_TOKEN": ADMIN, "CONVEYOR_URL": url, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = ServeProcess(url, env=env, global_args=("--app", "tests.server.gs2_scenario_app:app"))
    try:
        rest = Gs2RestSession(ProjectTokenGs2Credential(OWNER, ADMIN), REGION, steady_endpoint=process.base_url)
        rest.connect()
        Gs2GatewayRestClient(rest).create_namespace(gw.CreateNamespaceRequest().with_name("gw"))
        Gs2JobQueueRestClient(rest).create_namespace(
            jq.CreateNamespaceRequest()
            .with_name("auto")
            .with_enable_auto_run(True)
            .with_push_notification(NotificationSetting().with_enable("Enabled"))
            .with_run_notification(NotificationSetting().with_enable("Enabled"))
        )
        session = Session(BasicGs2Credential("game", ADMIN), REGION, steady_endpoint=process.base_url)
        session.connect()
        try:
            _bind(session, _token(rest, "gina"))
            pushed = _push(rest, "gina", ns="auto").items[0]
            note = session.wait_for("Gs2JobQueue:RunNotification", timeout=20)
            assert json.loads(note["payload"])["jobName"] == pushed.name
            # GS2: pushNotification applies only when auto-run is off; here the run is what the client hears
            assert [n for n in session.notifications if n["issuer"] == "Gs2JobQueue:PushNotification"] == []
        finally:
            session.disconnect()
            rest.disconnect()
    finally:
        process.stop()
        asyncio.run(module.cleanup(url))


def test_firebase_tokens_are_kept_and_mobile_push_is_refused(
    rest: Gs2RestSession, connect: Callable[..., Session]
) -> None:
    _setup(rest)
    token = _token(rest, "hana")
    player = Gs2GatewayWebSocketClient(connect())
    kept = player.set_firebase_token(
        gw.SetFirebaseTokenRequest().with_namespace_name("gw").with_access_token(token).with_token("device-1")
    ).item
    assert kept.user_id == "hana" and kept.token == "device-1"
    admin = Gs2GatewayRestClient(rest)
    read = admin.get_firebase_token_by_user_id(
        gw.GetFirebaseTokenByUserIdRequest().with_namespace_name("gw").with_user_id("hana")
    ).item
    assert read.token == "device-1"
    with pytest.raises(BadRequestException) as caught:
        admin.send_mobile_notification_by_user_id(
            gw.SendMobileNotificationByUserIdRequest().with_namespace_name("gw").with_user_id("hana").with_subject("s")
        )
    assert caught.value.errors[0].component == "firebase"
    player.delete_firebase_token(gw.DeleteFirebaseTokenRequest().with_namespace_name("gw").with_access_token(token))
    with pytest.raises(NotFoundException):
        player.get_firebase_token(gw.GetFirebaseTokenRequest().with_namespace_name("gw").with_access_token(token))


def test_gateway_user_data_dump_clean_import(rest: Gs2RestSession, connect: Callable[..., Session]) -> None:
    import httpx

    _setup(rest)
    admin = Gs2GatewayRestClient(rest)
    token = _token(rest, "ivy")
    player = connect()
    _bind(player, token)
    admin.set_firebase_token_by_user_id(
        gw.SetFirebaseTokenByUserIdRequest().with_namespace_name("gw").with_user_id("ivy").with_token("device-9")
    )
    _push(rest, "ivy")  # job-queue data of the same user: a separate dump
    admin.dump_user_data_by_user_id(gw.DumpUserDataByUserIdRequest().with_user_id("ivy"))
    url = admin.check_dump_user_data_by_user_id(gw.CheckDumpUserDataByUserIdRequest().with_user_id("ivy")).url
    document = httpx.get(url, timeout=10).json()
    assert [(t["namespaceName"], t["token"]) for t in document["firebaseTokens"]] == [("gw", "device-9")]
    assert [s["userId"] for s in document["webSocketSessions"]] == ["ivy"]
    jobs = Gs2JobQueueRestClient(rest)
    jobs.dump_user_data_by_user_id(jq.DumpUserDataByUserIdRequest().with_user_id("ivy"))
    job_dump = jobs.check_dump_user_data_by_user_id(jq.CheckDumpUserDataByUserIdRequest().with_user_id("ivy")).url
    assert "firebaseTokens" not in httpx.get(job_dump, timeout=10).json()

    admin.clean_user_data_by_user_id(gw.CleanUserDataByUserIdRequest().with_user_id("ivy"))
    admin.check_clean_user_data_by_user_id(gw.CheckCleanUserDataByUserIdRequest().with_user_id("ivy"))
    assert _closed(player)
    with pytest.raises(NotFoundException):
        admin.get_firebase_token_by_user_id(
            gw.GetFirebaseTokenByUserIdRequest().with_namespace_name("gw").with_user_id("ivy")
        )
    # the job queue's data is the job queue's: the gateway's clean left the job
    left = jobs.describe_jobs_by_user_id(
        jq.DescribeJobsByUserIdRequest().with_namespace_name("game").with_user_id("ivy")
    )
    assert len(left.items) == 1

    prepared = admin.prepare_import_user_data_by_user_id(gw.PrepareImportUserDataByUserIdRequest().with_user_id("ivy"))
    assert httpx.put(prepared.upload_url, content=json.dumps(document).encode(), timeout=10).status_code == 200
    admin.import_user_data_by_user_id(
        gw.ImportUserDataByUserIdRequest().with_user_id("ivy").with_upload_token(prepared.upload_token)
    )
    assert admin.check_import_user_data_by_user_id(
        gw.CheckImportUserDataByUserIdRequest().with_user_id("ivy").with_upload_token(prepared.upload_token)
    ).url
    back = admin.get_firebase_token_by_user_id(
        gw.GetFirebaseTokenByUserIdRequest().with_namespace_name("gw").with_user_id("ivy")
    ).item
    assert back.token == "device-9"
    # another user's dump is refused
    other = admin.prepare_import_user_data_by_user_id(gw.PrepareImportUserDataByUserIdRequest().with_user_id("jack"))
    httpx.put(other.upload_url, content=json.dumps(document).encode(), timeout=10)
    with pytest.raises(BadRequestException):
        admin.import_user_data_by_user_id(
            gw.ImportUserDataByUserIdRequest().with_user_id("jack").with_upload_token(other.upload_token)
        )


def test_the_socket_answers_bad_messages_in_gs2s_format_and_keeps_going(served: ServeProcess) -> None:
    import websocket

    conn = websocket.create_connection(served.base_url.replace("http://", "ws://") + "/", timeout=10)
    try:

        def ask(message: dict[str, Any], *, binary: bool = False) -> dict[str, Any]:
            text = json.dumps(message)
            if binary:
                conn.send_binary(text.encode())
            else:
                conn.send(text)
            answer: dict[str, Any] = json.loads(conn.recv())
            return answer

        conn.send("not json")  # nothing to answer to: no requestId
        unknown = ask({"x_gs2": {"service": "jobQueue", "function": "noSuchCall", "requestId": "r1"}})
        assert unknown["requestId"] == "r1" and unknown["status"] == 404
        assert json.loads(unknown["body"]["message"])[0]["component"] == "operation"
        meta = {"service": "jobQueue", "component": "namespace", "function": "getServiceVersion", "requestId": "r2"}
        no_token = ask({"x_gs2": meta})
        assert no_token["status"] == 401
        ok = ask({"x_gs2": {**meta, "requestId": "r3"}, "xGs2ProjectToken": ADMIN}, binary=True)
        assert ok["status"] == 200 and ok["body"]["item"]
    finally:
        conn.close()
