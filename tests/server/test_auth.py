"""Auth on every route, parametrised over the server's own route table: no token → 401, a user token on an admin
route → 403, another user's token on a user route → 403 (or 404 for a job that is not theirs). A route missing
from the table below fails the test, so a new endpoint cannot ship without its auth rule."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from conveyor import Conveyor
from conveyor.server import create_app
from tests.server.conftest import LiveServer

PUBLIC = {"/health", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
ANY_TOKEN = {"/api/v1/me", "/api/dm-jobqueue/register", "/api/events"}
USER_PREFIX = "/api/v1/namespaces/{namespace}/users/{user_id}"
ADMIN_ONLY_USER_ROUTES = {("POST", USER_PREFIX + "/jobs")}  # push: GS2 PushByUserId is a server-side call


def classify(method: str, path: str) -> str:
    if path in PUBLIC:
        return "public"
    if path.startswith(("/job-queue", "/identifier", "/auth")):
        return "gs2"  # tested by the GS2 surface's own suite
    if path in ANY_TOKEN:
        return "any"
    if path.startswith(USER_PREFIX) and (method, path) not in ADMIN_ONLY_USER_ROUTES:
        return "user"
    if path.startswith(("/api/jobs", "/api/v1")):
        return "admin"
    return "unknown"


def route_table() -> list[tuple[str, str]]:
    """Every (method, path) the server documents: the OpenAPI document is generated from the live route table."""
    api = create_app(Conveyor("memory://route-table"), admin_token="x", demo=True)
    routes: list[tuple[str, str]] = []
    for path, item in api.openapi()["paths"].items():
        for method in item:
            if method in ("get", "post", "put", "patch", "delete"):
                routes.append((method.upper(), path))
    return sorted(routes)


ROUTES = route_table()


def test_every_route_is_classified() -> None:
    unknown = [r for r in ROUTES if classify(*r) == "unknown"]
    assert not unknown, f"routes without an auth rule: {unknown}"


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[LiveServer, dict[str, str]]]:
    import tempfile
    from pathlib import Path

    from tests.server.conftest import make_app, serve_in_thread

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'auth.db'}"
        app = make_app(url)
        api = create_app(app, admin_token="admin-tok", demo=True, print_admin_token=False)
        server = serve_in_thread(api, app)
        server.admin.headers["Authorization"] = "Bearer admin-tok"
        server.admin.post("/api/v1/namespaces", json={"name": "game", "auto_run": False})
        job = server.admin.post("/api/v1/namespaces/game/users/alice/jobs", json={"jobs": [{"task": "echo"}]})
        ids = {"job_id": job.json()["items"][0]["id"]}
        try:
            yield server, ids
        finally:
            server.stop()


def fill(path: str, ids: dict[str, str]) -> str:
    values = {"namespace": "game", "user_id": "alice", "name": "game", "queue": "default", **ids}
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


@pytest.mark.parametrize(("method", "path"), [r for r in ROUTES if classify(*r) in ("admin", "user", "any")])
def test_no_token_401(live: tuple[LiveServer, dict[str, str]], method: str, path: str) -> None:
    server, ids = live
    r = server.client().request(method, fill(path, ids), json={})
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthorized"
    bad = server.client("cvu1.forged.token").request(method, fill(path, ids), json={})
    assert bad.status_code == 401


@pytest.mark.parametrize(("method", "path"), [r for r in ROUTES if classify(*r) == "admin"])
def test_user_token_on_admin_route_403(live: tuple[LiveServer, dict[str, str]], method: str, path: str) -> None:
    server, ids = live
    user = server.client(server.user_token("alice"))
    r = user.request(method, fill(path, ids), json={})
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "forbidden"


@pytest.mark.parametrize(("method", "path"), [r for r in ROUTES if classify(*r) == "user"])
def test_other_user_on_user_route_403(live: tuple[LiveServer, dict[str, str]], method: str, path: str) -> None:
    server, ids = live
    mallory = server.client(server.user_token("mallory"))
    r = mallory.request(method, fill(path, ids), json={})
    assert r.status_code == 403, r.text
    # and through mallory's own path, alice's job is not found
    if "{job_id}" in path:
        own = fill(path.replace("{user_id}", "mallory"), ids)
        assert mallory.request(method, own, json={}).status_code == 404
    # alice herself gets past auth
    alice = server.client(server.user_token("alice"))
    assert alice.request(method, fill(path, ids), json={}).status_code not in (401, 403)


def test_expired_token_401(live: tuple[LiveServer, dict[str, str]]) -> None:
    server, _ = live
    from conveyor.server.auth import sign_user_token

    secret = server.ctx.auth.token_secret if server.ctx.auth else ""
    expired = sign_user_token(secret, "alice", None, 1.0)
    r = server.client(expired).get("/api/v1/me")
    assert r.status_code == 401 and "expired" in r.json()["message"]


def test_user_sees_only_own_events(live: tuple[LiveServer, dict[str, str]]) -> None:
    server, _ = live
    mallory = server.client(server.user_token("mallory"))
    assert mallory.get("/api/events", params={"user_id": "alice"}).status_code == 403
