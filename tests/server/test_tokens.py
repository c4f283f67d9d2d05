"""Secrets at rest: admin tokens stored only as hashes (shown once), named admin tokens that can be listed and
revoked from the CLI and the API, the server's CONVEYOR_ADMIN_TOKEN among them, the CLI and the servers agreeing
on tokens and on the signing secret, rotating the secret, and the migration of a store that holds a plain token.

The CLI runs as a real `conveyor` process with its own environment (as an operator's shell would), against the
same store as a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conveyor.server import tokens
from conveyor.server.auth import REFRESH_SECONDS, sign_user_token
from tests.server.conftest import LiveServer, StartServer, make_app, wait_for

CONFIGURED = "configured-admin-token-of-forty-characters"


def conveyor(store_url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`conveyor --store URL ARGS` in a shell without CONVEYOR_* variables unless given."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "--store", store_url, *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {}), "COLUMNS": "200"},
        timeout=60,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def is_admin(live: LiveServer, token: str) -> bool:
    r = live.client(token).get("/api/v1/me")
    return r.status_code == 200 and r.json()["kind"] == "admin"


def stored_bytes(store_url: str) -> bytes:
    """Every byte of a SQLite store on disk (database and WAL)."""
    path = Path(store_url.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


# ---- hashes only, shown once ---------------------------------------------------------------------------------


def test_generated_token_is_printed_once_and_stored_only_as_a_hash(
    start_server: StartServer, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from conveyor.server import create_app
    from tests.server.conftest import serve_in_thread

    app = make_app(sqlite_url)
    live = serve_in_thread(create_app(app, admin_token=None), app)  # prints, as conveyor serve does
    try:
        printed = capsys.readouterr().out
        token = next(line.strip() for line in printed.splitlines() if line.strip().startswith("cva_"))
        assert is_admin(live, token)
        raw = app.store and live.app.runtime.call_sync(lambda: live.app.store.kv_get(tokens.AUTH_KEY))
        assert raw is not None and token not in raw and tokens.digest(token) in raw
        assert token.encode() not in stored_bytes(sqlite_url)  # not in the database file, nor its WAL
    finally:
        live.stop()
    # a second start accepts it and prints nothing
    again = serve_in_thread(create_app(make_app(sqlite_url), admin_token=None), app)
    try:
        assert is_admin(again, token)
        assert "cva_" not in capsys.readouterr().out
    finally:
        again.stop()


@pytest.mark.stores("sqlite", "postgresql", "redis")
@pytest.mark.parametrize("how", ["conveyor migrate", "server start"])
def test_a_plain_token_of_an_older_store_is_hashed_in_place(
    start_server: StartServer, store_url: str, how: str
) -> None:
    """An older version kept `server:admin_token` and `server:token_secret` in plain text: `conveyor migrate`, or
    else the first start, hashes the token into the auth document, keeps the secret (so user tokens issued before
    stay valid), and deletes the plain copies."""
    old_token, old_secret = "cva_" + "x" * 43, "legacy-secret-" + "y" * 40
    seed = make_app(store_url)
    seed.runtime.call_sync(lambda: seed.store.kv_set(tokens.LEGACY_ADMIN_TOKEN_KEY, old_token))
    seed.runtime.call_sync(lambda: seed.store.kv_set(tokens.LEGACY_TOKEN_SECRET_KEY, old_secret))
    seed.close()
    issued_before = sign_user_token(old_secret, "alice", None, 4_000_000_000)
    if how == "conveyor migrate":
        assert "plain admin token hashed" in ok(conveyor(store_url, "migrate"))
        assert "plain admin token" not in ok(conveyor(store_url, "migrate"))  # once

    live = start_server(store_url, admin_token=None)
    assert is_admin(live, old_token)
    assert live.client(issued_before).get("/api/v1/me").json()["user_id"] == "alice"
    app = live.app
    assert app.runtime.call_sync(lambda: app.store.kv_get(tokens.LEGACY_ADMIN_TOKEN_KEY)) is None
    assert app.runtime.call_sync(lambda: app.store.kv_get(tokens.LEGACY_TOKEN_SECRET_KEY)) is None
    raw = app.runtime.call_sync(lambda: app.store.kv_get(tokens.AUTH_KEY))
    assert raw is not None and old_token not in raw
    listed = live.admin.get("/api/v1/admin-tokens", headers={"Authorization": f"Bearer {old_token}"}).json()
    assert [(t["name"], t["source"], t["active"]) for t in listed["items"]] == [("generated", "generated", True)]


# ---- named tokens, the CLI and the server agreeing --------------------------------------------------------------


def test_cli_and_server_with_configured_token_agree(start_server: StartServer, sqlite_url: str) -> None:
    """The server runs with CONVEYOR_ADMIN_TOKEN; the operator's shell does not have it. Tokens created there are
    accepted by the server, the configured one is listed and can be revoked, and stays revoked after a restart."""
    live = start_server(sqlite_url, admin_token=CONFIGURED)
    listed = json.loads(ok(conveyor(sqlite_url, "token", "list", "--json")))["items"]
    assert [(t["name"], t["source"], t["active"]) for t in listed] == [("CONVEYOR_ADMIN_TOKEN", "configured", True)]
    assert listed[0]["hint"] is None  # a hand-chosen token: not even its end is shown

    created = json.loads(ok(conveyor(sqlite_url, "token", "create", "ops", "--json")))
    assert created["token"].startswith("cva_") and created["hint"].endswith(created["token"][-4:])
    assert is_admin(live, created["token"])  # at once: an unknown token makes the server look again
    assert created["token"] not in ok(conveyor(sqlite_url, "token", "list"))
    assert conveyor(sqlite_url, "token", "create", "ops").returncode == 1  # the name is taken

    ok(conveyor(sqlite_url, "token", "revoke", "CONVEYOR_ADMIN_TOKEN"))
    wait_for(lambda: not is_admin(live, CONFIGURED), timeout=REFRESH_SECONDS * 4)
    assert is_admin(live, created["token"])
    live.stop()

    restarted = start_server(sqlite_url, admin_token=CONFIGURED)
    assert not is_admin(restarted, CONFIGURED)  # a restart with the same value does not bring it back
    assert is_admin(restarted, created["token"])
    assert any("revoked" in w for w in restarted.ctx.auth.warnings) if restarted.ctx.auth else False


def test_the_last_admin_token_cannot_be_revoked(start_server: StartServer, sqlite_url: str) -> None:
    live = start_server(sqlite_url, admin_token=CONFIGURED)
    r = live.client(CONFIGURED).delete("/api/v1/admin-tokens/CONVEYOR_ADMIN_TOKEN")
    assert r.status_code == 409 and "last active admin token" in r.json()["message"]
    result = conveyor(sqlite_url, "token", "revoke", "CONVEYOR_ADMIN_TOKEN")
    assert result.returncode == 1 and "create another one first" in result.stderr
    assert conveyor(sqlite_url, "token", "revoke", "nobody").returncode == 3


def test_admin_tokens_over_http(start_server: StartServer, sqlite_url: str) -> None:
    live = start_server(sqlite_url, admin_token=CONFIGURED)
    admin = live.client(CONFIGURED)
    r = admin.post("/api/v1/admin-tokens", json={"name": "ci"})
    assert r.status_code == 201
    ci = r.json()["token"]
    assert is_admin(live, ci) and live.client(ci).get("/api/v1/me").json()["name"] == "ci"
    listed = admin.get("/api/v1/admin-tokens").json()["items"]
    assert {t["name"] for t in listed} == {"CONVEYOR_ADMIN_TOKEN", "ci"}
    assert ci not in json.dumps(listed) and tokens.digest(ci) not in json.dumps(listed)
    assert admin.post("/api/v1/admin-tokens", json={"name": "bad name"}).status_code in (400, 422)
    assert admin.delete("/api/v1/admin-tokens/ci").json()["active"] is False
    assert not is_admin(live, ci)  # at once on the node that revoked it
    assert live.client(ci).get("/api/v1/stats").status_code == 401


def test_two_servers_on_one_store_see_each_others_changes(start_server: StartServer, sqlite_url: str) -> None:
    a = start_server(sqlite_url, admin_token=CONFIGURED)
    b = start_server(sqlite_url, admin_token=CONFIGURED)
    a.admin.headers["Authorization"] = f"Bearer {CONFIGURED}"
    token = a.client(CONFIGURED).post("/api/v1/admin-tokens", json={"name": "shared"}).json()["token"]
    assert is_admin(b, token)
    user = a.user_token("alice")
    assert b.client(user).get("/api/v1/me").status_code == 200
    a.client(CONFIGURED).delete("/api/v1/admin-tokens/shared")
    wait_for(lambda: not is_admin(b, token), timeout=REFRESH_SECONDS * 4)
    a.client(CONFIGURED).post("/api/v1/token-secret/rotate").raise_for_status()
    assert a.client(user).get("/api/v1/me").status_code == 401
    wait_for(lambda: b.client(user).get("/api/v1/me").status_code == 401, timeout=REFRESH_SECONDS * 4)
    fresh = a.user_token("alice")
    assert b.client(fresh).get("/api/v1/me").status_code == 200


def test_old_cli_usage_is_pointed_to_the_subcommands(sqlite_url: str) -> None:
    result = conveyor(sqlite_url, "token", "--admin")
    assert result.returncode == 2 and "cannot be shown again" in result.stderr
    result = conveyor(sqlite_url, "token", "alice")
    assert result.returncode == 2 and "conveyor token issue alice" in result.stderr


# ---- the signing secret ---------------------------------------------------------------------------------------


def test_rotating_the_secret_invalidates_user_tokens(start_server: StartServer, sqlite_url: str) -> None:
    live = start_server(sqlite_url, admin_token=CONFIGURED)
    before = ok(conveyor(sqlite_url, "token", "issue", "alice"))
    assert live.client(before).get("/api/v1/me").json()["user_id"] == "alice"
    answer = json.loads(ok(conveyor(sqlite_url, "token", "rotate-secret", "--yes", "--json")))
    assert answer["rotated_at"]
    wait_for(lambda: live.client(before).get("/api/v1/me").status_code == 401, timeout=REFRESH_SECONDS * 4)
    after = ok(conveyor(sqlite_url, "token", "issue", "alice"))
    assert live.client(after).get("/api/v1/me").status_code == 200
    assert conveyor(sqlite_url, "token", "rotate-secret").returncode != 0  # asks first; no input: not done
    assert live.client(after).get("/api/v1/me").status_code == 200


def test_cli_and_server_agree_on_an_env_secret(
    start_server: StartServer, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The servers sign with CONVEYOR_TOKEN_SECRET: a CLI without it (or with another value) refuses to issue tokens
    the servers would reject, instead of printing them silently; with the same value its tokens work."""
    secret = "env-secret-" + "s" * 40
    monkeypatch.setenv("CONVEYOR_TOKEN_SECRET", secret)
    live = start_server(sqlite_url, admin_token=CONFIGURED)
    monkeypatch.delenv("CONVEYOR_TOKEN_SECRET")

    missing = conveyor(sqlite_url, "token", "issue", "alice")
    assert missing.returncode == 1 and "CONVEYOR_TOKEN_SECRET" in missing.stderr and not missing.stdout
    other = conveyor(sqlite_url, "token", "issue", "alice", env={"CONVEYOR_TOKEN_SECRET": "another-" + "z" * 40})
    assert other.returncode == 1 and "differs" in other.stderr
    same = ok(conveyor(sqlite_url, "token", "issue", "alice", env={"CONVEYOR_TOKEN_SECRET": secret}))
    assert live.client(same).get("/api/v1/me").json()["user_id"] == "alice"

    r = live.client(CONFIGURED).post("/api/v1/token-secret/rotate")
    assert r.status_code == 400 and "CONVEYOR_TOKEN_SECRET" in r.json()["message"]
    assert conveyor(sqlite_url, "token", "rotate-secret", "--yes").returncode == 1
    raw: Any = live.app.runtime.call_sync(lambda: live.app.store.kv_get(tokens.AUTH_KEY))
    assert secret not in raw  # only a slow fingerprint of it is kept
