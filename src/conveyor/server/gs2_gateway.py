"""GS2-Gateway: the WebSocket the official SDK connects to, the gateway REST calls, and job-queue notifications.

* **The WebSocket** (`Gs2WebSocketSession(credential, region, steady_endpoint="http://HOST:PORT")` connects to
  `ws://HOST:PORT/`). Every message the SDK sends is a JSON object with `x_gs2: {service, component, function,
  requestId}`, the credentials (`xGs2ProjectToken`, `xGs2AccessToken`, ...) and the request's fields; every answer
  is `{"requestId", "status", "body"}`, the body being what the REST call answers (GS2's error body on an error).
  A message is not handled here: `WebSocketDispatcher` turns it into the very HTTP request the same SDK's REST
  client sends (`REST_ROUTES`, read from the SDK's `rest.py`) and runs it through the whole application in
  process, so the access matrix, the duplication avoider and every handler are the REST route's own. The login
  handshake (`BasicGs2Credential`) is `identifier/projectToken/login`, routed the same way.
* **Sessions**: a connection is bound to (gateway namespace, user) by `set_user_id` sent over it (the REST route
  learns which connection from the ASGI scope, which no HTTP client can set). `GatewayHub` keeps the connections of
  this server process.
* **Notifications**: the hub subscribes to the runtime's event bus (as the SSE endpoint does) and sends each
  `push`/`run` event of a job-queue namespace whose `pushNotification`/`runNotification` is on to that user's
  sessions only, as GS2's notification message (`job_queue_notification`). `send_notification` sends the caller's
  own subject and payload the same way.
* **Gateway namespaces** live in the store's key-value space (`gs2:gateway:ns:{name}`, and the list of names at
  `gs2:gateway:names`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from starlette.websockets import WebSocket, WebSocketDisconnect

from conveyor.app import Conveyor
from conveyor.errors import NotFound, ValidationError
from conveyor.events import Event, Subscription
from conveyor.ids import uuid7
from conveyor.model import JSON, decode_name_cursor, encode_name_cursor, utcnow, validate_name
from conveyor.server.access import path_user
from conveyor.server.gs2_common import GS2_RESPONSES, GS2Auth, GS2Route, json_body, openapi_body, unsupported_route
from conveyor.server.gs2_models import DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, Grn, GS2Error, check_user_id, error_body
from conveyor.server.gs2_userdata import UserDataSource, add_user_data_routes
from conveyor.version import __version__
from conveyor.webhooks import is_system_event

log = logging.getLogger("conveyor.server.gs2_gateway")

GATEWAY_PREFIX = "/gateway"
WEB_SOCKET_PATH = "/"
CONNECTION_SCOPE_KEY = "conveyor.gateway.connection"
"""The ASGI scope key naming the WebSocket connection a dispatched request came over (set only in process)."""
PUSH_ISSUER = "Gs2JobQueue:PushNotification"
RUN_ISSUER = "Gs2JobQueue:RunNotification"
SEND_ISSUER = "Gs2Gateway:SendNotification"
MAX_IN_FLIGHT = 16
"""Requests of one connection handled at once; more wait (a Run takes as long as its job)."""
NAMESPACE_CACHE_SECONDS = 1.0
SEND_TIMEOUT = 5.0
"""A message not taken by the client's socket within this many seconds closes the connection."""

# ---- the SDK's WebSocket functions → the REST routes its REST clients call (gs2 1.1.255) -------------------------

_NAMESPACE_ROUTES = {
    "describeNamespaces": ("GET", "/"),
    "createNamespace": ("POST", "/"),
    "getNamespaceStatus": ("GET", "/{namespaceName}/status"),
    "getNamespace": ("GET", "/{namespaceName}"),
    "updateNamespace": ("PUT", "/{namespaceName}"),
    "deleteNamespace": ("DELETE", "/{namespaceName}"),
    "getServiceVersion": ("GET", "/system/version"),
    "dumpUserDataByUserId": ("POST", "/system/dump/user/{userId}"),
    "checkDumpUserDataByUserId": ("GET", "/system/dump/user/{userId}"),
    "cleanUserDataByUserId": ("POST", "/system/clean/user/{userId}"),
    "checkCleanUserDataByUserId": ("GET", "/system/clean/user/{userId}"),
    "prepareImportUserDataByUserId": ("POST", "/system/import/user/{userId}/prepare"),
    "importUserDataByUserId": ("POST", "/system/import/user/{userId}"),
    "checkImportUserDataByUserId": ("GET", "/system/import/user/{userId}/{uploadToken}"),
}


def _under(prefix: str, routes: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    return {name: (method, prefix + path) for name, (method, path) in routes.items()}


REST_ROUTES: dict[tuple[str, str], tuple[str, str]] = {
    **{("jobQueue", k): v for k, v in _under("/job-queue", _NAMESPACE_ROUTES).items()},
    **{
        ("jobQueue", k): ("POST" if m == "P" else "GET" if m == "G" else "DELETE", "/job-queue" + p)
        for k, (m, p) in {
            "describeJobsByUserId": ("G", "/{namespaceName}/user/{userId}/job"),
            "getJobByUserId": ("G", "/{namespaceName}/user/{userId}/job/{jobName}"),
            "pushByUserId": ("P", "/{namespaceName}/user/{userId}/job"),
            "run": ("P", "/{namespaceName}/user/me/job/run"),
            "runByUserId": ("P", "/{namespaceName}/user/{userId}/job/run"),
            "deleteJob": ("D", "/{namespaceName}/user/me/job/{jobName}"),
            "deleteJobByUserId": ("D", "/{namespaceName}/user/{userId}/job/{jobName}"),
            "pushByStampSheet": ("P", "/stamp/job"),
            "deleteByStampTask": ("P", "/stamp/job/delete"),
            "getJobResult": ("G", "/{namespaceName}/user/me/job/{jobName}/result"),
            "getJobResultByUserId": ("G", "/{namespaceName}/user/{userId}/job/{jobName}/result"),
        }.items()
    },
    **{("gateway", k): v for k, v in _under(GATEWAY_PREFIX, _NAMESPACE_ROUTES).items()},
    ("gateway", "describeWebSocketSessions"): ("GET", "/gateway/{namespaceName}/session/user/me"),
    ("gateway", "describeWebSocketSessionsByUserId"): ("GET", "/gateway/{namespaceName}/session/user/{userId}"),
    ("gateway", "setUserId"): ("POST", "/gateway/{namespaceName}/session/user/me/user"),
    ("gateway", "setUserIdByUserId"): ("POST", "/gateway/{namespaceName}/session/user/{userId}/user"),
    ("gateway", "sendNotification"): ("POST", "/gateway/{namespaceName}/session/user/{userId}/notification"),
    ("gateway", "disconnectByUserId"): ("DELETE", "/gateway/{namespaceName}/session/user/{userId}"),
    ("gateway", "disconnectAll"): ("DELETE", "/gateway/{namespaceName}/session"),
    ("gateway", "setFirebaseToken"): ("PUT", "/gateway/{namespaceName}/user/me/firebase/token"),
    ("gateway", "setFirebaseTokenByUserId"): ("PUT", "/gateway/{namespaceName}/user/{userId}/firebase/token"),
    ("gateway", "getFirebaseToken"): ("GET", "/gateway/{namespaceName}/user/me/firebase/token"),
    ("gateway", "getFirebaseTokenByUserId"): ("GET", "/gateway/{namespaceName}/user/{userId}/firebase/token"),
    ("gateway", "deleteFirebaseToken"): ("DELETE", "/gateway/{namespaceName}/user/me/firebase/token"),
    ("gateway", "deleteFirebaseTokenByUserId"): ("DELETE", "/gateway/{namespaceName}/user/{userId}/firebase/token"),
    ("gateway", "sendMobileNotificationByUserId"): (
        "POST",
        "/gateway/{namespaceName}/user/{userId}/firebase/token/notification",
    ),
    ("auth", "login"): ("POST", "/auth/login"),
    ("auth", "loginBySignature"): ("POST", "/auth/login/signed"),
    ("auth", "federation"): ("POST", "/auth/federation"),
    ("auth", "issueTimeOffsetTokenByUserId"): ("POST", "/auth/timeoffset/token"),
    ("auth", "getServiceVersion"): ("GET", "/auth/system/version"),
    ("identifier", "login"): ("POST", "/identifier/projectToken/login"),
}
"""(service, function) → (method, path template). Path parameters are taken from the message's fields."""

_HEADER_FIELDS = {
    "xGs2ClientId": "X-GS2-CLIENT-ID",
    "xGs2RequestId": "X-GS2-REQUEST-ID",
    "xGs2AccessToken": "X-GS2-ACCESS-TOKEN",
    "xGs2DuplicationAvoider": "X-GS2-DUPLICATION-AVOIDER",
    "timeOffsetToken": "X-GS2-TIME-OFFSET-TOKEN",
}
_DROPPED_FIELDS = {"x_gs2", "xGs2ProjectToken", "accessToken", *_HEADER_FIELDS}
"""Message fields that are credentials or metadata, never part of the REST body or query."""


def rest_request(message: dict[str, Any]) -> tuple[str, str, str, list[tuple[str, str]], bytes]:
    """(method, path, query string, headers, body) of the REST call the SDK would have made for this WebSocket
    message; a GS2Error (404) for a function Conveyor does not know."""
    meta = message.get("x_gs2")
    if not isinstance(meta, dict):
        raise GS2Error(400, "x_gs2", "a message needs x_gs2: {service, component, function, requestId}", "request")
    service, function = str(meta.get("service")), str(meta.get("function"))
    route = REST_ROUTES.get((service, function))
    if route is None:
        raise GS2Error(
            404,
            "operation",
            f"{service}.{function} is not a GS2 operation Conveyor offers over WebSocket (see docs/gs2.md)",
            f"{service}.operation.error.notSupported",
        )
    method, template = route
    used: set[str] = set()

    def fill(name: str) -> str:
        used.add(name)
        value = message.get(name)
        return "null" if value is None or value == "" else quote(str(value), safe="")

    path = template
    while "{" in path:
        start = path.index("{")
        end = path.index("}", start)
        path = path[:start] + fill(path[start + 1 : end]) + path[end + 1 :]
    headers = [("content-type", "application/json")]
    project = message.get("xGs2ProjectToken")
    if project and project != "None":
        headers.append(("authorization", f"Bearer {project}"))
    for key, header in _HEADER_FIELDS.items():
        value = message.get(key)
        if value:
            headers.append((header.lower(), str(value)))
    rest = {k: v for k, v in message.items() if k not in _DROPPED_FIELDS and k not in used}
    query, body = "", b""
    if method in ("GET", "DELETE"):
        query = urlencode(
            [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in rest.items() if v is not None],
        )
    else:
        if service == "identifier":  # the SDK's login body is the client id and secret only
            rest = {k: message.get(k) for k in ("client_id", "client_secret")}
        body = json.dumps(rest, ensure_ascii=False).encode()
    return method, path, query, headers, body


# ---- sessions --------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Connection:
    """One WebSocket connection; `namespace`/`user_id` are set by `set_user_id`."""

    id: str
    websocket: WebSocket
    created: datetime = field(default_factory=utcnow)
    updated: datetime = field(default_factory=utcnow)
    namespace: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    allow_concurrent_access: bool = True
    revision: int = 0
    closed: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, document: dict[str, Any]) -> bool:
        """Send one message; False when the connection is gone (it is then forgotten by its reader)."""
        if self.closed:
            return False
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                async with self.lock:
                    await self.websocket.send_text(text)
        except TimeoutError:  # a client that reads nothing must not hold up delivery to everyone else
            log.warning("GS2 gateway: connection %s read nothing for %.0f s; closing it", self.id, SEND_TIMEOUT)
            self.closed = True
            with contextlib.suppress(Exception):
                await self.websocket.close(1008)
            return False
        except Exception:  # the peer went away between the check and the send
            return False
        return True

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            async with self.lock:
                await self.websocket.close(1000)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


class GatewayHub:
    """The WebSocket connections of this server process, their user bindings, and notification delivery."""

    def __init__(self, app: Conveyor, grn: Grn) -> None:
        self.app = app
        self.grn = grn
        self.connections: dict[str, Connection] = {}
        self._bound_users: dict[str, int] = {}
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._namespaces: dict[str, tuple[float, Any]] = {}

    # ---- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe to the event bus (call on the server's loop, from its lifespan)."""
        if self._task is None:
            self._sub = self.app.events.subscribe(self._wants, maxsize=10_000)
            self._task = asyncio.create_task(self._deliver_events(self._sub), name="conveyor-gs2-gateway")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        for conn in list(self.connections.values()):
            await conn.close()
        self.connections.clear()
        self._bound_users.clear()

    def add(self, websocket: WebSocket) -> Connection:
        conn = Connection(str(uuid7()), websocket)
        self.connections[conn.id] = conn
        return conn

    def remove(self, conn: Connection) -> None:
        if self.connections.pop(conn.id, None) is not None:
            self._unbind(conn)

    # ---- binding ---------------------------------------------------------------------------------------------

    def _unbind(self, conn: Connection) -> None:
        if conn.user_id is not None:
            left = self._bound_users.get(conn.user_id, 0) - 1
            if left > 0:
                self._bound_users[conn.user_id] = left
            else:
                self._bound_users.pop(conn.user_id, None)
        conn.namespace = conn.user_id = None

    async def bind(
        self,
        conn_id: str,
        namespace: str,
        user_id: str,
        *,
        allow_concurrent_access: bool,
        session_id: str | None,
        force: bool,
    ) -> Connection:
        """GS2 SetUserId. With `allow_concurrent_access` false (on this call or on a session the user already has
        in the namespace), another live session of the user is a 409 conflict unless `force`, which disconnects
        it. A session with the same `session_id` is the same client reconnecting: it is replaced, never counted."""
        conn = self.connections.get(conn_id)
        if conn is None or conn.closed:
            raise GS2Error(404, "webSocketSession", "the WebSocket connection is gone", "gateway.session.notFound")
        others = [c for c in self.sessions(namespace, user_id) if c is not conn]
        replaced = [c for c in others if session_id and c.session_id == session_id]
        rest = [c for c in others if c not in replaced]
        exclusive = not allow_concurrent_access or any(not c.allow_concurrent_access for c in rest)
        if rest and exclusive and not force:
            raise GS2Error(
                409,
                "webSocketSession",
                f"user {user_id} already has a session in {namespace} and concurrent access is not allowed; "
                "pass force=true to disconnect it",
                "gateway.webSocketSession.error.concurrentAccess",
            )
        for old in replaced + (rest if exclusive else []):
            await self.disconnect(old)
        if conn.user_id is not None:
            self._unbind(conn)
        conn.namespace, conn.user_id = namespace, user_id
        conn.session_id = session_id or None
        conn.allow_concurrent_access = allow_concurrent_access
        conn.updated = utcnow()
        conn.revision += 1
        self._bound_users[user_id] = self._bound_users.get(user_id, 0) + 1
        return conn

    def sessions(self, namespace: str | None, user_id: str | None = None) -> list[Connection]:
        """Bound sessions, oldest first; `namespace` None means every gateway namespace."""
        return sorted(
            (
                c
                for c in self.connections.values()
                if not c.closed
                and c.user_id is not None
                and (namespace is None or c.namespace == namespace)
                and (user_id is None or c.user_id == user_id)
            ),
            key=lambda c: c.id,
        )

    async def disconnect(self, conn: Connection) -> None:
        self.remove(conn)
        await conn.close()

    def to_gs2(self, conn: Connection) -> dict[str, JSON]:
        """GS2's WebSocketSession model."""
        return {
            "webSocketSessionId": f"grn:gs2:{self.grn.region}:{self.grn.owner_id}:gateway:{conn.namespace}"
            f":session:user:{conn.user_id}:connection:{conn.id}",
            "connectionId": conn.id,
            "namespaceName": conn.namespace,
            "userId": conn.user_id,
            "sessionId": conn.session_id,
            "createdAt": _ms(conn.created),
            "updatedAt": _ms(conn.updated),
            "revision": conn.revision,
        }

    # ---- notifications ---------------------------------------------------------------------------------------

    async def notify(self, namespace: str | None, user_id: str, body: dict[str, JSON]) -> list[str]:
        """Send GS2's notification message to the user's sessions (in `namespace`, or in every gateway namespace
        when None); the connection ids it reached."""
        sent = []
        for conn in self.sessions(namespace, user_id):
            if await conn.send({"type": "notification", "body": body}):
                sent.append(conn.id)
        return sent

    def _wants(self, event: Event) -> bool:
        """In the publisher's thread: only push/run events of a user who has a session here."""
        return (
            event.type in ("push", "run")
            and event.user_id is not None
            and event.user_id in self._bound_users
            and not is_system_event(event)
        )

    async def _deliver_events(self, sub: Subscription) -> None:
        while True:
            event = await sub.get()
            try:
                await self.deliver(event)
            except Exception:  # one bad event (a store hiccup reading its namespace) must not stop delivery
                log.warning("GS2 gateway: could not deliver a %s notification", event.type, exc_info=True)

    async def deliver(self, event: Event) -> list[str]:
        """One bus event → GS2's notification to the user's sessions, if the job-queue namespace asks for it."""
        if event.user_id is None:
            return []
        ns = await self._job_queue_namespace(event.namespace)
        if ns is None:
            return []
        # GS2: pushNotification applies only to namespaces consumed by Run (enableAutoRun off); with auto-run the
        # job runs at once and runNotification tells the client
        enabled = (ns.push_notification and not ns.auto_run) if event.type == "push" else ns.run_notification
        if not enabled:
            return []
        setting = ns.extra.get("pushNotification" if event.type == "push" else "runNotification")
        target = gateway_namespace_of(setting)
        return await self.notify(target, event.user_id, job_queue_notification(event))

    async def _job_queue_namespace(self, name: str) -> Any:
        now = time.monotonic()
        cached = self._namespaces.get(name)
        if cached is not None and now - cached[0] < NAMESPACE_CACHE_SECONDS:
            return cached[1]
        try:
            ns = await self.app.aget_namespace(name)
        except NotFound:
            ns = None
        self._namespaces[name] = (now, ns)
        return ns


def job_queue_notification(event: Event) -> dict[str, JSON]:
    """GS2's notification message body for a job-queue `push` or `run` event: `issuer` names the notification
    (`Gs2JobQueue:PushNotification` → OnPushNotification, `Gs2JobQueue:RunNotification` → OnRunNotification),
    `payload` is its JSON text (`{namespaceName, userId}`, plus `jobName` for run)."""
    payload: dict[str, JSON] = {"namespaceName": event.namespace, "userId": event.user_id}
    issuer = PUSH_ISSUER
    if event.type == "run":
        payload["jobName"] = event.job_id
        issuer = RUN_ISSUER
    return {
        "issuer": issuer,
        "subject": issuer.partition(":")[2],
        "payload": json.dumps(payload, ensure_ascii=False, separators=(",", ":")),
        "enableTransferMobileNotification": False,
        "sound": None,
    }


def gateway_namespace_of(setting: Any) -> str | None:
    """The gateway namespace a NotificationSetting's `gatewayNamespaceId` names (`grn:gs2:{region}:{owner}:
    gateway:{name}`), or None (every gateway namespace) when it names none."""
    if not isinstance(setting, dict):
        return None
    grn = setting.get("gatewayNamespaceId")
    if not isinstance(grn, str) or not grn:
        return None
    parts = grn.split(":")
    if len(parts) >= 6 and parts[4] == "gateway":
        return parts[5]
    return grn if ":" not in grn else None


# ---- the WebSocket endpoint -------------------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


async def call_in_process(
    asgi: ASGIApp,
    ws_scope: Scope,
    request: tuple[str, str, str, list[tuple[str, str]], bytes],
    connection_id: str,
) -> tuple[int, Any]:
    """Run one HTTP request through the application in process; (status, decoded JSON body)."""
    method, path, query, headers, body = request
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in headers] + [(b"content-length", str(len(body)).encode())],
        "client": ws_scope.get("client"),
        "server": ws_scope.get("server"),
        "app": ws_scope.get("app"),
        CONNECTION_SCOPE_KEY: connection_id,
    }
    if "state" in ws_scope:
        scope["state"] = dict(ws_scope["state"])
    sent = False
    status = 500
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # never a disconnect: the answer goes back over the WebSocket
        return {"type": "http.disconnect"}  # pragma: no cover

    async def send(message: Any) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await asgi(scope, receive, send)
    raw = b"".join(chunks)
    try:
        return status, json.loads(raw) if raw else {}
    except ValueError:
        return status, error_body([_item(status, raw.decode(errors="replace")[:500])])


def _item(status: int, text: str) -> Any:
    from conveyor.server.gs2_models import GS2ErrorItem

    return GS2ErrorItem("request", text or f"HTTP {status}", f"gateway.http.{status}")


class WebSocketDispatcher:
    """The `/` WebSocket: reads the SDK's messages, answers each one with its REST route's answer."""

    def __init__(self, hub: GatewayHub) -> None:
        self.hub = hub

    async def __call__(self, websocket: WebSocket) -> None:
        await websocket.accept()
        conn = self.hub.add(websocket)
        limit = asyncio.Semaphore(MAX_IN_FLIGHT)
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                received = await websocket.receive()
                if received["type"] == "websocket.disconnect":
                    break
                text = received.get("text")
                if text is None:  # a binary frame: the SDK sends text, but read it as UTF-8 JSON all the same
                    text = (received.get("bytes") or b"").decode("utf-8", "replace")
                await limit.acquire()
                task = asyncio.create_task(self._answer(conn, text, limit))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self.hub.remove(conn)
            conn.closed = True
            for task in list(tasks):
                task.cancel()

    async def _answer(self, conn: Connection, text: str, limit: asyncio.Semaphore) -> None:
        try:
            request_id: Any = None
            try:
                message = json.loads(text)
                if not isinstance(message, dict):
                    raise ValueError("not an object")
                meta = message.get("x_gs2")
                request_id = meta.get("requestId") if isinstance(meta, dict) else None
                status, body = await call_in_process(
                    conn.websocket.scope["app"], conn.websocket.scope, rest_request(message), conn.id
                )
            except GS2Error as exc:
                status, body = exc.status, error_body(exc.items)
            except ValueError:
                status, body = 400, error_body([_item(400, "a message must be a JSON object")])
            if request_id is None:
                return  # nothing to answer to (the SDK matches answers by requestId)
            await conn.send({"requestId": request_id, "status": status, "body": body})
        except Exception:
            log.exception("GS2 gateway: a WebSocket request failed")
        finally:
            limit.release()


# ---- gateway namespaces (kv) ----------------------------------------------------------------------------------

_NS_KEY = "gs2:gateway:ns:"
_NAMES_KEY = "gs2:gateway:names"
_NS_FIELDS = ("description", "transactionSetting", "transactionSettingV2", "firebaseSecret", "logSetting")


def _ns_not_found(name: str) -> GS2Error:
    return GS2Error(404, "namespace", f"gateway namespace not found: {name}", "gateway.namespace.error.notFound")


class GatewayNamespaces:
    def __init__(self, app: Conveyor, grn: Grn) -> None:
        self.app = app
        self.grn = grn

    def to_gs2(self, doc: dict[str, Any]) -> dict[str, JSON]:
        out: dict[str, JSON] = {"namespaceId": f"grn:gs2:{self.grn.region}:{self.grn.owner_id}:gateway:{doc['name']}"}
        out["name"] = doc["name"]
        for key in _NS_FIELDS:
            out[key] = doc.get(key)
        out.update(createdAt=doc["createdAt"], updatedAt=doc["updatedAt"], revision=doc["revision"])
        return out

    async def get(self, name: str) -> dict[str, Any]:
        try:
            validate_name(name, "namespaceName")
        except ValidationError:
            raise _ns_not_found(name) from None
        raw = await self.app.akv_get(_NS_KEY + name)
        if raw is None:
            raise _ns_not_found(name)
        doc: dict[str, Any] = json.loads(raw)
        return doc

    async def names(self) -> list[str]:
        raw = await self.app.akv_get(_NAMES_KEY)
        return sorted(json.loads(raw)) if raw else []

    async def _set_names(self, change: Callable[[set[str]], None]) -> None:
        """The kv space has no compare-and-set: write, then check and write again if a concurrent change lost
        ours (as gs2_keys does)."""
        for _ in range(5):
            names = set(await self.names())
            change(names)
            await self.app.akv_set(_NAMES_KEY, json.dumps(sorted(names)))
            check = set(await self.names())
            if check == names:
                return

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("name")
        try:
            validate_name(name, "name")
        except ValidationError as exc:
            raise GS2Error(400, "name", exc.message, "gateway.name.error.invalid") from None
        assert isinstance(name, str)
        now = _ms(utcnow())
        doc = {"name": name, "createdAt": now, "updatedAt": now, "revision": 0}
        doc.update(_checked_fields(body))
        if not await self.app.akv_set(_NS_KEY + name, json.dumps(doc), only_if_absent=True):
            raise GS2Error(409, "name", f"gateway namespace already exists: {name}", "gateway.namespace.duplicate")
        await self._set_names(lambda names: names.add(name))
        return doc

    async def update(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        doc = await self.get(name)
        doc.update(_checked_fields(body))
        doc["updatedAt"] = _ms(utcnow())
        doc["revision"] = int(doc.get("revision", 0)) + 1
        await self.app.akv_set(_NS_KEY + name, json.dumps(doc))
        return doc

    async def delete(self, name: str) -> dict[str, Any]:
        doc = await self.get(name)
        await self.app.akv_delete(_NS_KEY + name)
        await self._set_names(lambda names: names.discard(name))
        return doc


def _checked_fields(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    description = body.get("description")
    if description is not None:
        if not isinstance(description, str) or len(description) > 1024:
            raise GS2Error(400, "description", "description must be a string of at most 1024 characters")
        out["description"] = description
    for key in ("transactionSetting", "transactionSettingV2", "logSetting"):
        if body.get(key) is not None:
            if not isinstance(body[key], dict):
                raise GS2Error(400, key, f"{key} must be an object", f"gateway.{key}.error")
            out[key] = body[key]
    if body.get("firebaseSecret") is not None:
        if not isinstance(body["firebaseSecret"], str):
            raise GS2Error(400, "firebaseSecret", "firebaseSecret must be a string", "gateway.firebaseSecret.error")
        out["firebaseSecret"] = body["firebaseSecret"]
    return out


# ---- Firebase tokens (kv) --------------------------------------------------------------------------------------

_FIREBASE_KEY = "gs2:gateway:firebase:"


def _firebase_key(namespace: str, user_id: str) -> str:
    return f"{_FIREBASE_KEY}{namespace}:{user_id}"  # namespace names hold no ':', so the key is unambiguous


class FirebaseTokens:
    """A user's device token for mobile push, per gateway namespace (GS2's FirebaseToken), kept for the game to
    read back; Conveyor itself sends no mobile push (see `send_mobile_notification_by_user_id`)."""

    def __init__(self, app: Conveyor, grn: Grn) -> None:
        self.app = app
        self.grn = grn

    def to_gs2(self, namespace: str, doc: dict[str, Any]) -> dict[str, JSON]:
        return {
            "firebaseTokenId": f"grn:gs2:{self.grn.region}:{self.grn.owner_id}:gateway:{namespace}"
            f":user:{doc['userId']}:firebase",
            "userId": doc["userId"],
            "token": doc["token"],
            "locale": doc.get("locale"),
            "createdAt": doc["createdAt"],
            "updatedAt": doc["updatedAt"],
            "revision": doc["revision"],
        }

    async def get(self, namespace: str, user_id: str) -> dict[str, Any] | None:
        raw = await self.app.akv_get(_firebase_key(namespace, user_id))
        return None if raw is None else dict(json.loads(raw))

    async def put(self, namespace: str, user_id: str, token: Any, locale: Any) -> dict[str, Any]:
        if not isinstance(token, str) or not 1 <= len(token) <= 1024:
            raise GS2Error(400, "token", "token must be a string of 1 to 1024 characters", "gateway.token.error")
        if locale is not None and (not isinstance(locale, str) or len(locale) > 8):
            raise GS2Error(400, "locale", "locale must be a string of at most 8 characters", "gateway.locale.error")
        now = _ms(utcnow())
        old = await self.get(namespace, user_id)
        doc = {
            "userId": user_id,
            "token": token,
            "locale": locale,
            "createdAt": old["createdAt"] if old else now,
            "updatedAt": now,
            "revision": int(old["revision"]) + 1 if old else 0,
        }
        await self.app.akv_set(_firebase_key(namespace, user_id), json.dumps(doc))
        return doc

    async def delete(self, namespace: str, user_id: str) -> dict[str, Any] | None:
        doc = await self.get(namespace, user_id)
        if doc is not None:
            await self.app.akv_delete(_firebase_key(namespace, user_id))
        return doc


# ---- user data -----------------------------------------------------------------------------------------------


def gateway_user_data(app: Conveyor, hub: GatewayHub, grn: Grn) -> UserDataSource:
    """GS2-Gateway's data of a user, for `*_user_data_by_user_id` under `/gateway/system/...`: the Firebase tokens
    kept in every gateway namespace, and (in the dump, for the record) the user's live sessions. Clean deletes the
    tokens and disconnects the sessions; import restores the tokens of namespaces that exist (re-running either is
    harmless: they converge)."""
    namespaces = GatewayNamespaces(app, grn)
    firebase = FirebaseTokens(app, grn)

    async def dump(user_id: str) -> dict[str, JSON]:
        check_user_id(user_id)
        tokens: list[JSON] = []
        for name in await namespaces.names():
            doc = await firebase.get(name, user_id)
            if doc is not None:
                tokens.append({"namespaceName": name, **doc})
        return {
            "format": "conveyor-gs2-gateway-user-data",
            "version": 1,
            "userId": user_id,
            "firebaseTokens": tokens,
            "webSocketSessions": [hub.to_gs2(c) for c in hub.sessions(None, user_id)],
        }

    async def clean(user_id: str) -> int:
        check_user_id(user_id)
        deleted = 0
        for name in await namespaces.names():
            if await firebase.delete(name, user_id) is not None:
                deleted += 1
        for conn in hub.sessions(None, user_id):
            await hub.disconnect(conn)
        return deleted

    async def restore(user_id: str, document: Any) -> dict[str, JSON]:
        check_user_id(user_id)
        if not isinstance(document, dict) or document.get("format") != "conveyor-gs2-gateway-user-data":
            raise ValidationError("not a GS2-Gateway user-data dump of Conveyor", field="format")
        if document.get("userId") != user_id:
            raise ValidationError(f"this dump is of user {document.get('userId')!r}, not {user_id!r}", field="userId")
        tokens = document.get("firebaseTokens")
        if not isinstance(tokens, list) or not all(isinstance(t, dict) for t in tokens):
            raise ValidationError("firebaseTokens must be a list of objects", field="firebaseTokens")
        known = set(await namespaces.names())
        restored: list[JSON] = []
        skipped: list[JSON] = []
        for token in tokens:
            name = token.get("namespaceName")
            if name not in known:
                skipped.append(name)
                continue
            await firebase.put(str(name), user_id, token.get("token"), token.get("locale"))
            restored.append(name)
        return {"userId": user_id, "restoredFirebaseTokens": restored, "skippedNamespaces": skipped}

    return UserDataSource(dump, clean, restore)


# ---- the REST router ---------------------------------------------------------------------------------------------

_NAMESPACE_BODY: dict[str, Any] = {
    "name": {"type": "string", "pattern": "^[A-Za-z0-9\\-_.]{1,128}$"},
    "description": {"type": "string", "maxLength": 1024},
    "firebaseSecret": {"type": "string"},
    "transactionSetting": {"type": "object"},
    "logSetting": {"type": "object"},
}
_SET_USER_BODY: dict[str, Any] = {
    "allowConcurrentAccess": {"type": "boolean"},
    "sessionId": {"type": "string"},
    "force": {"type": "boolean"},
}
_NOTIFICATION_BODY: dict[str, Any] = {
    "subject": {"type": "string", "maxLength": 128},
    "payload": {"type": "string", "maxLength": 1024},
    "enableTransferMobileNotification": {"type": "boolean"},
    "sound": {"type": "string"},
}


def _paging(request: Request) -> tuple[str | None, int]:
    token = request.query_params.get("pageToken") or None
    raw = request.query_params.get("limit")
    try:
        limit = int(raw) if raw else DEFAULT_PAGE_LIMIT
    except ValueError:
        limit = -1
    if not 1 <= limit <= MAX_PAGE_LIMIT:
        raise GS2Error(400, "limit", f"limit must be an integer from 1 to {MAX_PAGE_LIMIT}", "gateway.limit.error")
    if token is not None:
        try:
            token = decode_name_cursor(token, field="pageToken")
        except ValidationError:
            raise GS2Error(
                400, "pageToken", "pageToken is invalid: pass the previous nextPageToken unchanged", "gateway.pageToken"
            ) from None
    return token, limit


def _page(items: list[Any], key: Callable[[Any], str], after: str | None, limit: int) -> tuple[list[Any], str | None]:
    rest = [i for i in items if after is None or key(i) > after]
    page = rest[:limit]
    return page, encode_name_cursor(key(page[-1])) if len(rest) > limit else None


def build_gateway_router(app: Conveyor, auth: GS2Auth, hub: GatewayHub, grn: Grn) -> APIRouter:
    """GS2-Gateway's REST calls under `/gateway` (namespaces, sessions, notifications). Who may call which is the
    access matrix's (conveyor.server.access)."""
    router = APIRouter(prefix=GATEWAY_PREFIX, route_class=GS2Route, tags=["gs2"], responses=GS2_RESPONSES)
    namespaces = GatewayNamespaces(app, grn)

    async def get_service_version(request: Request) -> dict[str, JSON]:
        return {"item": __version__}

    async def describe_namespaces(request: Request) -> dict[str, JSON]:
        after, limit = _paging(request)
        prefix = request.query_params.get("namePrefix") or ""
        names = [n for n in await namespaces.names() if n.startswith(prefix)]
        page, token = _page(names, lambda n: n, after, limit)
        items: list[JSON] = []
        for name in page:
            with contextlib.suppress(GS2Error):  # deleted between the list and the read
                items.append(namespaces.to_gs2(await namespaces.get(name)))
        return {"items": items, "nextPageToken": token}

    async def create_namespace(request: Request) -> dict[str, JSON]:
        return {"item": namespaces.to_gs2(await namespaces.create(await json_body(request)))}

    async def get_namespace_status(request: Request, namespaceName: str) -> dict[str, JSON]:  # noqa: N803
        await namespaces.get(namespaceName)
        return {"status": "ACTIVE"}

    async def get_namespace(request: Request, namespaceName: str) -> dict[str, JSON]:  # noqa: N803
        return {"item": namespaces.to_gs2(await namespaces.get(namespaceName))}

    async def update_namespace(request: Request, namespaceName: str) -> dict[str, JSON]:  # noqa: N803
        return {"item": namespaces.to_gs2(await namespaces.update(namespaceName, await json_body(request)))}

    async def delete_namespace(request: Request, namespaceName: str) -> dict[str, JSON]:  # noqa: N803
        doc = await namespaces.delete(namespaceName)
        for conn in hub.sessions(namespaceName):
            await hub.disconnect(conn)
        return {"item": namespaces.to_gs2(doc)}

    async def sessions_of(request: Request, namespace: str, user_id: str) -> dict[str, JSON]:
        check_user_id(user_id)
        await namespaces.get(namespace)
        after, limit = _paging(request)
        page, token = _page(hub.sessions(namespace, user_id), lambda c: str(c.id), after, limit)
        return {"items": [hub.to_gs2(c) for c in page], "nextPageToken": token}

    async def describe_web_socket_sessions(request: Request, namespaceName: str) -> dict[str, JSON]:  # noqa: N803
        return await sessions_of(request, namespaceName, path_user(request))

    async def describe_web_socket_sessions_by_user_id(
        request: Request,
        namespaceName: str,  # noqa: N803
        userId: str,  # noqa: N803
    ) -> dict[str, JSON]:
        return await sessions_of(request, namespaceName, userId)

    async def bind(request: Request, namespace: str, user_id: str) -> dict[str, JSON]:
        check_user_id(user_id)
        body = await json_body(request)
        connection = request.scope.get(CONNECTION_SCOPE_KEY)
        if not isinstance(connection, str):
            raise GS2Error(
                400,
                "webSocketSession",
                "set_user_id binds the WebSocket connection it is sent over: call it through "
                "Gs2GatewayWebSocketClient on the session that should receive the notifications",
                "gateway.webSocketSession.error.notWebSocket",
            )
        await namespaces.get(namespace)
        allow = body.get("allowConcurrentAccess", True)
        force = body.get("force", False)
        session_id = body.get("sessionId")
        for key, value, kind in (("allowConcurrentAccess", allow, bool), ("force", force, bool)):
            if not isinstance(value, kind):
                raise GS2Error(400, key, f"{key} must be true or false", f"gateway.{key}.error")
        if session_id is not None and (not isinstance(session_id, str) or len(session_id) > 128):
            raise GS2Error(
                400, "sessionId", "sessionId must be a string of at most 128 characters", "gateway.sessionId"
            )
        conn = await hub.bind(
            connection, namespace, user_id, allow_concurrent_access=allow, session_id=session_id, force=force
        )
        return {"item": hub.to_gs2(conn)}

    async def set_user_id(request: Request, namespaceName: str) -> dict[str, JSON]:  # noqa: N803
        return await bind(request, namespaceName, path_user(request))

    async def set_user_id_by_user_id(request: Request, namespaceName: str, userId: str) -> dict[str, JSON]:  # noqa: N803
        return await bind(request, namespaceName, userId)

    async def send_notification(request: Request, namespaceName: str, userId: str) -> dict[str, JSON]:  # noqa: N803
        check_user_id(userId)
        body = await json_body(request)
        await namespaces.get(namespaceName)
        subject, payload = body.get("subject"), body.get("payload")
        for key, value, most in (("subject", subject, 128), ("payload", payload, 1024)):
            if value is not None and (not isinstance(value, str) or len(value) > most):
                raise GS2Error(400, key, f"{key} must be a string of at most {most} characters", f"gateway.{key}")
        sent = await hub.notify(
            namespaceName,
            userId,
            {
                "issuer": SEND_ISSUER,
                "subject": subject,
                "payload": payload,
                "enableTransferMobileNotification": bool(body.get("enableTransferMobileNotification", False)),
                "sound": body.get("sound"),
            },
        )
        return {"protocol": "websocket", "sendConnectionIds": list(sent)}

    async def disconnect_by_user_id(request: Request, namespaceName: str, userId: str) -> dict[str, JSON]:  # noqa: N803
        check_user_id(userId)
        await namespaces.get(namespaceName)
        gone = hub.sessions(namespaceName, userId)
        items = [hub.to_gs2(c) for c in gone]
        for conn in gone:
            await hub.disconnect(conn)
        return {"items": items}

    async def disconnect_all(request: Request, namespaceName: str) -> dict[str, JSON]:  # noqa: N803
        await namespaces.get(namespaceName)
        for conn in hub.sessions(namespaceName):
            await hub.disconnect(conn)
        return {}

    firebase = FirebaseTokens(app, grn)

    async def firebase_token(namespace: str, user_id: str) -> dict[str, Any]:
        check_user_id(user_id)
        await namespaces.get(namespace)
        doc = await firebase.get(namespace, user_id)
        if doc is None:
            raise GS2Error(404, "firebaseToken", f"no firebase token for {user_id}", "gateway.firebaseToken.notFound")
        return doc

    async def put_token(request: Request, namespace: str, user_id: str) -> dict[str, JSON]:
        check_user_id(user_id)
        body = await json_body(request)
        await namespaces.get(namespace)
        doc = await firebase.put(namespace, user_id, body.get("token"), body.get("locale"))
        return {"item": firebase.to_gs2(namespace, doc)}

    async def delete_token(namespace: str, user_id: str) -> dict[str, JSON]:
        await firebase_token(namespace, user_id)
        doc = await firebase.delete(namespace, user_id)
        if doc is None:  # deleted meanwhile
            raise GS2Error(404, "firebaseToken", f"no firebase token for {user_id}", "gateway.firebaseToken.notFound")
        return {"item": firebase.to_gs2(namespace, doc)}

    async def set_firebase_token(request: Request, namespaceName: str) -> dict[str, JSON]:  # noqa: N803
        return await put_token(request, namespaceName, path_user(request))

    async def set_firebase_token_by_user_id(request: Request, namespaceName: str, userId: str) -> dict[str, JSON]:  # noqa: N803
        return await put_token(request, namespaceName, userId)

    async def get_firebase_token(request: Request, namespaceName: str) -> dict[str, JSON]:  # noqa: N803
        user_id = path_user(request)
        return {"item": firebase.to_gs2(namespaceName, await firebase_token(namespaceName, user_id))}

    async def get_firebase_token_by_user_id(request: Request, namespaceName: str, userId: str) -> dict[str, JSON]:  # noqa: N803
        return {"item": firebase.to_gs2(namespaceName, await firebase_token(namespaceName, userId))}

    async def delete_firebase_token(request: Request, namespaceName: str) -> dict[str, JSON]:  # noqa: N803
        return await delete_token(namespaceName, path_user(request))

    async def delete_firebase_token_by_user_id(request: Request, namespaceName: str, userId: str) -> dict[str, JSON]:  # noqa: N803
        return await delete_token(namespaceName, userId)

    async def send_mobile_notification_by_user_id(
        request: Request,
        namespaceName: str,  # noqa: N803
        userId: str,  # noqa: N803
    ) -> dict[str, JSON]:
        raise GS2Error(
            400,
            "firebase",
            "Conveyor sends no mobile push: it holds no Firebase credentials and calls no Firebase API. Send it "
            "from your own push service with the token get_firebase_token_by_user_id returns, or reach an online "
            "player with send_notification",
            "gateway.firebase.error.notSupported",
        )

    body = openapi_body
    router.add_api_route("/system/version", get_service_version, methods=["GET"])
    router.add_api_route("/", describe_namespaces, methods=["GET"])
    router.add_api_route("/", create_namespace, methods=["POST"], openapi_extra=body(_NAMESPACE_BODY, "name"))
    router.add_api_route("/{namespaceName}/status", get_namespace_status, methods=["GET"])
    router.add_api_route("/{namespaceName}", get_namespace, methods=["GET"])
    router.add_api_route("/{namespaceName}", update_namespace, methods=["PUT"], openapi_extra=body(_NAMESPACE_BODY))
    router.add_api_route("/{namespaceName}", delete_namespace, methods=["DELETE"])
    router.add_api_route("/{namespaceName}/session/user/me", describe_web_socket_sessions, methods=["GET"])
    router.add_api_route(
        "/{namespaceName}/session/user/me/user",
        set_user_id,
        methods=["POST"],
        openapi_extra=body(_SET_USER_BODY),
    )
    router.add_api_route(
        "/{namespaceName}/session/user/{userId}", describe_web_socket_sessions_by_user_id, methods=["GET"]
    )
    router.add_api_route(
        "/{namespaceName}/session/user/{userId}/user",
        set_user_id_by_user_id,
        methods=["POST"],
        openapi_extra=body(_SET_USER_BODY),
    )
    router.add_api_route(
        "/{namespaceName}/session/user/{userId}/notification",
        send_notification,
        methods=["POST"],
        openapi_extra=body(_NOTIFICATION_BODY),
    )
    router.add_api_route("/{namespaceName}/session/user/{userId}", disconnect_by_user_id, methods=["DELETE"])
    router.add_api_route("/{namespaceName}/session", disconnect_all, methods=["DELETE"])
    me_token, user_token = "/{namespaceName}/user/me/firebase/token", "/{namespaceName}/user/{userId}/firebase/token"
    token_body = body({"token": {"type": "string", "maxLength": 1024}, "locale": {"type": "string"}}, "token")
    router.add_api_route(me_token, set_firebase_token, methods=["PUT"], openapi_extra=token_body)
    router.add_api_route(me_token, get_firebase_token, methods=["GET"])
    router.add_api_route(me_token, delete_firebase_token, methods=["DELETE"])
    router.add_api_route(user_token, set_firebase_token_by_user_id, methods=["PUT"], openapi_extra=token_body)
    router.add_api_route(user_token, get_firebase_token_by_user_id, methods=["GET"])
    router.add_api_route(user_token, delete_firebase_token_by_user_id, methods=["DELETE"])
    router.add_api_route(
        user_token + "/notification",
        send_mobile_notification_by_user_id,
        methods=["POST"],
        openapi_extra=body(_NOTIFICATION_BODY),
    )
    add_user_data_routes(router, app, auth, grn, service="gateway", source=gateway_user_data(app, hub, grn))
    router.add_api_route(
        "/{rest:path}",
        unsupported_route(GATEWAY_PREFIX, "gateway"),
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )
    return router


__all__ = [
    "GATEWAY_PREFIX",
    "REST_ROUTES",
    "WEB_SOCKET_PATH",
    "GatewayHub",
    "WebSocketDispatcher",
    "build_gateway_router",
    "gateway_namespace_of",
    "job_queue_notification",
    "rest_request",
]
