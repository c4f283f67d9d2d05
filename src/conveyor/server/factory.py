"""`create_app`: the FastAPI application around one Conveyor app.

The lifespan opens the store, loads the admin token and user-token secret (printing a generated admin token
once), starts the webhook dispatcher and, when asked, a Worker with its maintenance services on the same event
loop; on shutdown it ends SSE streams first, then stops the worker gracefully (running jobs finish within its grace
period, the rest are handed back), then closes the store. A store that is down at start does not stop the server:
requests answer 503 until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import Depends, FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, APIRouter

from conveyor import webhooks
from conveyor.app import Conveyor
from conveyor.demo import register_demo
from conveyor.errors import ConveyorError, StoreUnavailable
from conveyor.model import find_bad_text
from conveyor.server import demo as demo_routes
from conveyor.server import metrics as metrics_routes
from conveyor.server import notify, routes_pocketbase, routes_schedules, routes_v1
from conveyor.server.access import Guard
from conveyor.server.auth import IssuedToken, Principal
from conveyor.server.common import (
    ERROR_RESPONSES,
    STORE_UNAVAILABLE_TEXT,
    error_response,
    fix_openapi_errors,
    install_error_handlers,
)
from conveyor.server.deps import ServerContext
from conveyor.server.gs2_gateway import GatewayHub, WebSocketDispatcher
from conveyor.server.gs2_models import Grn
from conveyor.server.metrics import Metrics
from conveyor.server.schemas import HealthOut
from conveyor.server.security import SecurityHeaders
from conveyor.version import __version__
from conveyor.worker import Worker

log = logging.getLogger("conveyor.server")

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestGuard:
    """Every HTTP request passes here before any route sees it (one place, so no route can forget):

    * a body over `max_bytes` gets 413, whether announced by Content-Length or sent chunked: the body is read
      here, counting, up to the limit (routes read whole bodies anyway, so buffering costs no extra memory);
    * a JSON body holding something no store can keep or no answer can echo — a lone UTF-16 surrogate
      (`"\\ud800"`), NUL, `NaN`/`Infinity` — gets 400 naming the field (`payload.items[2]`), instead of a 500
      from an encoder deep inside. Bodies under `exempt_prefixes` (the GS2 surface, which inflates gzip bodies and
      answers in its own error format) are checked by their router with the same function.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, exempt_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt_prefixes = exempt_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        content_type = b""
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._too_large(scope, receive, send)
                    return
            elif name == b"content-type":
                content_type = value.lower()
        if scope.get("method") in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)  # bodies are not read on these routes: nothing to buffer
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to answer
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if body and (not content_type or b"json" in content_type) and not self._exempt(scope):
            problem = json_body_problem(body)
            if problem is not None:
                field, text = problem
                await error_response(400, text, error="validation_error", field=field)(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect notice, for streaming answers

        await self.app(scope, replay, send)

    def _exempt(self, scope: Scope) -> bool:
        path = str(scope.get("path", ""))
        return any(path.startswith(prefix) for prefix in self.exempt_prefixes)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            f"request body is larger than {self.max_bytes} bytes; send fewer or smaller jobs",
            error="payload_too_large",
            field="body",
        )
        response.headers["Connection"] = "close"  # the rest of the body is not read: the connection cannot be reused
        await response(scope, receive, send)


_SUSPECT_JSON = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])|NaN|Infinity")


def json_body_problem(body: bytes) -> tuple[str, str] | None:
    """(field, message) when a JSON body holds a value no store can keep (see RequestGuard), else None. Bodies
    that are not JSON at all pass: the route answers those with its own rule. A scan in C decides whether to parse
    at all, so ordinary bodies cost nothing more."""
    if _SUSPECT_JSON.search(body) is None:
        return None
    try:
        value = json.loads(body, parse_constant=_non_finite)
    except _NonFinite as exc:
        return "body", f"{exc.args[0]} is not JSON (JSON numbers are finite); send a number or null"
    except (ValueError, RecursionError):
        return None
    found = find_bad_text(value, "")
    if found is None:
        return None
    where, problem = found
    field = where.lstrip(".") or "body"
    return field, f"{field} {problem}"


class _NonFinite(ValueError):
    pass


def _non_finite(name: str) -> object:
    raise _NonFinite(name)


class LazyAuth:
    """The auth object handed to the GS2 routers: resolves the server's secrets on first use (the store may
    be down when the app is built) and checks tokens exactly as the rest of the API does."""

    def __init__(self, ctx: ServerContext) -> None:
        self._ctx = ctx

    async def authenticate(self, token: str | None) -> Principal:
        auth = await self._ctx.get_auth()
        return await auth.authenticate(token)

    async def issue(self, user_id: str, *, ttl: float) -> IssuedToken:
        """A user token (GS2-Auth login): the same kind `conveyor token USER` issues."""
        auth = await self._ctx.get_auth()
        return auth.issue(user_id, ttl=ttl)


class _EventsFromOtherProcesses:
    """The server's subscription to other processes' events (conveyor.relay): subscribed before the first request is
    served, so an SSE stream opened later misses none of them; a store that is down at start-up is retried in the
    background (its events are missed until then) rather than keeping the server from starting."""

    def __init__(self, app: Conveyor) -> None:
        self.relay = app.runtime.relay
        self.listening = False
        self._retry: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            self.listening = await self.relay.listen()
        except ConveyorError as exc:
            log.warning("events of other processes are not received yet (%s); retrying in the background", exc)
            self._retry = asyncio.create_task(self._again(), name="conveyor-relay-listen")

    async def _again(self) -> None:
        delay = 1.0
        while not self.listening:
            await asyncio.sleep(delay)
            try:
                self.listening = await self.relay.listen()
                log.warning("events of other processes are received now")
            except ConveyorError:
                delay = min(delay * 2, 30.0)

    async def stop(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
        if self.listening:
            self.listening = False
            with contextlib.suppress(Exception):
                await self.relay.unlisten()


def _gs2_routers(app: Conveyor, ctx: ServerContext, grn: Grn, hub: GatewayHub) -> list[APIRouter]:
    """The GS2-compatible surface: `/job-queue/...` (with stamp sheets and user data), `/auth/...`, the
    identifier login, Conveyor's own `/api/v1/gs2/...` (keys, issuing sheets), and GS2-Gateway's `/gateway/...`
    (its WebSocket is mounted at `/` by `create_app`)."""
    from conveyor.server import gs2, gs2_admin, gs2_auth, gs2_gateway

    auth = LazyAuth(ctx)
    return [
        gs2.build_router(app, auth, grn=grn),
        gs2.build_identifier_router(auth),
        gs2_auth.build_auth_router(app, auth, grn),
        gs2_admin.build_admin_router(grn),
        gs2_gateway.build_gateway_router(app, auth, hub, grn),
    ]


def create_app(
    conveyor_app: Conveyor,
    *,
    admin_token: str | None = None,
    demo: bool = False,
    run_worker: bool = False,
    worker_options: dict[str, Any] | None = None,
    idempotency_ttl: float = 86_400.0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    print_admin_token: bool = True,
    ui: bool = True,
    gs2_region: str | None = None,
    gs2_owner_id: str | None = None,
    metrics_token: str | None = None,
) -> FastAPI:
    """The HTTP API for `conveyor_app`. With `run_worker=True` a Worker (with rescuer, pruner and scheduler)
    runs in the server's event loop, configured by `worker_options` (conveyor.worker.Worker's arguments).

    Every route is guarded by `conveyor.server.access` (one matrix of route × caller); building an application
    with a route that has no rule there fails. `metrics_token` (else `CONVEYOR_METRICS_TOKEN`) makes `/metrics`
    need that token (or the admin token); without one `/metrics` is public."""
    ctx = ServerContext(
        app=conveyor_app,
        admin_token=admin_token,
        demo=demo,
        idempotency_ttl=idempotency_ttl,
        metrics_token=metrics_token or os.environ.get("CONVEYOR_METRICS_TOKEN") or None,
        print_admin_token=print_admin_token,
    )
    guard = Guard(ctx)
    grn = Grn.from_env(gs2_region, gs2_owner_id)  # the region and owner id in every GS2 GRN this server writes
    webhooks.register_webhook_task(conveyor_app)
    if demo:
        register_demo(conveyor_app)
    metrics = Metrics(conveyor_app)
    conveyor_app.events.add_listener(metrics.on_event)
    hub = GatewayHub(conveyor_app, grn)  # GS2-Gateway's WebSocket sessions and their notifications

    @contextlib.asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        ctx.shutdown = asyncio.Event()
        try:
            await ctx.get_auth()  # prints a token it had to generate (a fresh store without one configured)
        except StoreUnavailable as exc:
            log.warning("store unavailable at start (%s); requests answer 503 until it is back", exc.message)
        webhooks.acquire_dispatcher(conveyor_app)  # push events of this API; the worker shares it for run events
        hub.start()
        relaying = _EventsFromOtherProcesses(conveyor_app)  # workers elsewhere, transactional enqueues → SSE
        await relaying.start()
        worker_task: asyncio.Task[None] | None = None
        worker: Any = None
        if run_worker:
            options = {"install_signal_handlers": False, **(worker_options or {})}
            worker = Worker(conveyor_app, **options)
            api.state.worker = worker
            worker_task = asyncio.create_task(worker.run(), name="conveyor-worker")
        # Everything alive now (modules, routes, schemas, the app) lives as long as the server: move it out of the
        # collector's generations, so a full collection scans only what requests create. Without it each full
        # collection walked ~90k start-up objects (~29 ms every ~0.8 s under load: the whole p99 of enqueue).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            ctx.shutdown.set()
            await hub.stop()
            if worker is not None and worker_task is not None:
                worker.stop()
                # The worker bounds its own shutdown by its grace period; this bound keeps a stuck store call
                # from ever hanging the server's exit.
                limit = float(getattr(worker, "grace_period", 30.0)) + 15.0
                done, _ = await asyncio.wait({worker_task}, timeout=limit)
                if not done:
                    log.error("worker did not stop within %.0f s; cancelling it", limit)
                    worker_task.cancel()
                    await asyncio.wait({worker_task}, timeout=5.0)
                elif not worker_task.cancelled() and worker_task.exception() is not None:
                    log.error("worker stopped with an error", exc_info=worker_task.exception())
            await webhooks.release_dispatcher(conveyor_app)
            await relaying.stop()
            with contextlib.suppress(Exception):
                await conveyor_app.aclose()

    api = FastAPI(
        title="Conveyor",
        version=_version(),
        description="Conveyor job queue: the PocketBase job API, Conveyor's own API, per-user Run, events.",
        lifespan=lifespan,
        dependencies=[Depends(guard)],
    )
    api.state.conveyor = ctx
    api.state.metrics = metrics
    api.state.worker = None
    install_error_handlers(api)

    @api.get("/health", response_model=HealthOut, tags=["health"], responses={503: ERROR_RESPONSES[503]})
    async def health() -> JSONResponse:
        """200 when the store answers; 503 when it does not (the reason goes to the server log, not to the caller)."""
        try:
            await conveyor_app.runtime.on_home(conveyor_app.store.ping)
        except ConveyorError as exc:  # public: no store detail (hosts, paths) in the answer, it goes to the log
            log.warning("health: store unavailable: %s", exc.message)
            return error_response(503, STORE_UNAVAILABLE_TEXT, error="store_unavailable")
        return JSONResponse({"status": "ok", "store": conveyor_app.store.scheme})

    api.include_router(routes_pocketbase.router)
    api.include_router(routes_v1.admin)
    api.include_router(routes_v1.users)
    api.include_router(routes_schedules.router)
    api.include_router(notify.router)
    api.include_router(metrics_routes.router)
    if demo:
        api.include_router(demo_routes.router)
    gs2_prefixes: list[str] = []  # answered in GS2's error format, and its bodies read by its own routers
    dispatcher = WebSocketDispatcher(hub)

    async def gs2_web_socket(websocket: WebSocket) -> None:
        """GS2's WebSocket (`Gs2WebSocketSession(..., steady_endpoint=\"http://HOST:PORT\")` connects here)."""
        await dispatcher(websocket)

    api.add_api_websocket_route("/", gs2_web_socket)
    for router in _gs2_routers(conveyor_app, ctx, grn, hub):
        api.include_router(router)
        if router.route_class is not APIRoute and router.prefix:
            gs2_prefixes.append(router.prefix + "/")
    if ui:
        from conveyor.ui import mount_ui

        mount_ui(api)

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
            api.openapi_schema = fix_openapi_errors(schema)
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        """Last line of defence: an unexpected error answers 500 JSON (and is logged), never HTML or a reset."""
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal error; see the server log", error="internal_error")

    api.add_exception_handler(Exception, internal_error)
    api.add_middleware(RequestGuard, max_bytes=max_body_bytes, exempt_prefixes=tuple(gs2_prefixes))
    api.add_middleware(SecurityHeaders)  # outermost: its headers go on every answer, 413s and 500s included
    guard.install(api)
    return api


def _version() -> str:
    return __version__
