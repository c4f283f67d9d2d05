"""Hostile and sloppy input over HTTP, on every route: no 5xx, a 400/422 that names the field, nothing written by a
refused request. Lone surrogates, NaN, bools for integers, integers for bools, numbers for times, years before
1970, huge integers, deep nesting, huge arrays, duplicate keys, wrong content types, giant query strings, unicode
in paths; PocketBase's own answers (payload over 1 MB, stats.total); enqueue warnings; webhook targets."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from conveyor import Conveyor, Namespace
from conveyor.errors import Fail, ValidationError
from conveyor.model import NewJob
from conveyor.webhooks import WEBHOOK_TASK, address_problem, check_webhook_url, deliver_webhook
from tests.server.conftest import LiveServer, StartServer

JSON_HEADERS = {"Content-Type": "application/json"}


def _fingerprint(live: LiveServer) -> tuple[Any, ...]:
    """What a refused request must not change: every job, every namespace's settings."""
    s = live.app.stats()  # by status; not `scheduled`, which a clock tick changes
    namespaces = sorted((ns.name, ns.revision) for ns in live.app.list_namespaces())
    return ((s.pending, s.processing, s.completed, s.failed, s.cancelled), namespaces)


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: "default" if "amespace" in m.group() else "x1", path)


def test_a_lone_surrogate_in_any_body_is_a_400_on_every_route(server: LiveServer) -> None:
    """Walks the app's own route table: every route that takes a body answers a lone surrogate escape with 400
    naming the field (the GS2 surface in its own error format), never 5xx, and stores nothing."""
    before = _fingerprint(server)
    guard = next(m for m in server.api.user_middleware if m.cls.__name__ == "RequestGuard")
    gs2_prefixes = tuple(guard.kwargs["exempt_prefixes"])
    assert "/job-queue/" in gs2_prefixes
    paths = server.api.openapi()["paths"]  # every route the app serves (the SSE stream and UI files take no body)
    assert len(paths) > 40
    body = b'{"name": "ok", "task": "t", "topic": "t", "payload": {"k": "\\ud800"}, "user_id": "\\udfff"}'
    tried = 0
    for path, operations in paths.items():
        for method in {m.upper() for m in operations} - {"GET", "HEAD", "DELETE"}:
            tried += 1
            r = server.admin.request(method, _concrete(path), content=body, headers=JSON_HEADERS)
            assert r.status_code < 500, (method, path, r.text)
            if path.startswith(gs2_prefixes):
                continue  # GS2: its own format, and routes that take no body ignore it
            assert r.status_code == 400, (method, path, r.text)
            assert r.json()["field"] in ("payload.k", "user_id"), r.text
    assert tried > 20
    assert _fingerprint(server) == before


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/jobs/enqueue", {"topic": "t", "run_at": 123}, "run_at"),
        ("/api/jobs/enqueue", {"topic": "t", "run_at": "2026-01-01T00:00:00"}, "run_at"),  # no offset
        ("/api/jobs/enqueue", {"topic": "t", "run_at": "0001-01-01T00:00:00Z"}, "run_at"),
        ("/api/jobs/enqueue", {"topic": "t", "run_at": "2026-02-30T00:00:00Z"}, "run_at"),
        ("/api/jobs/enqueue", {"topic": "t", "max_retries": True}, "max_retries"),
        ("/api/jobs/enqueue", {"topic": "t", "max_retries": "5"}, "max_retries"),
        ("/api/jobs/enqueue", {"topic": "t", "max_retries": 2**63}, "max_retries"),
        ("/api/jobs/enqueue", {"topic": "t", "priority": 1.5}, "priority"),
        ("/api/jobs/enqueue", {"topic": "t", "delay": "10"}, "delay"),
        ("/api/jobs/enqueue", {"topic": "t", "namespace": "a/b"}, "namespace"),
        ("/api/jobs/enqueue", {"topic": 5}, "topic"),
        ("/api/jobs/enqueue", {"topic": "t", "user_id": ""}, "user_id"),
        ("/api/v1/jobs", {"task": "t", "max_attempts": True}, "max_attempts"),
        ("/api/v1/jobs", {"task": "t", "run_at": 1.5e9}, "run_at"),
        ("/api/v1/jobs", {"task": "t", "run_at": "9999-12-31T23:59:59-14:00"}, "run_at"),  # year 10000 in UTC
        ("/api/v1/jobs", {"task": "t", "run_at": "0001-01-01T00:00:00+14:00"}, "run_at"),  # year 0 in UTC
        ("/api/jobs/enqueue", {"topic": "t", "run_at": "9999-12-31T23:59:59-01:00"}, "run_at"),
        ("/api/v1/jobs", {"task": " "}, "task"),
        ("/api/v1/jobs", {"task": "t", "queue": "q" * 129}, "queue"),
        ("/api/v1/namespaces", {"name": "n1", "run_notification": 0}, "run_notification"),
        ("/api/v1/namespaces", {"name": "n1", "auto_run": "yes"}, "auto_run"),
        ("/api/v1/namespaces", {"name": "n1", "max_attempts": False}, "max_attempts"),
        ("/api/v1/tokens", {"user_id": "u", "ttl": True}, "ttl"),
    ],
)
def test_strict_types(server: LiveServer, path: str, body: dict[str, Any], field: str) -> None:
    before = _fingerprint(server)
    r = server.admin.post(path, json=body)
    assert r.status_code in (400, 422), r.text
    assert r.json()["field"] == field, r.text
    assert _fingerprint(server) == before


def test_times_round_trip_with_any_offset(server: LiveServer) -> None:
    job = server.admin.post("/api/v1/jobs", json={"task": "t", "run_at": "2030-01-02T03:04:05.123456789+09:00"})
    assert job.status_code == 201, job.text
    assert job.json()["run_at"] == "2030-01-01T18:04:05.123Z"
    pb = server.admin.post("/api/jobs/enqueue", json={"topic": "t", "run_at": "1970-01-01T00:00:00Z"})
    assert pb.status_code == 200 and pb.json()["run_at"] == "1970-01-01T00:00:00Z"


@pytest.mark.parametrize(
    "query",
    [
        "offset=9223372036854775808",
        "limit=9223372036854775808",
        "offset=" + "9" * 5000,  # Python's int() refuses more than 4300 digits
        "limit=-9223372036854775809",
    ],
)
@pytest.mark.parametrize("path", ["/api/jobs", "/api/v1/jobs", "/api/v1/dead-letters"])
def test_integer_parameters_are_bounded(server: LiveServer, path: str, query: str) -> None:
    r = server.admin.get(f"{path}?{query}")
    if path == "/api/jobs" and query.startswith("limit=-"):
        assert r.status_code == 200  # PocketBase: a non-positive limit means the default
        return
    assert r.status_code in (400, 422), r.text
    assert r.json()["field"] in ("offset", "limit")


def test_gs2_paging_and_try_numbers_are_bounded(server: LiveServer) -> None:
    server.admin.post("/api/v1/namespaces", json={"name": "g1"})
    for query in ("pageToken=9223372036854775808", "limit=99999999999999999999", "pageToken=" + "9" * 5000):
        r = server.admin.get(f"/job-queue/g1/user/u/job?{query}")
        assert r.status_code == 400, r.text
    r = server.admin.get("/job-queue/g1/user/u/job/00000000-0000-0000-0000-000000000000/result?tryNumber=" + "9" * 5000)
    assert r.status_code in (400, 404)


def test_sloppy_bodies(server: LiveServer) -> None:
    before = _fingerprint(server)
    cases: list[tuple[str, bytes, dict[str, str]]] = [
        ("/api/jobs/enqueue", b'{"topic": "t", "payload": NaN}', JSON_HEADERS),
        ("/api/jobs/enqueue", b'{"topic": "t", "payload": [Infinity]}', JSON_HEADERS),
        ("/api/jobs/enqueue", b'{"topic": "t", "payload": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", JSON_HEADERS),
        ("/api/jobs/enqueue", b'{"topic": "t", "payload": "\\u0000"}', JSON_HEADERS),
        ("/api/jobs/enqueue", b'{"topic": "t"', JSON_HEADERS),
        ("/api/jobs/enqueue", b"\xff\xfe not utf-8", JSON_HEADERS),
        ("/api/jobs/enqueue", b'{"topic": "t"}', {"Content-Type": "text/plain"}),
        ("/api/jobs/enqueue", b"topic=t", {"Content-Type": "application/x-www-form-urlencoded"}),
        ("/api/v1/jobs", b"[]", JSON_HEADERS),
        ("/api/v1/jobs", b'"just a string"', JSON_HEADERS),
        ("/api/v1/jobs/batch", b"[" + b'{"task": "t"},' * 1001 + b'{"task": "t"}]', JSON_HEADERS),
        ("/api/v1/namespaces", b'{"name": "n2", "description": "' + b"d" * 5000 + b'"}', JSON_HEADERS),
    ]
    for path, body, headers in cases:
        r = server.admin.post(path, content=body, headers=headers)
        assert 400 <= r.status_code < 500, (path, body[:60], r.status_code, r.text[:200])
        assert r.json()["message"], r.text
    # a huge array inside the payload limit is fine; past it, PocketBase's 400
    ok = server.admin.post("/api/jobs/enqueue", json={"topic": "t", "payload": list(range(100_000))})
    assert ok.status_code == 200
    big = server.admin.post("/api/jobs/enqueue", json={"topic": "t", "payload": [0] * 600_000})
    assert big.status_code == 400 and big.json()["message"] == "payload too large (max 1MB)"
    server.admin.delete(f"/api/jobs/{ok.json()['id']}")
    assert sum(_fingerprint(server)[0]) == sum(before[0])


def test_duplicate_keys_take_the_last_value_like_pocketbase(server: LiveServer) -> None:
    """Go's encoding/json (PocketBase) keeps the last of duplicate keys; so does Conveyor, on every route."""
    r = server.admin.post("/api/jobs/enqueue", content=b'{"topic": "a", "topic": "b"}', headers=JSON_HEADERS)
    assert r.status_code == 200 and r.json()["topic"] == "b"
    server.admin.delete(f"/api/jobs/{r.json()['id']}")


def test_giant_query_strings_and_unicode_paths(server: LiveServer) -> None:
    r = server.admin.get("/api/jobs", params={"topic": "t" * 60_000})
    assert r.status_code == 200 and r.json()["total"] == 0
    for path in (
        "/api/v1/namespaces/%ED%A0%80",  # a surrogate's CESU-8 bytes: decoded as U+FFFD, not a surrogate
        "/api/v1/namespaces/%F0%9F%98%80",
        "/api/v1/namespaces/..%2F..%2Fetc",
        "/api/v1/jobs/%00",
        "/api/jobs/%E2%80%AE",
        "/job-queue/%ED%A0%80/user/%ED%A0%80/job",
    ):
        r = server.admin.get(path)
        assert 400 <= r.status_code < 500, (path, r.text)


def test_pocketbase_stats_total_is_the_sum_of_its_statuses(server: LiveServer) -> None:
    a = server.admin.post("/api/jobs/enqueue", json={"topic": "t"}).json()
    server.admin.post("/api/jobs/enqueue", json={"topic": "t"})
    server.admin.post(f"/api/v1/jobs/{a['id']}/cancel")
    stats = server.admin.get("/api/jobs/stats").json()
    assert stats["cancelled"] == 1 and stats["pending"] == 1
    assert stats["total"] == stats["pending"] + stats["processing"] + stats["completed"] + stats["failed"] == 1
    assert server.admin.get("/api/v1/stats").json()["total"] == 2  # Conveyor's own total counts every job


def test_enqueue_warns_when_no_live_worker_has_the_task(start_server: StartServer, sqlite_url: str) -> None:
    api_only = start_server(sqlite_url)  # no worker anywhere
    r = api_only.admin.post("/api/jobs/enqueue", json={"topic": "echo"})
    assert r.status_code == 200 and "no live worker has registered task 'echo'" in r.json()["warnings"][0]
    r = api_only.admin.post("/api/v1/jobs", json={"task": "echo"})
    assert r.status_code == 201 and r.json()["warnings"]
    r = api_only.admin.post("/api/v1/jobs/batch", json=[{"task": "echo"}, {"task": "other"}])
    assert len(r.json()["warnings"]) == 2
    r = api_only.admin.post("/api/jobs/enqueue/batch", json={"jobs": [{"topic": "echo"}]})
    assert r.json()["warnings"]


def test_enqueue_has_no_warning_with_a_worker(start_server: StartServer, sqlite_url: str) -> None:
    live = start_server(sqlite_url, run_worker=True)
    from tests.server.conftest import wait_for

    wait_for(lambda: live.app.list_workers())
    r = live.admin.post("/api/jobs/enqueue", json={"topic": "echo"})
    assert r.status_code == 200 and "warnings" not in r.json()


# ---- webhooks --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "169.254.169.254",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "fe80::1%eth0",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "0.0.0.0",
        "100.64.0.1",
        "224.0.0.1",
    ],
)
def test_private_targets_are_refused(address: str) -> None:
    assert address_problem(address) is not None


def test_public_targets_pass() -> None:
    assert address_problem("93.184.216.34") is None
    assert address_problem("2606:2800:220:1:248:1893:25c8:1946") is None


async def test_webhook_urls_are_checked_when_set(tmp_path: Any) -> None:
    for url in ("http://127.0.0.1/hook", "http://[::1]:8080/", "http://169.254.169.254/latest/meta-data", "ftp://x"):
        with pytest.raises(ValidationError) as info:
            await check_webhook_url(url)
        assert info.value.field == "webhook_url" and "169.254.169.254/latest" not in info.value.message
    await check_webhook_url("http://127.0.0.1/hook", allow_private=True)
    async with Conveyor(f"sqlite:///{tmp_path}/w.db") as app:
        with pytest.raises(ValidationError, match="webhook_allow_private"):
            await app.aput_namespace(Namespace(name="n", webhook_url="http://localhost:9/x?key=SECRET"))
        assert [ns.name for ns in await app.alist_namespaces()] == ["default"]


def test_webhook_settings_over_http(server: LiveServer) -> None:
    r = server.admin.post("/api/v1/namespaces", json={"name": "w1", "webhook_url": "http://127.0.0.1:1/x"})
    assert r.status_code == 400 and r.json()["field"] == "webhook_url"
    r = server.admin.post(
        "/api/v1/namespaces",
        json={"name": "w1", "webhook_url": "http://127.0.0.1:1/x", "webhook_allow_private": True},
    )
    assert r.status_code == 201 and r.json()["webhook_allow_private"] is True


async def test_a_forged_webhook_job_sends_nothing(tmp_path: Any) -> None:
    """A `conveyor:webhook` job not made by the dispatcher (no delivery record under its id) fails without any
    request, whatever its payload names; delivery errors never show the URL, its query string or the secret."""
    from tests.server.test_notify import Receiver

    receiver = Receiver()
    try:
        async with Conveyor(f"sqlite:///{tmp_path}/f.db") as app:
            await app.aput_namespace(
                Namespace(
                    name="victim",
                    run_notification=True,
                    webhook_url=receiver.url + "?api_key=TOPSECRET",
                    webhook_secret="s3cret",
                    webhook_allow_private=True,
                )
            )
            # every public way refuses `conveyor:` tasks; a forged job can only come through a hole: the store
            forged = NewJob.build(WEBHOOK_TASK, {"namespace": "victim", "type": "run", "event": {"forged": 1}})
            (job,) = await app.store.enqueue([forged])
            with pytest.raises(Fail) as info:
                await deliver_webhook(app, job.id)
            assert "no delivery record" in info.value.reason
            assert receiver.requests == []
            # a real record, to a receiver that refuses: the error names the namespace and code only
            receiver.answers = [404]
            store = app.store
            record = json.dumps({"namespace": "victim", "type": "run", "event": {"x": 1}})
            await store.kv_set("webhook:" + job.id, record, ttl=60)
            with pytest.raises(Fail) as info:
                await deliver_webhook(app, job.id)
            text = info.value.reason
            assert "404" in text and "victim" in text
            assert "TOPSECRET" not in text and "127.0.0.1" not in text and "s3cret" not in text
            # the namespace turns private targets off again: refused after resolution, nothing sent
            ns = await app.aget_namespace("victim")
            from dataclasses import replace

            await app.store.put_namespace(replace(ns, webhook_allow_private=False))  # as if set before the check
            with pytest.raises(Fail) as info:
                await deliver_webhook(app, job.id)
            assert "loopback" in info.value.reason and "TOPSECRET" not in info.value.reason
            assert len(receiver.requests) == 1
    finally:
        receiver.close()


async def test_webhook_redirects_are_not_followed(tmp_path: Any) -> None:
    from tests.server.test_notify import Receiver

    receiver = Receiver(answers=[302])
    try:
        async with Conveyor(f"sqlite:///{tmp_path}/r.db") as app:
            await app.aput_namespace(
                Namespace(name="r", run_notification=True, webhook_url=receiver.url, webhook_allow_private=True)
            )
            (job,) = await app.store.enqueue([NewJob.build(WEBHOOK_TASK)])
            await app.store.kv_set("webhook:" + job.id, json.dumps({"namespace": "r", "type": "run", "event": {}}))
            with pytest.raises(Fail, match="does not follow redirects"):
                await deliver_webhook(app, job.id)
    finally:
        receiver.close()
