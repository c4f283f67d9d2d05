"""The authorization matrix (conveyor.server.access), proven three ways:

1. the application's own route table (every router, GS2 and demo included) has a rule for every route, and every
   rule names a route that exists; a route without a rule cannot be built, nor served;
2. docs/http-api.md carries the matrix exactly as the code has it;
3. a real server answers every route × kind of caller as the matrix says — admin, a user token for the user in
   the path, another user's token, no token, and the tokens that must count as none (forged, expired, the metrics
   token) — with valid request bodies, and a refused request writes nothing.
"""

from __future__ import annotations

import itertools
import json
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from conveyor import Conveyor
from conveyor.server import create_app
from conveyor.server.access import (
    ALLOWED,
    ANY_METHOD,
    MATRIX,
    Kind,
    Rule,
    check_routes,
    missing_rules,
    render_markdown,
    route_entries,
)
from conveyor.server.auth import sign_user_token
from tests.server.conftest import LiveServer, make_app, serve_in_thread

ADMIN = "matrix-admin-token"
METRICS_TOKEN = "matrix-metrics-token"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "http-api.md"


def full_app(**options: Any) -> FastAPI:
    """Every surface on: demo routes, UI, GS2, and a metrics token."""
    return create_app(Conveyor("memory://matrix"), admin_token=ADMIN, demo=True, metrics_token=METRICS_TOKEN, **options)


# ---- 1. the route table -----------------------------------------------------------------------------------------


def test_every_route_has_a_rule_and_every_rule_a_route() -> None:
    api = full_app()
    assert missing_rules(api) == []
    served = {(e.method, e.path) for e in route_entries(api)}
    assert len(served) >= 75
    assert set(MATRIX) - served == set(), "rules for routes the server does not serve"
    # the surfaces the brief names are all there
    for prefix in ("/job-queue/", "/api/jobs", "/api/v1/", "/api/events", "/metrics", "/health", "/ui", "/api/dm-"):
        assert any(path.startswith(prefix) for _, path in served), prefix


async def test_an_app_with_an_unruled_route_is_refused_at_build_and_at_request_time() -> None:
    api = full_app()

    async def leak() -> dict[str, str]:
        return {"secret": "data"}

    api.add_api_route("/api/v1/leak", leak, methods=["GET"])
    with pytest.raises(RuntimeError, match="/api/v1/leak"):
        check_routes(api)
    # a route added after the build still goes through the guard, which fails closed
    transport = httpx.ASGITransport(app=api, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://matrix") as client:
        r = await client.get("/api/v1/leak", headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 500 and "secret" not in r.text


def test_the_docs_carry_the_matrix() -> None:
    text = DOCS.read_text()
    begin, end = "<!-- access-matrix:begin -->\n", "<!-- access-matrix:end -->"
    documented = text[text.index(begin) + len(begin) : text.index(end)]
    assert documented == render_markdown(), "regenerate: python -m conveyor.server.access --write docs/http-api.md"


# ---- 3. a real server -------------------------------------------------------------------------------------------

CALLERS = ("admin", "own_user", "other_user", "none", "forged", "expired", "metrics_token")
NONE_LIKE = {"none", "forged", "expired", "metrics_token"}


@dataclass
class World:
    server: LiveServer
    tokens: dict[str, str | None]
    counter: Iterator[int]
    anon: httpx.Client  # one client without a token for the whole sweep (each new client costs ~30 ms)

    def as_user(self, caller: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[caller]}"}

    @property
    def admin(self) -> httpx.Client:
        return self.server.admin

    def fresh(self, prefix: str) -> str:
        return f"{prefix}-{next(self.counter)}"

    def purge_jobs(self) -> None:
        """Delete every job (each route's sweep starts small, so snapshots stay cheap)."""
        while True:
            items = self.admin.get("/api/v1/jobs", params={"limit": 1000}).json()["items"]
            if not items:
                return
            for job in items:
                self.admin.delete(f"/api/v1/jobs/{job['id']}", params={"force": "true"})

    def clear_alice(self) -> None:
        """Empty alice's queue in `game` (Run takes the oldest job, so each case starts from a known queue)."""
        r = self.admin.get("/api/v1/namespaces/game/users/alice/jobs", params={"limit": 1000})
        for job in r.json()["items"]:
            self.admin.delete(f"/api/v1/jobs/{job['id']}", params={"force": "true"})

    def alice_job(self, task: str = "echo") -> str:
        self.clear_alice()
        r = self.admin.post("/api/v1/namespaces/game/users/alice/jobs", json={"jobs": [{"task": task}]})
        assert r.status_code == 201, r.text
        job_id: str = r.json()["items"][0]["id"]
        return job_id

    def alice_dead_letter(self) -> str:
        job_id = self.alice_job("fail")
        ran = self.admin.post("/api/v1/namespaces/game/users/alice/run")
        assert ran.json()["job"]["status"] == "failed", ran.text
        return job_id

    def snapshot(self) -> Any:
        """Everything a write could change: jobs (and their states), namespaces, queues, admin tokens, and whether
        the user tokens still work (the signing secret)."""
        jobs = self.admin.get("/api/v1/jobs", params={"limit": 1000}).json()
        namespaces = self.admin.get("/api/v1/namespaces").json()["items"]
        queues = self.admin.get("/api/v1/queues").json()["items"]
        admin_tokens = self.admin.get("/api/v1/admin-tokens").json()["items"]
        secret_unchanged = self.anon.get("/api/v1/me", headers=self.as_user("own_user")).status_code
        return (
            sorted((j["id"], j["status"], j["attempts"], j["run_at"]) for j in jobs["items"]),
            sorted((n["name"], n["description"], n["updated"]) for n in namespaces),
            sorted((q["namespace"], q["name"], q["paused"]) for q in queues),
            sorted((t["name"], t["active"], t["created_at"]) for t in admin_tokens),
            secret_unchanged,
        )

    def reissue_user_tokens(self) -> None:
        """After the signing secret was rotated: new user tokens (the old ones stopped working, as they must)."""
        assert self.anon.get("/api/v1/me", headers=self.as_user("own_user")).status_code == 401
        secret = self.server.ctx.auth.token_secret if self.server.ctx.auth else ""
        self.tokens.update(
            own_user=self.server.user_token("alice"),
            other_user=self.server.user_token("mallory"),
            expired=sign_user_token(secret, "alice", None, time.time() - 1),
        )


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with tempfile.TemporaryDirectory() as tmp:
        app = make_app(f"sqlite:///{Path(tmp) / 'matrix.db'}")
        api = create_app(app, admin_token=ADMIN, demo=True, metrics_token=METRICS_TOKEN, print_admin_token=False)
        server = serve_in_thread(api, app)
        server.admin.headers["Authorization"] = f"Bearer {ADMIN}"
        assert server.admin.post("/api/v1/namespaces", json={"name": "game", "auto_run": False}).status_code == 201
        assert server.admin.post("/gateway/", json={"name": "game"}).status_code == 200  # a GS2-Gateway namespace
        secret = server.ctx.auth.token_secret if server.ctx.auth else ""
        tokens: dict[str, str | None] = {
            "admin": ADMIN,
            "own_user": server.user_token("alice"),
            "other_user": server.user_token("mallory"),
            "none": None,
            "forged": sign_user_token("not-the-secret", "alice", None, time.time() + 3600),
            "expired": sign_user_token(secret, "alice", None, time.time() - 1),
            "metrics_token": METRICS_TOKEN,
        }
        try:
            yield World(server, tokens, itertools.count(), server.client())
        finally:
            server.stop()


@dataclass
class Case:
    url: str
    body: Any = None
    raw: bytes | None = None


def _local(url: str) -> str:
    """The path and query of an absolute URL the server handed out (signed download/upload URLs)."""
    parts = httpx.URL(url)
    return parts.raw_path.decode()


def _gs2_admin(world: World) -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


def _user_data_flow(world: World, upto: str, base: str = "/job-queue/system") -> dict[str, str]:
    """Walk GS2's user-data flow as a game server would, as far as `upto` needs: dump, prepare an import, upload,
    import. Answers the URLs and token that the later steps use. `base`: the service's (job queue, gateway)."""
    out: dict[str, str] = {}
    c = world.anon
    assert c.post(f"{base}/dump/user/alice", json={}, headers=_gs2_admin(world)).status_code == 200
    out["dump_url"] = c.get(f"{base}/dump/user/alice", headers=_gs2_admin(world)).json()["url"]
    if upto == "dump":
        return out
    out["document"] = c.get(_local(out["dump_url"])).text
    prepared = c.post(f"{base}/import/user/alice/prepare", json={}, headers=_gs2_admin(world)).json()
    out["upload_token"], out["upload_url"] = prepared["uploadToken"], prepared["uploadUrl"]
    if upto == "prepare":
        return out
    assert c.put(_local(out["upload_url"]), content=out["document"].encode()).status_code == 200
    if upto == "upload":
        return out
    done = c.post(f"{base}/import/user/alice", json={"uploadToken": out["upload_token"]}, headers=_gs2_admin(world))
    assert done.status_code == 200, done.text
    checked = c.get(f"{base}/import/user/alice/{out['upload_token']}", headers=_gs2_admin(world))
    out["report_url"] = checked.json()["url"]
    return out


def _signing_key(world: World) -> str:
    name = world.fresh("key")
    assert world.admin.post("/api/v1/gs2/keys", json={"name": name}).status_code == 201
    return name


def prepare_special(world: World, method: str, path: str) -> Case | None:
    """Routes whose valid request is the product of earlier calls (signed URLs, stamp sheets, user data)."""
    base = "/gateway/system" if path.startswith("/gateway/") else "/job-queue/system"
    if path.endswith("/dump/user/{userId}") and method == "GET":
        world.anon.post(f"{base}/dump/user/alice", json={}, headers=_gs2_admin(world))
        return Case(f"{base}/dump/user/alice")
    if path.endswith("/clean/user/{userId}") and method == "GET":
        world.anon.post(f"{base}/clean/user/alice", json={}, headers=_gs2_admin(world))
        return Case(f"{base}/clean/user/alice")
    if path.endswith("/dump/user/{userId}/data"):
        return Case(_local(_user_data_flow(world, "dump", base)["dump_url"]))
    if path.endswith("/upload/{uploadToken}"):
        flow = _user_data_flow(world, "prepare", base)
        return Case(_local(flow["upload_url"]), raw=flow["document"].encode())
    if path == base + "/import/user/{userId}":
        token = _user_data_flow(world, "upload", base)["upload_token"]
        return Case(f"{base}/import/user/alice", {"uploadToken": token})
    if path == base + "/import/user/{userId}/{uploadToken}":
        return Case(f"{base}/import/user/alice/{_user_data_flow(world, 'import', base)['upload_token']}")
    if path.endswith("/{uploadToken}/report"):
        return Case(_local(_user_data_flow(world, "import", base)["report_url"]))
    if "/firebase/token" in path and not path.endswith("/notification"):
        url = path.replace("{namespaceName}", "game").replace("{userId}", "alice")
        if method == "PUT":
            return Case(url, {"token": "device-token"})
        put = world.anon.put("/gateway/game/user/alice/firebase/token", json={"token": "t"}, headers=_gs2_admin(world))
        assert put.status_code == 200, put.text
        return Case(url)
    if path == "/job-queue/stamp/job":
        world.clear_alice()
        key = _signing_key(world)
        jobs = [{"scriptId": "echo", "args": "{}"}]
        sheet = world.admin.post(
            "/api/v1/gs2/stamp-sheets", json={"key": key, "namespace": "game", "user_id": "alice", "jobs": jobs}
        ).json()
        return Case(path, {"stampSheet": sheet["stampSheet"], "keyId": sheet["keyId"]})
    if path == "/job-queue/stamp/job/delete":
        job_id = world.alice_job()
        key = _signing_key(world)
        task = world.admin.post(
            "/api/v1/gs2/stamp-tasks", json={"key": key, "namespace": "game", "user_id": "alice", "job_name": job_id}
        ).json()
        return Case(path, {"stampTask": task["stampTask"], "keyId": task["keyId"]})
    if path == "/auth/login/signed":
        key = _signing_key(world)
        return Case(path, world.admin.post(f"/api/v1/gs2/keys/{key}/login-body", json={"user_id": "alice"}).json())
    if path == "/api/v1/admin-tokens":
        return Case(path, {"name": world.fresh("tok")} if method == "POST" else None)
    if path == "/api/v1/admin-tokens/{name}":
        name = world.fresh("tok")
        assert world.admin.post("/api/v1/admin-tokens", json={"name": name}).status_code == 201
        return Case(f"/api/v1/admin-tokens/{name}")
    if path.startswith("/api/v1/gs2/keys/{name}"):
        key = _signing_key(world)
        bodies = {"/rotate": {}, "/login-body": {"user_id": "alice"}}
        suffix = path.removeprefix("/api/v1/gs2/keys/{name}")
        return Case(f"/api/v1/gs2/keys/{key}{suffix}", bodies.get(suffix) if method == "POST" else None)
    if path == "/api/v1/gs2/keys":
        return Case(path, {"name": world.fresh("key")} if method == "POST" else None)
    if path in ("/api/v1/gs2/stamp-sheets", "/api/v1/gs2/stamp-tasks"):
        key = _signing_key(world)
        if path.endswith("sheets"):
            return Case(path, {"key": key, "namespace": "game", "user_id": "alice", "jobs": [{"scriptId": "echo"}]})
        return Case(path, {"key": key, "namespace": "game", "user_id": "alice", "job_name": world.alice_job()})
    if path.startswith("/api/v1/schedules/{name}"):
        name = world.fresh("sched")
        made = world.admin.post("/api/v1/schedules", json={"name": name, "spec": "@daily", "task": "echo"})
        assert made.status_code == 201, made.text
        body = {"spec": "@hourly"} if method == "PATCH" else {} if method == "POST" else None
        return Case(path.replace("{name}", name), body)
    if path == "/api/v1/schedules" and method == "POST":
        return Case(path, {"name": world.fresh("sched"), "spec": "@daily", "task": "echo"})
    if path == "/api/v1/users/{user_id}/data":
        url = "/api/v1/users/alice/data"
        document = world.admin.get(url).json() if method == "POST" else None
        return Case(url, document)
    return None


def prepare(world: World, method: str, path: str) -> Case:
    """A valid request for the route: existing objects in the path, a body that would succeed for the admin."""
    special = prepare_special(world, method, path)
    if special is not None:
        return special
    values: dict[str, str] = {
        "namespace": "game",
        "namespaceName": "game",
        "user_id": "alice",
        "userId": "alice",
        "queue": world.fresh("q"),
        "rest": "no/such/operation",
    }
    needs_dead = "/dead-letters/" in path or "/dead/{" in path or path.endswith("/result")
    if "{job_id}" in path or "{jobName}" in path or "{deadLetterJobName}" in path:
        job_id = world.alice_dead_letter() if needs_dead or path.endswith("/requeue") else world.alice_job()
        values.update(job_id=job_id, jobName=job_id, deadLetterJobName=job_id)
    if path.startswith("/gateway/{namespaceName}") and "/session" not in path:
        name = world.fresh("gw")
        assert world.admin.post("/gateway/", json={"name": name}).status_code == 200
        values.update(namespaceName=name)
    elif "{name}" in path or (path.startswith("/job-queue/{namespaceName}") and "/user/" not in path):
        name = world.fresh("ns")
        assert world.admin.post("/api/v1/namespaces", json={"name": name}).status_code == 201
        values.update(name=name, namespaceName=name)
    if path.endswith("/run"):
        world.alice_job()
    url = re.sub(r"\{(\w+)(?::path)?\}", lambda m: values[m.group(1)], path)
    if path == "/api/events":
        url += "?user_id=alice"  # "another user" asks for alice's events
    bodies: dict[tuple[str, str], Any] = {
        ("POST", "/api/jobs/enqueue"): {"topic": "echo", "payload": {"n": 1}},
        ("POST", "/api/jobs/enqueue/batch"): {"jobs": [{"topic": "echo"}]},
        ("POST", "/api/dm-jobqueue/register"): {"message": "matrix", "delay_seconds": 3600},
        ("POST", "/api/v1/jobs"): {"task": "echo"},
        ("POST", "/api/v1/jobs/batch"): [{"task": "echo"}],
        ("POST", "/api/v1/namespaces"): {"name": world.fresh("new")},
        ("PATCH", "/api/v1/namespaces/{name}"): {"description": "changed"},
        ("POST", "/api/v1/tokens"): {"user_id": "someone"},
        ("POST", "/api/v1/namespaces/{namespace}/users/{user_id}/jobs"): {"jobs": [{"task": "echo"}]},
        ("POST", "/job-queue/"): {"name": world.fresh("gs2ns")},
        ("POST", "/gateway/"): {"name": world.fresh("gwns")},
        ("PUT", "/gateway/{namespaceName}"): {"description": "changed"},
        ("POST", "/gateway/{namespaceName}/session/user/{userId}/notification"): {"subject": "s", "payload": "p"},
        ("PUT", "/job-queue/{namespaceName}"): {"description": "changed"},
        ("POST", "/job-queue/{namespaceName}/user/{userId}/job"): {"jobs": [{"scriptId": "echo", "args": "{}"}]},
        ("POST", "/identifier/projectToken/login"): {"client_id": "admin", "client_secret": ADMIN},
        ("POST", "/auth/login"): {"userId": "alice"},
        ("POST", "/auth/federation"): {"userId": "alice", "originalUserId": "alice"},
    }
    body = bodies.get((method, path))
    if body is None and method in ("POST", "PUT", "PATCH"):
        body = {}
    return Case(url, body)


def headers_for(world: World, caller: str, path: str) -> dict[str, str]:
    token = world.tokens[caller]
    if token is None:
        return {}
    headers = {"Authorization": f"Bearer {token}"}
    if path.startswith(("/job-queue/", "/gateway/")):
        headers["X-GS2-ACCESS-TOKEN"] = token
    return headers


def expected_for(rule: Rule, caller: str) -> str | int:
    if caller == "metrics_token" and rule.kind is Kind.METRICS:
        return ALLOWED
    column = "none" if caller in NONE_LIKE else caller
    value: str | int = getattr(rule, column)
    return value


def send(world: World, method: str, case: Case, headers: dict[str, str]) -> tuple[int, str]:
    """One request; an event stream is closed as soon as its status is known."""
    client = world.anon
    if case.raw is not None:
        request = client.build_request(method, case.url, content=case.raw, headers=headers)
    else:
        request = client.build_request(method, case.url, json=case.body, headers=headers)
    response = client.send(request, stream=True)
    try:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response.status_code, ""
        response.read()
        return response.status_code, response.text
    finally:
        response.close()


GS2_PREFIXES = ("/job-queue", "/identifier", "/auth", "/gateway")


def refusal_code(path: str, text: str) -> str:
    if path.startswith(GS2_PREFIXES):
        return str(json.loads(json.loads(text)["message"])[0]["code"])
    return str(json.loads(text)["error"])


GS2_DENIALS = {"jobQueue.auth.error.unauthorized", "jobQueue.user.error.notFound"}
ROUTES = sorted((m, p) for (m, p) in MATRIX if m not in (ANY_METHOD, "WS"))  # the WebSocket: see below
WEB_SOCKET_BINDS = {  # SetUserId binds the WebSocket connection it came over: over plain HTTP it is a 400
    ("POST", "/gateway/{namespaceName}/session/user/me/user"),
    ("POST", "/gateway/{namespaceName}/session/user/{userId}/user"),
    ("POST", "/gateway/{namespaceName}/user/{userId}/firebase/token/notification"),  # no mobile push: a 400
}


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_route_answers_every_caller_as_the_matrix_says(world: World, method: str, path: str) -> None:
    rule = MATRIX[(method, path)]
    world.purge_jobs()
    for caller in CALLERS:
        case = prepare(world, method, path)
        wanted = expected_for(rule, caller)
        before = world.snapshot() if wanted != ALLOWED or caller != "admin" else None
        status, text = send(world, method, case, headers_for(world, caller, path))
        where = f"{caller}: {method} {case.url} → {status} {text[:300]}"
        assert status < 500, where
        if path == "/api/v1/token-secret/rotate" and status == 200:
            world.reissue_user_tokens()
            before = None  # the rotation is the write this caller was allowed to make
        if before is not None and rule.kind is not Kind.SIGNED:  # user tokens never enqueue, whatever the route
            new_jobs = {j[0] for j in world.snapshot()[0]} - {j[0] for j in before[0]}
            assert not new_jobs, f"a non-admin caller created jobs: {where}"
        if wanted == ALLOWED:
            assert status not in (401, 403), where
            if status == 404 and path.startswith(GS2_PREFIXES):
                assert refusal_code(path, text) not in GS2_DENIALS, where
            continue
        assert status == wanted, where
        code = refusal_code(path, text)
        if path.startswith(GS2_PREFIXES):
            assert code in GS2_DENIALS, where
        else:
            assert code == {401: "unauthorized", 403: "forbidden"}[status], where
        assert world.snapshot() == before, f"a refused request wrote something: {where}"


def test_admin_succeeds_on_every_route(world: World) -> None:
    """The requests the sweep sends are valid ones: the admin gets a success on every route (so a refusal above
    is the guard's doing, not a bad request's)."""
    failures = []
    for method, path in ROUTES:
        if path.endswith("/{rest:path}") or path == "/auth/timeoffset/token" or (method, path) in WEB_SOCKET_BINDS:
            continue  # operations Conveyor does not offer answer "not supported" (404, or 400 for time offsets)
        rule = MATRIX[(method, path)]
        caller = "own_user" if rule.kind is Kind.GS2_ME else "admin"
        case = prepare(world, method, path)
        status, text = send(world, method, case, headers_for(world, caller, path))
        if path == "/api/v1/token-secret/rotate" and status == 200:
            world.reissue_user_tokens()
        if not 200 <= status < 400:
            failures.append(f"{method} {path} → {status} {text[:200]}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("verb", ["HEAD", "OPTIONS", "TRACE", "PROPFIND"])
def test_other_methods_reveal_nothing(world: World, verb: str) -> None:
    """No CORS preflight answers, no method override: any other verb on an API path is refused without data."""
    job_id = world.alice_job()
    for path in ("/api/v1/jobs", f"/api/v1/jobs/{job_id}", "/api/jobs", "/job-queue/game/user/alice/job"):
        for headers in ({}, {"X-HTTP-Method-Override": "GET"}, {"Origin": "https://evil.example"}):
            r = world.anon.request(verb, path, headers=headers)
            assert r.status_code in (401, 404, 405), (verb, path, r.status_code, r.text)
            assert '"task"' not in r.text and '"payload"' not in r.text and '"scriptId"' not in r.text
            assert "access-control-allow-origin" not in r.headers


def test_token_scoped_to_another_namespace_is_another_user(world: World) -> None:
    elsewhere = world.server.user_token("alice", namespace="elsewhere")
    job_id = world.alice_job()
    client = world.server.client(elsewhere)
    assert client.get("/api/v1/namespaces/game/users/alice/jobs").status_code == 403
    assert client.get(f"/api/v1/namespaces/game/users/me/jobs/{job_id}").status_code == 403
    gs2 = client.get("/job-queue/game/user/alice/job", headers={"X-GS2-ACCESS-TOKEN": elsewhere})
    assert gs2.status_code == 404
    assert client.get("/api/events", params={"namespace": "game"}).status_code == 403


def test_web_socket_messages_get_their_rest_routes_rule(world: World) -> None:
    """The WebSocket (`WS /`) lets anyone connect; each message is answered by the REST route the SDK's REST
    client would call, under that route's rule, so every caller gets over the socket what the matrix says."""
    import websocket

    ws_url = world.server.base_url.replace("http://", "ws://") + "/"
    cases = [  # (service, function, fields, route)
        ("jobQueue", "getNamespace", {"namespaceName": "game"}, ("GET", "/job-queue/{namespaceName}")),
        (
            "jobQueue",
            "describeJobsByUserId",
            {"namespaceName": "game", "userId": "alice"},
            ("GET", "/job-queue/{namespaceName}/user/{userId}/job"),
        ),
        (
            "jobQueue",
            "pushByUserId",
            {"namespaceName": "game", "userId": "alice", "jobs": [{"scriptId": "echo"}]},
            ("POST", "/job-queue/{namespaceName}/user/{userId}/job"),
        ),
        (
            "gateway",
            "describeWebSocketSessionsByUserId",
            {"namespaceName": "game", "userId": "alice"},
            ("GET", "/gateway/{namespaceName}/session/user/{userId}"),
        ),
        (
            "gateway",
            "sendNotification",
            {"namespaceName": "game", "userId": "alice", "subject": "s"},
            ("POST", "/gateway/{namespaceName}/session/user/{userId}/notification"),
        ),
    ]
    conn = websocket.create_connection(ws_url, timeout=10)
    try:
        for number, (service, function, fields, route) in enumerate(cases):
            rule = MATRIX[route]
            for caller in ("admin", "own_user", "other_user", "none", "forged"):
                world.clear_alice()
                request_id = f"{number}-{caller}"
                message: dict[str, Any] = {
                    "x_gs2": {"service": service, "component": "c", "function": function, "requestId": request_id},
                    "xGs2ClientId": "matrix",
                    "xGs2ProjectToken": world.tokens[caller] or "None",
                    **fields,
                }
                conn.send(json.dumps(message))
                answer = json.loads(conn.recv())
                assert answer["requestId"] == request_id
                wanted = expected_for(rule, caller)
                where = f"{caller}: {service}.{function} → {answer}"
                if wanted == ALLOWED:
                    assert answer["status"] == 200, where
                else:
                    assert answer["status"] == wanted, where
                    assert json.loads(answer["body"]["message"])[0]["code"] in GS2_DENIALS, where
    finally:
        conn.close()
