"""The authorization matrix: every route of the HTTP server × the kind of caller → allowed, or which status.

This module is the one place where access is decided. `MATRIX` names a `Rule` for every (method, path) the server
serves; `Guard` is a FastAPI dependency installed on the whole application (`FastAPI(dependencies=...)` in
`create_app`), so it runs before every endpoint, looks the matched route up and enforces its rule. Endpoints never
check tokens themselves: they read who is calling from `caller(request)` / `path_user(request)`.

`create_app` refuses to build an application with a route that has no rule (`check_routes`), and
tests/server/test_access_matrix.py walks the application's own route table and exercises every route with every
kind of token against a real server. docs/http-api.md carries the same table (`render_markdown`, checked by a test).

Callers: the **admin** token; a **user** token, for its own user (the one named in the path, or `me`) or for
another user; **no token**. A forged, expired or revoked token, or a metrics token on any route but `/metrics`, is
treated as no token. Conveyor's own surface answers 401 (no valid token) or 403 (a valid token that may not reach
the route); the GS2 surface answers in GS2's terms, which have no 403: 401 for a token that may not call the
operation, 404 for another user's queue (never the data).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts
from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute, Mount

from conveyor.errors import ConveyorError, ValidationError
from conveyor.server.auth import Forbidden, Principal, Unauthorized
from conveyor.server.gs2_models import GS2Error

ALLOWED = "allowed"
GS2_ACCESS_TOKEN_HEADER = "X-GS2-ACCESS-TOKEN"


class Kind(Enum):
    """How a rule decides. The expected answer for each kind of caller is in `Rule`."""

    PUBLIC = "public"
    ADMIN = "admin"
    USER = "user"
    USER_QUERY = "user (query)"
    ANY = "any token"
    METRICS = "metrics"
    GS2_ADMIN = "GS2 admin"
    GS2_USER = "GS2 user"
    GS2_ME = "GS2 me"
    SIGNED = "signed"


@dataclass(frozen=True, slots=True)
class Rule:
    """One row kind of the matrix: how it decides and what each kind of caller gets ("allowed" or a status)."""

    kind: Kind
    admin: str | int
    own_user: str | int
    other_user: str | int
    none: str | int
    meaning: str


PUBLIC = Rule(Kind.PUBLIC, ALLOWED, ALLOWED, ALLOWED, ALLOWED, "no token needed")
ADMIN_ONLY = Rule(Kind.ADMIN, ALLOWED, 403, 403, 401, "admin token only")
USER = Rule(
    Kind.USER,
    ALLOWED,
    ALLOWED,
    403,
    401,
    "admin, or a user token of the user in the path (`me` names the token's own user; a token limited to one "
    "namespace reaches only that namespace)",
)
USER_QUERY = Rule(
    Kind.USER_QUERY,
    ALLOWED,
    ALLOWED,
    403,
    401,
    "admin (every user), or a user token for its own user only: `user_id`/`namespace` in the query may only name "
    "its own",
)
ANY_TOKEN = Rule(Kind.ANY, ALLOWED, ALLOWED, ALLOWED, 401, "any valid admin or user token")
METRICS = Rule(
    Kind.METRICS,
    ALLOWED,
    403,
    403,
    401,
    "with a metrics token configured: that token or the admin token (without one: no token needed)",
)
GS2_ADMIN = Rule(Kind.GS2_ADMIN, ALLOWED, 401, 401, 401, "GS2: the admin token as project token")
GS2_USER = Rule(
    Kind.GS2_USER,
    ALLOWED,
    ALLOWED,
    404,
    401,
    "GS2: the admin token, or the user's own token as project token or in X-GS2-ACCESS-TOKEN; another user's "
    "queue is not found",
)
GS2_ME = Rule(
    Kind.GS2_ME,
    401,
    ALLOWED,
    ALLOWED,
    401,
    "GS2 `user/me`: a user token in X-GS2-ACCESS-TOKEN, acting on its own user only (any other user's job is "
    "not found)",
)

SIGNED = Rule(
    Kind.SIGNED,
    ALLOWED,
    ALLOWED,
    ALLOWED,
    ALLOWED,
    "no token: the request carries its own credential, which the endpoint verifies (a signed stamp sheet or "
    "task, a signed login body, or a signed, expiring download/upload URL that an admin call handed out)",
)
GS2_WEB_SOCKET = Rule(
    Kind.PUBLIC,
    ALLOWED,
    ALLOWED,
    ALLOWED,
    ALLOWED,
    "GS2's WebSocket: anyone may connect; each message carries its token and is answered by the REST route the "
    "SDK's REST client would call, under that route's rule",
)

_V1 = "/api/v1"
_V1_USER = _V1 + "/namespaces/{namespace}/users/{user_id}"
_GS2 = "/job-queue"
_GS2_USER = _GS2 + "/{namespaceName}/user/{userId}"
_GS2_ME = _GS2 + "/{namespaceName}/user/me"
_GW = "/gateway"
_GW_USER = _GW + "/{namespaceName}/session/user/{userId}"
_GW_ME = _GW + "/{namespaceName}/session/user/me"
ANY_METHOD = "*"

MATRIX: dict[tuple[str, str], Rule] = {
    # ---- health, metrics, documents, UI -----------------------------------------------------------------------
    ("GET", "/health"): PUBLIC,
    ("GET", "/metrics"): METRICS,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    ("GET", "/"): PUBLIC,
    ("GET", "/ui"): PUBLIC,
    (ANY_METHOD, "/ui"): PUBLIC,  # the UI's static files; every datum they show comes from the API
    # ---- PocketBase job API (superuser only) ------------------------------------------------------------------
    ("POST", "/api/jobs/enqueue"): ADMIN_ONLY,
    ("POST", "/api/jobs/enqueue/batch"): ADMIN_ONLY,
    ("GET", "/api/jobs"): ADMIN_ONLY,
    ("GET", "/api/jobs/stats"): ADMIN_ONLY,
    ("GET", "/api/jobs/{job_id}"): ADMIN_ONLY,
    ("POST", "/api/jobs/{job_id}/requeue"): ADMIN_ONLY,
    ("DELETE", "/api/jobs/{job_id}"): ADMIN_ONLY,
    # ---- the demo (go-webdb-template): registering a job is an enqueue, so admin only ------------------------
    ("POST", "/api/dm-jobqueue/register"): ADMIN_ONLY,
    # ---- events ----------------------------------------------------------------------------------------------
    ("GET", "/api/events"): USER_QUERY,
    # ---- Conveyor's API: management ------------------------------------------------------------------------
    ("POST", _V1 + "/jobs"): ADMIN_ONLY,
    ("POST", _V1 + "/jobs/batch"): ADMIN_ONLY,
    ("GET", _V1 + "/jobs"): ADMIN_ONLY,
    ("GET", _V1 + "/jobs/{job_id}"): ADMIN_ONLY,
    ("DELETE", _V1 + "/jobs/{job_id}"): ADMIN_ONLY,
    ("POST", _V1 + "/jobs/{job_id}/cancel"): ADMIN_ONLY,
    ("POST", _V1 + "/jobs/{job_id}/requeue"): ADMIN_ONLY,
    ("POST", _V1 + "/jobs/{job_id}/run-now"): ADMIN_ONLY,
    ("GET", _V1 + "/jobs/{job_id}/attempts"): ADMIN_ONLY,
    ("GET", _V1 + "/jobs/{job_id}/result"): ADMIN_ONLY,
    ("GET", _V1 + "/dead-letters"): ADMIN_ONLY,
    ("GET", _V1 + "/dead-letters/{job_id}"): ADMIN_ONLY,
    ("POST", _V1 + "/dead-letters/{job_id}/requeue"): ADMIN_ONLY,
    ("DELETE", _V1 + "/dead-letters/{job_id}"): ADMIN_ONLY,
    ("GET", _V1 + "/stats"): ADMIN_ONLY,
    ("GET", _V1 + "/queues"): ADMIN_ONLY,
    ("GET", _V1 + "/queues/{queue}"): ADMIN_ONLY,
    ("PATCH", _V1 + "/queues/{queue}"): ADMIN_ONLY,
    ("POST", _V1 + "/queues/{queue}/pause"): ADMIN_ONLY,
    ("POST", _V1 + "/queues/{queue}/resume"): ADMIN_ONLY,
    ("GET", _V1 + "/workers"): ADMIN_ONLY,
    ("GET", _V1 + "/schedules"): ADMIN_ONLY,
    ("POST", _V1 + "/schedules"): ADMIN_ONLY,
    ("GET", _V1 + "/schedules/{name}"): ADMIN_ONLY,
    ("PATCH", _V1 + "/schedules/{name}"): ADMIN_ONLY,
    ("DELETE", _V1 + "/schedules/{name}"): ADMIN_ONLY,
    ("POST", _V1 + "/schedules/{name}/pause"): ADMIN_ONLY,
    ("POST", _V1 + "/schedules/{name}/resume"): ADMIN_ONLY,
    ("POST", _V1 + "/schedules/{name}/trigger"): ADMIN_ONLY,
    ("GET", _V1 + "/schedules/{name}/runs"): ADMIN_ONLY,
    ("POST", _V1 + "/namespaces"): ADMIN_ONLY,
    ("GET", _V1 + "/namespaces"): ADMIN_ONLY,
    ("GET", _V1 + "/namespaces/{name}"): ADMIN_ONLY,
    ("PATCH", _V1 + "/namespaces/{name}"): ADMIN_ONLY,
    ("DELETE", _V1 + "/namespaces/{name}"): ADMIN_ONLY,
    ("POST", _V1 + "/tokens"): ADMIN_ONLY,
    ("GET", _V1 + "/admin-tokens"): ADMIN_ONLY,
    ("POST", _V1 + "/admin-tokens"): ADMIN_ONLY,
    ("DELETE", _V1 + "/admin-tokens/{name}"): ADMIN_ONLY,
    ("POST", _V1 + "/token-secret/rotate"): ADMIN_ONLY,
    ("GET", _V1 + "/me"): ANY_TOKEN,
    # ---- GS2 administration and user data (Conveyor's API) ---------------------------------------------------
    ("GET", _V1 + "/gs2/keys"): ADMIN_ONLY,
    ("POST", _V1 + "/gs2/keys"): ADMIN_ONLY,
    ("GET", _V1 + "/gs2/keys/{name}"): ADMIN_ONLY,
    ("DELETE", _V1 + "/gs2/keys/{name}"): ADMIN_ONLY,
    ("POST", _V1 + "/gs2/keys/{name}/rotate"): ADMIN_ONLY,
    ("POST", _V1 + "/gs2/keys/{name}/login-body"): ADMIN_ONLY,
    ("POST", _V1 + "/gs2/stamp-sheets"): ADMIN_ONLY,
    ("POST", _V1 + "/gs2/stamp-tasks"): ADMIN_ONLY,
    ("GET", _V1 + "/users/{user_id}/data"): ADMIN_ONLY,
    ("POST", _V1 + "/users/{user_id}/data"): ADMIN_ONLY,
    ("DELETE", _V1 + "/users/{user_id}/data"): ADMIN_ONLY,
    # ---- Conveyor's API: per user (GS2 semantics). Push is a server-side call: admin only ------------------
    ("POST", _V1_USER + "/jobs"): ADMIN_ONLY,
    ("GET", _V1_USER + "/jobs"): USER,
    ("GET", _V1_USER + "/jobs/{job_id}"): USER,
    ("DELETE", _V1_USER + "/jobs/{job_id}"): USER,
    ("GET", _V1_USER + "/jobs/{job_id}/attempts"): USER,
    ("GET", _V1_USER + "/jobs/{job_id}/result"): USER,
    ("POST", _V1_USER + "/run"): USER,
    # ---- GS2-JobQueue ----------------------------------------------------------------------------------------
    ("POST", "/identifier/projectToken/login"): PUBLIC,  # checks the client secret it is given
    ("GET", _GS2 + "/system/version"): GS2_ADMIN,
    ("GET", _GS2 + "/"): GS2_ADMIN,
    ("POST", _GS2 + "/"): GS2_ADMIN,
    ("GET", _GS2 + "/{namespaceName}/status"): GS2_ADMIN,
    ("GET", _GS2 + "/{namespaceName}"): GS2_ADMIN,
    ("PUT", _GS2 + "/{namespaceName}"): GS2_ADMIN,
    ("DELETE", _GS2 + "/{namespaceName}"): GS2_ADMIN,
    ("POST", _GS2_ME + "/job/run"): GS2_ME,
    ("GET", _GS2_ME + "/job/{jobName}/result"): GS2_ME,
    ("DELETE", _GS2_ME + "/job/{jobName}"): GS2_ME,
    ("POST", _GS2_USER + "/job"): GS2_ADMIN,  # PushByUserId: a server-side call, never a game client's
    ("POST", _GS2_USER + "/job/run"): GS2_USER,
    ("GET", _GS2_USER + "/job"): GS2_USER,
    ("GET", _GS2_USER + "/job/{jobName}/result"): GS2_USER,
    ("GET", _GS2_USER + "/job/{jobName}"): GS2_USER,
    ("DELETE", _GS2_USER + "/job/{jobName}"): GS2_USER,
    ("GET", _GS2_USER + "/dead"): GS2_USER,
    ("GET", _GS2_USER + "/dead/{deadLetterJobName}"): GS2_USER,
    ("DELETE", _GS2_USER + "/dead/{deadLetterJobName}"): GS2_USER,
    ("POST", _GS2 + "/stamp/job"): SIGNED,
    ("POST", _GS2 + "/stamp/job/delete"): SIGNED,
    ("POST", _GS2 + "/system/dump/user/{userId}"): GS2_ADMIN,
    ("GET", _GS2 + "/system/dump/user/{userId}"): GS2_ADMIN,
    ("GET", _GS2 + "/system/dump/user/{userId}/data"): SIGNED,
    ("POST", _GS2 + "/system/clean/user/{userId}"): GS2_ADMIN,
    ("GET", _GS2 + "/system/clean/user/{userId}"): GS2_ADMIN,
    ("POST", _GS2 + "/system/import/user/{userId}/prepare"): GS2_ADMIN,
    ("PUT", _GS2 + "/system/import/user/{userId}/upload/{uploadToken}"): SIGNED,
    ("POST", _GS2 + "/system/import/user/{userId}"): GS2_ADMIN,
    ("GET", _GS2 + "/system/import/user/{userId}/{uploadToken}"): GS2_ADMIN,
    ("GET", _GS2 + "/system/import/user/{userId}/{uploadToken}/report"): SIGNED,
    # (GS2-Gateway's user data, under /gateway/system, has the same rules: see the gateway rows below)
    # ---- GS2-Auth: a game server obtains a player's access token ---------------------------------------------
    ("POST", "/auth/login"): GS2_ADMIN,
    ("POST", "/auth/login/signed"): SIGNED,
    ("POST", "/auth/federation"): GS2_ADMIN,
    ("POST", "/auth/timeoffset/token"): GS2_ADMIN,
    ("GET", "/auth/system/version"): GS2_ADMIN,
    # ---- GS2-Gateway: the WebSocket (each message carries its own credentials and is answered by the REST route
    # below or above that the SDK's REST client would call, through this same guard) and the gateway calls -------
    ("WS", "/"): GS2_WEB_SOCKET,
    ("GET", _GW + "/system/version"): GS2_ADMIN,
    ("GET", _GW + "/"): GS2_ADMIN,
    ("POST", _GW + "/"): GS2_ADMIN,
    ("GET", _GW + "/{namespaceName}/status"): GS2_ADMIN,
    ("GET", _GW + "/{namespaceName}"): GS2_ADMIN,
    ("PUT", _GW + "/{namespaceName}"): GS2_ADMIN,
    ("DELETE", _GW + "/{namespaceName}"): GS2_ADMIN,
    ("GET", _GW_ME): GS2_ME,  # DescribeWebSocketSessions: the access token's own sessions
    ("POST", _GW_ME + "/user"): GS2_ME,  # SetUserId: binds the WebSocket connection it came over
    ("GET", _GW_USER): GS2_USER,
    ("POST", _GW_USER + "/user"): GS2_ADMIN,
    ("POST", _GW_USER + "/notification"): GS2_ADMIN,
    ("DELETE", _GW_USER): GS2_ADMIN,
    ("DELETE", _GW + "/{namespaceName}/session"): GS2_ADMIN,
    ("POST", _GW + "/system/dump/user/{userId}"): GS2_ADMIN,
    ("GET", _GW + "/system/dump/user/{userId}"): GS2_ADMIN,
    ("GET", _GW + "/system/dump/user/{userId}/data"): SIGNED,
    ("POST", _GW + "/system/clean/user/{userId}"): GS2_ADMIN,
    ("GET", _GW + "/system/clean/user/{userId}"): GS2_ADMIN,
    ("POST", _GW + "/system/import/user/{userId}/prepare"): GS2_ADMIN,
    ("PUT", _GW + "/system/import/user/{userId}/upload/{uploadToken}"): SIGNED,
    ("POST", _GW + "/system/import/user/{userId}"): GS2_ADMIN,
    ("GET", _GW + "/system/import/user/{userId}/{uploadToken}"): GS2_ADMIN,
    ("GET", _GW + "/system/import/user/{userId}/{uploadToken}/report"): SIGNED,
    ("PUT", _GW + "/{namespaceName}/user/me/firebase/token"): GS2_ME,
    ("GET", _GW + "/{namespaceName}/user/me/firebase/token"): GS2_ME,
    ("DELETE", _GW + "/{namespaceName}/user/me/firebase/token"): GS2_ME,
    ("PUT", _GW + "/{namespaceName}/user/{userId}/firebase/token"): GS2_USER,
    ("GET", _GW + "/{namespaceName}/user/{userId}/firebase/token"): GS2_USER,
    ("DELETE", _GW + "/{namespaceName}/user/{userId}/firebase/token"): GS2_USER,
    ("POST", _GW + "/{namespaceName}/user/{userId}/firebase/token/notification"): GS2_ADMIN,
    # ---- operations Conveyor does not offer answer GS2's "not supported" 404 to anyone ------------------------
    **{
        (method, prefix + "/{rest:path}"): PUBLIC
        for prefix in (_GS2, "/auth", "/gateway")
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
    },
}

_USER_PARAMS = {Kind.USER: ("namespace", "user_id"), Kind.GS2_USER: ("namespaceName", "userId")}


# ---- the route table -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteEntry:
    method: str
    path: str
    route: BaseRoute
    guarded: bool  # whether the guard dependency runs for it (API and WebSocket routes)


def route_entries(api: FastAPI) -> Iterator[RouteEntry]:
    """Every (method, path) the application serves, from its own route table (included routers flattened).
    HEAD is left out: Starlette adds it beside GET and it answers as GET does."""
    for context in iter_route_contexts(api.routes):
        route = context.original_route
        path = context.path or ""
        if isinstance(route, APIRoute):
            for method in sorted(context.methods or ()):
                yield RouteEntry(method, path, route, True)
        elif isinstance(route, APIWebSocketRoute):
            yield RouteEntry("WS", path, route, True)
        elif isinstance(route, Mount):
            yield RouteEntry(ANY_METHOD, path, route, False)
        else:
            for method in sorted((getattr(context, "methods", None) or {"GET"}) - {"HEAD"}):
                yield RouteEntry(method, path, route, False)


def missing_rules(api: FastAPI) -> list[str]:
    """Routes without a rule, and unguarded routes whose rule is not public (both must never ship)."""
    problems = []
    for entry in route_entries(api):
        rule = MATRIX.get((entry.method, entry.path))
        if rule is None:
            problems.append(f"{entry.method} {entry.path}: no rule in conveyor.server.access.MATRIX")
        elif not entry.guarded and rule.kind not in (Kind.PUBLIC, Kind.SIGNED):
            problems.append(f"{entry.method} {entry.path}: rule {rule.kind.value} but no guard runs for it")
    return problems


def check_routes(api: FastAPI) -> dict[int, dict[str, Rule]]:
    """Fail the build for a route without a rule; the rules by route object (what the guard looks up)."""
    problems = missing_rules(api)
    if problems:
        raise RuntimeError("routes without an authorization rule:\n  " + "\n  ".join(problems))
    table: dict[int, dict[str, Rule]] = {}
    for entry in route_entries(api):
        if entry.guarded:
            method = "WEBSOCKET" if entry.method == "WS" else entry.method
            table.setdefault(id(entry.route), {})[method] = MATRIX[(entry.method, entry.path)]
    return table


# ---- the guard -------------------------------------------------------------------------------------------------


class Authenticator(Protocol):
    """Where the guard learns who a token stands for (the server's `ServerContext`; `ServerAuth` for a bare
    router in tests)."""

    @property
    def metrics_token(self) -> str | None: ...

    async def authenticate_token(self, token: str | None) -> Principal | None:
        """The principal of `token`; None when it is missing or not valid (forged, expired, revoked)."""


class Guard:
    """The dependency that enforces the matrix. Sets `request.state.principal` (None for a public route called
    without a token) and, for per-user rules, `request.state.user_id` (with `me` resolved).

    >>> guard = Guard(ctx)
    >>> api = FastAPI(dependencies=[Depends(guard)])
    >>> ...  # add every route
    >>> guard.install(api)
    """

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator
        self._table: dict[int, dict[str, Rule]] | None = None

    def install(self, api: FastAPI) -> None:
        """Check every route has a rule (raises otherwise) and take the table; call after all routes exist."""
        self._table = check_routes(api)
        self._api = api

    async def __call__(self, request: HTTPConnection) -> None:
        rule = self._rule(request)
        ctx = self.authenticator
        request.state.principal = None
        kind = rule.kind
        if kind is Kind.PUBLIC or kind is Kind.SIGNED:
            return
        if kind is Kind.METRICS:
            await _metrics(request, ctx)
            return
        if kind in (Kind.GS2_ADMIN, Kind.GS2_USER, Kind.GS2_ME):
            await _gs2(request, ctx, kind)
            return
        principal = await ctx.authenticate_token(_bearer(request))
        if principal is None:
            raise Unauthorized(_missing_message(request))
        request.state.principal = principal
        if kind is Kind.ANY:
            return
        if kind is Kind.ADMIN:
            if not principal.is_admin:
                raise Forbidden("This call needs the admin token; user tokens reach only their own user's jobs")
            return
        if kind is Kind.USER:
            namespace = str(request.path_params.get("namespace", ""))
            request.state.user_id = _own_user(principal, namespace, str(request.path_params.get("user_id", "")))
            return
        if kind is Kind.USER_QUERY:
            if principal.is_admin:
                return
            asked_user = request.query_params.get("user_id")
            if asked_user is not None and asked_user not in ("me", principal.user_id):
                raise Forbidden("A user token may reach only its own user's events")
            asked_ns = request.query_params.get("namespace")
            if asked_ns is not None and principal.namespace is not None and asked_ns != principal.namespace:
                raise Forbidden("This token is limited to another namespace")
            return
        raise AssertionError(f"unhandled rule {kind}")  # pragma: no cover

    def _rule(self, request: HTTPConnection) -> Rule:
        route = request.scope.get("route")
        method = request.scope.get("method", "WEBSOCKET")
        if self._table is None:
            raise RuntimeError("the access guard was not installed (create_app calls Guard.install)")
        rules = self._table.get(id(route))
        if rules is None:  # a route added after the app was built: look again, still fail closed
            self._table = check_routes(self._api)
            rules = self._table.get(id(route), {})
        rule = rules.get(method) or (rules.get("GET") if method == "HEAD" else None)
        if rule is None:
            raise RuntimeError(f"no authorization rule for {method} {request.url.path}")
        return rule


def _own_user(principal: Principal, namespace: str, user_id: str) -> str:
    """The user a per-user route acts for: `me` is the token's own user; another user's data is forbidden."""
    if user_id == "me":
        if principal.user_id is None:
            raise ValidationError(
                "'me' names the user of a user token; the admin token must give a user id", field="user_id"
            )
        user_id = principal.user_id
    if not principal.may_see(namespace, user_id):
        raise Forbidden("This token belongs to another user or namespace")
    return user_id


def _missing_message(request: HTTPConnection) -> str:
    if request.headers.get("authorization"):
        return "Invalid token: not an admin token, nor a valid, unexpired user token of this server"
    return "Authorization header is required (Authorization: Bearer <token>)"


def _bearer(request: HTTPConnection) -> str | None:
    """The bearer token of the request, if it sent one in the Authorization header (the only place tokens are
    read from: never a URL, which ends up in logs, history and Referer headers)."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'")
    return token.strip()


def _gs2_bearer(request: HTTPConnection) -> str | None:
    try:
        return _bearer(request)
    except Unauthorized:
        return None


async def _metrics(request: HTTPConnection, ctx: Authenticator) -> None:
    expected = ctx.metrics_token
    if not expected:
        return
    token = _bearer(request)
    if token is None:
        raise Unauthorized("/metrics needs the metrics token (Authorization: Bearer <metrics token>)")
    if hmac.compare_digest(token.encode(), expected.encode()):
        return
    principal = await ctx.authenticate_token(token)
    if principal is None:
        raise Unauthorized("Invalid token for /metrics: give the metrics token or the admin token")
    if not principal.is_admin:
        raise Forbidden("/metrics needs the metrics token or the admin token")
    request.state.principal = principal


def _gs2_unauthorized(message: str) -> GS2Error:
    return GS2Error(401, "auth", message, "jobQueue.auth.error.unauthorized")


async def _gs2(request: HTTPConnection, ctx: Authenticator, kind: Kind) -> None:
    """GS2's rules, answered in GS2's error format (its SDK has no 403)."""
    try:
        if kind is Kind.GS2_ME:
            principal = await ctx.authenticate_token(request.headers.get(GS2_ACCESS_TOKEN_HEADER))
            if principal is None or principal.user_id is None:
                raise _gs2_unauthorized(f"a valid user token is required in {GS2_ACCESS_TOKEN_HEADER}")
            namespace = str(request.path_params.get("namespaceName", ""))
            if not principal.may_see(namespace, principal.user_id):
                raise GS2Error(
                    404, "namespace", f"namespace not found: {namespace}", "jobQueue.namespace.error.notFound"
                )
            request.state.principal = principal
            request.state.user_id = principal.user_id
            return
        project = await ctx.authenticate_token(_gs2_bearer(request))
        if kind is Kind.GS2_ADMIN:
            if project is None:
                raise _gs2_unauthorized("a valid project token is required (Authorization: Bearer <admin token>)")
            if not project.is_admin:
                raise _gs2_unauthorized("this operation needs the admin token as project token")
            request.state.principal = project
            return
        access = await ctx.authenticate_token(request.headers.get(GS2_ACCESS_TOKEN_HEADER))
        valid = [p for p in (project, access) if p is not None]
        if not valid:
            raise _gs2_unauthorized("a valid project token or access token is required")
        namespace = str(request.path_params.get("namespaceName", ""))
        user_id = str(request.path_params.get("userId", ""))
        allowed = [p for p in valid if p.may_see(namespace, user_id)]
        if not allowed:
            raise GS2Error(404, "user", f"no such user queue: {user_id}", "jobQueue.user.error.notFound")
        request.state.principal = allowed[0]
        request.state.user_id = user_id
    except ConveyorError as exc:
        if isinstance(exc, GS2Error) or exc.status_code != 401:
            raise
        raise _gs2_unauthorized(exc.message) from None


# ---- what endpoints read ---------------------------------------------------------------------------------------


def caller(request: HTTPConnection) -> Principal:
    """The authenticated caller of a route whose rule needs a token (set by the guard)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        raise RuntimeError(f"{request.url.path}: the access guard set no principal for this route")
    return principal


def path_user(request: HTTPConnection) -> str:
    """The user a per-user route acts for, as the guard resolved it (`me` → the token's user)."""
    user_id: str | None = getattr(request.state, "user_id", None)
    if user_id is None:
        raise RuntimeError(f"{request.url.path}: the access guard resolved no user for this route")
    return user_id


# ---- the table in words ------------------------------------------------------------------------------------------


def _cell(value: str | int) -> str:
    return "✓" if value == ALLOWED else str(value)


def render_markdown(rows: Iterable[tuple[str, str]] | None = None) -> str:
    """The matrix as the Markdown table in docs/http-api.md (`python -m conveyor.server.access` prints it)."""
    lines = [
        "| method | path | admin token | user token, own user | user token, other user | no token |",
        "|---|---|---|---|---|---|",
    ]
    for method, path in rows if rows is not None else MATRIX:
        rule = MATRIX[(method, path)]
        cells = [_cell(rule.admin), _cell(rule.own_user), _cell(rule.other_user), _cell(rule.none)]
        lines.append(f"| {method} | `{path}` | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Rules:")
    lines.append("")
    seen: list[Rule] = []
    for key in rows if rows is not None else MATRIX:
        rule = MATRIX[key]
        if rule not in seen:
            seen.append(rule)
    for rule in seen:
        lines.append(f"- **{rule.kind.value}** — {rule.meaning}.")
    return "\n".join(lines) + "\n"


def expected(rule: Rule, kind_of_caller: str) -> str | int:
    """What `kind_of_caller` ("admin", "own_user", "other_user", "none") gets under `rule`."""
    value: Any = getattr(rule, kind_of_caller)
    return value  # type: ignore[no-any-return]


DOCS_BEGIN = "<!-- access-matrix:begin -->\n"
DOCS_END = "<!-- access-matrix:end -->"


def write_docs(path: str) -> None:
    """Replace the table between the markers in `path` (docs/http-api.md) with the current matrix."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    start = text.index(DOCS_BEGIN) + len(DOCS_BEGIN)
    end = text.index(DOCS_END)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text[:start] + render_markdown() + text[end:])


if __name__ == "__main__":  # pragma: no cover
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        write_docs(sys.argv[2])  # python -m conveyor.server.access --write docs/http-api.md
    else:
        print(render_markdown(), end="")
