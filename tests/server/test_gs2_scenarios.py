"""Issue 11 scenarios, one per item, driven by the OFFICIAL `gs2` SDK (REST, sync and async) against a real
`conveyor serve` process, on SQLite and on PostgreSQL (CI runs both).

1 Run semantics · 3 GRNs from configuration · 4 args kept exactly · 5 GS2-Auth login · 7 stamp sheets/tasks
8 user data dump/clean/import · 9 dead letters of older SDKs (their exact wire calls through the SDK's session)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gs2.auth import Gs2AuthRestClient
from gs2.auth.request import LoginBySignatureRequest, LoginRequest
from gs2.core import Gs2RestSession, ProjectTokenGs2Credential
from gs2.core.exception import BadRequestException, NotFoundException, UnauthorizedException
from gs2.job_queue import Gs2JobQueueRestClient
from gs2.job_queue.model import JobEntry
from gs2.job_queue.request import (
    CheckCleanUserDataByUserIdRequest,
    CheckDumpUserDataByUserIdRequest,
    CheckImportUserDataByUserIdRequest,
    CleanUserDataByUserIdRequest,
    CreateNamespaceRequest,
    DeleteByStampTaskRequest,
    DescribeJobsByUserIdRequest,
    DumpUserDataByUserIdRequest,
    GetJobByUserIdRequest,
    GetJobResultByUserIdRequest,
    GetNamespaceRequest,
    ImportUserDataByUserIdRequest,
    PrepareImportUserDataByUserIdRequest,
    PushByStampSheetRequest,
    PushByUserIdRequest,
    RunByUserIdRequest,
    RunRequest,
)

from tests.conftest import backend
from tests.server.test_serve_process import ServeProcess

ADMIN = "cva_scenario-admin-token"
REGION = "eu-west-9"
OWNER = "owner-7788"


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
        "--no-worker",  # Run consumes these namespaces; see the report on a worker racing a new namespace
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
def session(served: ServeProcess) -> Iterator[Gs2RestSession]:
    s = Gs2RestSession(ProjectTokenGs2Credential(OWNER, ADMIN), REGION, steady_endpoint=served.base_url)
    s.connect()
    try:
        yield s
    finally:
        s.disconnect()


def _ns(client: Gs2JobQueueRestClient, name: str) -> Any:
    return client.create_namespace(CreateNamespaceRequest().with_name(name)).item


def _push(client: Gs2JobQueueRestClient, ns: str, user: str, *entries: JobEntry) -> Any:
    return client.push_by_user_id(
        PushByUserIdRequest().with_namespace_name(ns).with_user_id(user).with_jobs(list(entries))
    )


def _queue(client: Gs2JobQueueRestClient, ns: str, user: str) -> Any:
    return client.describe_jobs_by_user_id(DescribeJobsByUserIdRequest().with_namespace_name(ns).with_user_id(user))


def _entry(script: str, args: str = "{}", tries: int | None = None) -> JobEntry:
    entry = JobEntry().with_script_id(script).with_args(args)
    return entry if tries is None else entry.with_max_try_count(tries)


def _admin_api(served: ServeProcess) -> httpx.Client:
    return httpx.Client(base_url=served.base_url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)


def test_item1_run_loop_runs_a_failed_head_again_and_stops_only_when_the_queue_is_empty(
    session: Gs2RestSession,
) -> None:
    client = Gs2JobQueueRestClient(session)
    _ns(client, "game")
    flaky = _push(client, "game", "alice", _entry("flaky"), _entry("grant", '{"item": "gem"}')).items
    seen = []
    for _ in range(10):  # what GS2 tells a client to do: Run until isLastJob
        answer = client.run_by_user_id(RunByUserIdRequest().with_namespace_name("game").with_user_id("alice"))
        seen.append((answer.item.name, answer.result.status_code))
        if answer.is_last_job:
            break
    assert seen == [(flaky[0].name, 500), (flaky[0].name, 200), (flaky[1].name, 200)]
    left = client.describe_jobs_by_user_id(
        DescribeJobsByUserIdRequest().with_namespace_name("game").with_user_id("alice")
    )
    assert left.items == []


async def test_item1_and_4_async_client_args_exact(session: Gs2RestSession) -> None:
    client = Gs2JobQueueRestClient(session)
    _ns(client, "async-ns")
    text = '{"item": "sword",  "n" : 1}'
    pushed = await client.push_by_user_id_async(
        PushByUserIdRequest().with_namespace_name("async-ns").with_user_id("bob").with_jobs([_entry("grant", text)])
    )
    assert pushed.items[0].args == text  # exactly as pushed (issue 11 §4)
    got = await client.get_job_by_user_id_async(
        GetJobByUserIdRequest().with_namespace_name("async-ns").with_user_id("bob").with_job_name(pushed.items[0].name)
    )
    assert got.item.args == text
    ran = await client.run_by_user_id_async(RunByUserIdRequest().with_namespace_name("async-ns").with_user_id("bob"))
    assert json.loads(ran.result.result) == {"granted": "sword", "n": 1} and ran.is_last_job is True


def test_item3_grns_follow_the_configuration(session: Gs2RestSession) -> None:
    client = Gs2JobQueueRestClient(session)
    ns = _ns(client, "grn-ns")
    assert ns.namespace_id == f"grn:gs2:{REGION}:{OWNER}:queue:grn-ns"
    job = _push(client, "grn-ns", "carol", _entry("grant")).items[0]
    assert job.job_id == f"grn:gs2:{REGION}:{OWNER}:queue:grn-ns:user:carol:job:{job.name}"
    got = client.get_namespace(GetNamespaceRequest().with_namespace_name("grn-ns")).item
    assert got.namespace_id == ns.namespace_id


def test_item5_auth_login_gives_a_token_the_me_calls_accept(served: ServeProcess, session: Gs2RestSession) -> None:
    auth = Gs2AuthRestClient(session)
    login = auth.login(LoginRequest().with_user_id("dave"))
    assert login.user_id == "dave" and login.token and login.expire > 0
    client = Gs2JobQueueRestClient(session)
    _ns(client, "me-ns")
    _push(client, "me-ns", "dave", _entry("grant", '{"item": "bow"}'))
    player_session = Gs2RestSession(ProjectTokenGs2Credential(OWNER, "any"), REGION, steady_endpoint=served.base_url)
    player_session.connect()
    try:
        player = Gs2JobQueueRestClient(player_session)
        ran = player.run(RunRequest().with_namespace_name("me-ns").with_access_token(login.token))
        assert json.loads(ran.result.result)["granted"] == "bow"
        with pytest.raises(UnauthorizedException):  # login needs the admin token
            Gs2AuthRestClient(player_session).login(LoginRequest().with_user_id("dave"))
    finally:
        player_session.disconnect()

    with _admin_api(served) as api:
        assert api.post("/api/v1/gs2/keys", json={"name": "login-key"}).status_code == 201
        signed = api.post("/api/v1/gs2/keys/login-key/login-body", json={"user_id": "erin"}).json()
    by_signature = auth.login_by_signature(
        LoginBySignatureRequest()
        .with_key_id(signed["keyId"])
        .with_body(signed["body"])
        .with_signature(signed["signature"])
    )
    assert by_signature.user_id == "erin"
    with pytest.raises(UnauthorizedException):
        auth.login_by_signature(
            LoginBySignatureRequest()
            .with_key_id(signed["keyId"])
            .with_body(signed["body"].replace("erin", "eve"))
            .with_signature(signed["signature"])
        )
    unknown = httpx.get(f"{served.base_url}/auth/no/such/route")
    assert unknown.status_code == 404 and json.loads(unknown.json()["message"])[0]["component"] == "operation"


def test_item7_stamp_sheet_pushes_exactly_once_and_a_task_deletes_once(
    served: ServeProcess, session: Gs2RestSession
) -> None:
    client = Gs2JobQueueRestClient(session)
    _ns(client, "shop")
    with _admin_api(served) as api:
        key = api.post("/api/v1/gs2/keys", json={"name": "shop-key", "namespace": "shop"}).json()
        assert key["keyId"] == f"grn:gs2:{REGION}:{OWNER}:key:shop:key:shop-key"
        issued = api.post(
            "/api/v1/gs2/stamp-sheets",
            json={
                "key": "shop-key",
                "namespace": "shop",
                "user_id": "frank",
                "jobs": [{"scriptId": "grant", "args": '{"item":  "shield"}'}],
            },
        ).json()
        elsewhere = api.post(
            "/api/v1/gs2/stamp-sheets",
            json={"key": "shop-key", "namespace": "other", "user_id": "frank", "jobs": [{"scriptId": "grant"}]},
        )
        assert elsewhere.status_code == 400  # a namespace-bound key signs for its namespace only
    request = PushByStampSheetRequest().with_stamp_sheet(issued["stampSheet"]).with_key_id(issued["keyId"])
    first = client.push_by_stamp_sheet(request)
    again = client.push_by_stamp_sheet(request)  # a replay: the first answer, no second push
    assert [j.name for j in again.items] == [j.name for j in first.items]
    assert first.items[0].args == '{"item":  "shield"}' and first.auto_run is False
    queue = client.describe_jobs_by_user_id(
        DescribeJobsByUserIdRequest().with_namespace_name("shop").with_user_id("frank")
    )
    assert len(queue.items) == 1
    envelope = json.loads(issued["stampSheet"])
    envelope["body"] = envelope["body"].replace("shield", "sword!")
    with pytest.raises(BadRequestException) as tampered:
        client.push_by_stamp_sheet(
            PushByStampSheetRequest().with_stamp_sheet(json.dumps(envelope)).with_key_id(issued["keyId"])
        )
    assert tampered.value.errors[0].component == "stampSheet"

    with _admin_api(served) as api:
        task = api.post(
            "/api/v1/gs2/stamp-tasks",
            json={"key": "shop-key", "namespace": "shop", "user_id": "frank", "job_name": first.items[0].name},
        ).json()
        api.post("/api/v1/gs2/keys/shop-key/rotate", json={"keep_previous_for": 3600})  # old sheets still verify
    delete = DeleteByStampTaskRequest().with_stamp_task(task["stampTask"]).with_key_id(task["keyId"])
    deleted = client.delete_by_stamp_task(delete)
    replay = client.delete_by_stamp_task(delete)
    assert deleted.item.name == replay.item.name == first.items[0].name
    assert json.loads(deleted.new_context_stack)["stampTaskIds"]
    with pytest.raises(NotFoundException):
        client.get_job_by_user_id(
            GetJobByUserIdRequest().with_namespace_name("shop").with_user_id("frank").with_job_name(first.items[0].name)
        )


def test_item8_user_data_dump_clean_import(served: ServeProcess, session: Gs2RestSession) -> None:
    client = Gs2JobQueueRestClient(session)
    _ns(client, "data")
    pending = _push(client, "data", "gina", _entry("grant", '{"item":   "ring"}'), _entry("broken", tries=1)).items
    client.run_by_user_id(RunByUserIdRequest().with_namespace_name("data").with_user_id("gina"))  # grant: done
    dead = client.run_by_user_id(RunByUserIdRequest().with_namespace_name("data").with_user_id("gina"))
    assert dead.result.status_code == 500  # one try only: a dead letter
    _push(client, "data", "gina", _entry("grant", '{"item":   "crown"}'))
    _push(client, "data", "hank", _entry("grant"))

    client.dump_user_data_by_user_id(DumpUserDataByUserIdRequest().with_user_id("gina"))
    url = client.check_dump_user_data_by_user_id(CheckDumpUserDataByUserIdRequest().with_user_id("gina")).url
    dump = httpx.get(url).json()  # served by Conveyor, signed: no header needed
    assert dump["userId"] == "gina" and len(dump["jobs"]) == 3
    assert dump["deadLetterJobs"] == [pending[1].name]
    assert all(j["attemptRecords"] for j in dump["jobs"] if j["status"] != "pending")
    assert httpx.get(url.replace("signature=", "signature=0")).status_code == 404

    client.clean_user_data_by_user_id(CleanUserDataByUserIdRequest().with_user_id("gina"))
    client.check_clean_user_data_by_user_id(CheckCleanUserDataByUserIdRequest().with_user_id("gina"))
    gone = client.describe_jobs_by_user_id(
        DescribeJobsByUserIdRequest().with_namespace_name("data").with_user_id("gina")
    )
    assert gone.items == []
    assert httpx.get(url).json()["userId"] == "gina"  # the dump outlives the clean
    others = client.describe_jobs_by_user_id(
        DescribeJobsByUserIdRequest().with_namespace_name("data").with_user_id("hank")
    )
    assert len(others.items) == 1

    prepared = client.prepare_import_user_data_by_user_id(PrepareImportUserDataByUserIdRequest().with_user_id("gina"))
    assert httpx.put(prepared.upload_url, content=json.dumps(dump)).status_code == 200
    client.import_user_data_by_user_id(
        ImportUserDataByUserIdRequest().with_user_id("gina").with_upload_token(prepared.upload_token)
    )
    report_url = client.check_import_user_data_by_user_id(
        CheckImportUserDataByUserIdRequest().with_user_id("gina").with_upload_token(prepared.upload_token)
    ).url
    report = httpx.get(report_url).json()
    restored = client.describe_jobs_by_user_id(
        DescribeJobsByUserIdRequest().with_namespace_name("data").with_user_id("gina")
    )
    assert [j.args for j in restored.items] == ['{"item":   "crown"}']  # the queue: the one pending job
    assert report["restored"] == [j["id"] for j in dump["jobs"]]  # and everything else: history, dead letters
    # dump → clean → import restores everything exactly: a new dump is the old one, job for job, try for try
    client.dump_user_data_by_user_id(DumpUserDataByUserIdRequest().with_user_id("gina"))
    again = httpx.get(
        client.check_dump_user_data_by_user_id(CheckDumpUserDataByUserIdRequest().with_user_id("gina")).url
    ).json()
    assert again["jobs"] == dump["jobs"] and again["deadLetterJobs"] == dump["deadLetterJobs"]
    done = client.get_job_result_by_user_id(
        GetJobResultByUserIdRequest().with_namespace_name("data").with_user_id("gina").with_job_name(pending[0].name)
    ).item
    assert done.status_code == 200 and json.loads(done.result) == {"granted": "ring", "n": 1}
    # importing the same dump again changes nothing
    twice = client.prepare_import_user_data_by_user_id(PrepareImportUserDataByUserIdRequest().with_user_id("gina"))
    httpx.put(twice.upload_url, content=json.dumps(dump))
    client.import_user_data_by_user_id(
        ImportUserDataByUserIdRequest().with_user_id("gina").with_upload_token(twice.upload_token)
    )
    second = httpx.get(
        client.check_import_user_data_by_user_id(
            CheckImportUserDataByUserIdRequest().with_user_id("gina").with_upload_token(twice.upload_token)
        ).url
    ).json()
    assert second["restored"] == [] and sorted(second["alreadyPresent"]) == sorted(report["restored"])

    # a dump of another user is refused, and nothing changes
    other = client.prepare_import_user_data_by_user_id(PrepareImportUserDataByUserIdRequest().with_user_id("hank"))
    httpx.put(other.upload_url, content=json.dumps(dump))
    with pytest.raises(BadRequestException):
        client.import_user_data_by_user_id(
            ImportUserDataByUserIdRequest().with_user_id("hank").with_upload_token(other.upload_token)
        )


def test_item9_dead_letter_calls_of_older_sdks(served: ServeProcess, session: Gs2RestSession) -> None:
    """SDKs 2022-08…2024-12 had describe/get/delete_dead_letter_job_by_user_id: the same paths, through the
    current SDK's own REST session (its headers, gzip and error parsing)."""
    from gs2.core import rest
    from gs2.core.model import Gs2Result

    class Raw(Gs2Result):
        def __init__(self, data: dict[str, Any] | None = None) -> None:
            self.data = data

        @staticmethod
        def from_dict(data: dict[str, Any]) -> Raw:
            return Raw(data)

    def call(method: str, path: str) -> Any:
        box: list[Any] = []
        job = rest.NetworkJob(
            url=f"{served.base_url}/job-queue{path}",
            method=method,
            result_type=Raw,
            callback=box.append,
            headers={"Authorization": f"Bearer {ADMIN}", "X-GS2-CLIENT-ID": OWNER},
        )
        session.send(job=job, is_blocking=True)
        if box[0].error:
            raise box[0].error
        return box[0].result.data

    client = Gs2JobQueueRestClient(session)
    _ns(client, "dl")
    job = _push(client, "dl", "ivy", _entry("broken", tries=1)).items[0]
    client.run_by_user_id(RunByUserIdRequest().with_namespace_name("dl").with_user_id("ivy"))
    listed = call("GET", "/dl/user/ivy/dead")
    assert [d["name"] for d in listed["items"]] == [job.name]
    assert listed["items"][0]["deadLetterJobId"] == f"grn:gs2:{REGION}:{OWNER}:queue:dl:user:ivy:dead:{job.name}"
    assert call("GET", f"/dl/user/ivy/dead/{job.name}")["item"]["result"][0]["statusCode"] == 500
    assert call("DELETE", f"/dl/user/ivy/dead/{job.name}")["item"]["name"] == job.name
    with pytest.raises(NotFoundException):
        call("GET", f"/dl/user/ivy/dead/{job.name}")


def test_cli_users_dump_clean_import(served: ServeProcess, session: Gs2RestSession, tmp_path: Path) -> None:
    import subprocess
    import sys

    client = Gs2JobQueueRestClient(session)
    _ns(client, "cli")
    _push(client, "cli", "jo", _entry("grant", '{"a":  1}'))
    store = served.store_url
    out = tmp_path / "jo.json"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "conveyor.cli", "--store", store, "users", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert cli("dump", "jo", "--output", str(out)).returncode == 0
    assert json.loads(out.read_text())["jobs"][0]["payloadJson"] == '{"a":  1}'
    cleaned = cli("clean", "jo", "--yes")
    assert cleaned.returncode == 0, cleaned.stderr
    assert (
        client.describe_jobs_by_user_id(
            DescribeJobsByUserIdRequest().with_namespace_name("cli").with_user_id("jo")
        ).items
        == []
    )
    assert cli("import", "someone-else", str(out)).returncode != 0
    assert cli("import", "jo", str(out)).returncode == 0
    back = _queue(client, "cli", "jo")
    assert [j.args for j in back.items] == ['{"a":  1}']


def test_item2_page_tokens_are_keyset_cursors(served: ServeProcess, session: Gs2RestSession) -> None:
    """Page 1 was [1, 2] with token "2"; a Run consumed job 1; page 2 came back empty and job 3 was never listed.
    With keyset cursors a Run or a push between pages never makes a page skip or repeat a job."""
    client = Gs2JobQueueRestClient(session)
    _ns(client, "pages")
    pushed = [
        j.name for j in _push(client, "pages", "lena", *[_entry("grant", f'{{"n": {i}}}') for i in range(5)]).items
    ]

    def page(token: str | None) -> Any:
        request = DescribeJobsByUserIdRequest().with_namespace_name("pages").with_user_id("lena").with_limit(2)
        return client.describe_jobs_by_user_id(request if token is None else request.with_page_token(token))

    first = page(None)
    assert [j.name for j in first.items] == pushed[:2] and first.next_page_token
    run = client.run_by_user_id(RunByUserIdRequest().with_namespace_name("pages").with_user_id("lena"))
    assert run.item.name == pushed[0]  # job 1 consumed between pages
    second = page(first.next_page_token)
    assert [j.name for j in second.items] == pushed[2:4]  # job 3 is listed, nothing repeats
    later = _push(client, "pages", "lena", _entry("grant")).items[0].name  # a push between pages
    third = page(second.next_page_token)
    assert [j.name for j in third.items] == [pushed[4], later]
    assert third.next_page_token is None

    # tokens are opaque and checked: a tampered or made-up one is a 400 naming pageToken
    for bad in ("2", "p" + first.next_page_token[2:-3], "garbage!", "p" + "A" * 40):
        with pytest.raises(BadRequestException) as refused:
            page(bad)
        assert refused.value.errors[0].component == "pageToken"

    # namespaces page by name the same way
    for name in ("pages-b", "pages-a"):
        _ns(client, name)
    from gs2.job_queue.request import DescribeNamespacesRequest

    names: list[str] = []
    token = None
    while True:
        request = DescribeNamespacesRequest().with_name_prefix("pages").with_limit(1)
        answer = client.describe_namespaces(request if token is None else request.with_page_token(token))
        names += [n.name for n in answer.items]
        token = answer.next_page_token
        if token is None:
            break
    assert names == ["pages", "pages-a", "pages-b"]

    # the HTTP API's lists: next_cursor, and a bad cursor is a 400 naming the parameter
    with _admin_api(served) as api:
        listed = api.get("/api/v1/jobs", params={"user_id": "lena", "status": "pending", "limit": 2, "sort": "created"})
        body = listed.json()
        assert [j["id"] for j in body["items"]] == pushed[1:3] and body["next_cursor"]
        more = api.get(
            "/api/v1/jobs",
            params={"user_id": "lena", "status": "pending", "sort": "created", "cursor": body["next_cursor"]},
        ).json()
        assert [j["id"] for j in more["items"]] == [pushed[3], pushed[4], later] and more["next_cursor"] is None
        for bad in ("not-a-cursor", body["next_cursor"][:-4] + "AAAA"):
            refused = api.get("/api/v1/jobs", params={"cursor": bad, "sort": "created"})
            assert refused.status_code == 400 and refused.json()["field"] == "cursor", refused.text
        other_order = api.get("/api/v1/jobs", params={"cursor": body["next_cursor"]})  # made for sort=created
        assert other_order.status_code == 400 and "sort" in other_order.json()["message"]
