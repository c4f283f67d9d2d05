"""Notifications: the server-sent-event stream `GET /api/events` and per-namespace webhooks.

SSE: each connection subscribes to the app's event bus with a predicate (namespace, user, event types). A user
token is forced to its own user; the admin sees everyone. Events are `push` (a job was queued) and `run` (a job
was executed), plus `cancel`; each SSE message carries the event type, a sequence id and the JSON data.

Webhooks: a dispatcher subscribes to the same bus and, for a namespace with a `webhook_url` and the matching
notification switch on (`push_notification` / `run_notification`), enqueues a `conveyor:webhook` job. Delivery
therefore goes through the queue itself: retried with backoff, visible, dead-lettered like any job. The body is
signed with HMAC-SHA256 over `"<timestamp>.<body>"` using the namespace's `webhook_secret`, sent as
`X-Conveyor-Signature: t=<timestamp>,v1=<hex>`. The secret is read at delivery time, never stored in the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from conveyor.errors import ConveyorError, Fail, NamespaceNotFound, ValidationError
from conveyor.events import Event
from conveyor.model import JSON, Namespace
from conveyor.server.auth import Principal
from conveyor.server.common import ERROR_RESPONSES, reject_nul, rfc3339
from conveyor.server.deps import ServerContext, get_context, get_principal

if TYPE_CHECKING:
    from conveyor.app import Conveyor

log = logging.getLogger("conveyor.server")

WEBHOOK_TASK = "conveyor:webhook"
SYSTEM_TASK_PREFIX = "conveyor:"
EVENT_TYPES = ("push", "run", "cancel")
KEEPALIVE_SECONDS = 15.0
WEBHOOK_TIMEOUT = 10.0

router = APIRouter(tags=["events"])


def is_system_event(event: Event) -> bool:
    task = event.data.get("task")
    return isinstance(task, str) and task.startswith(SYSTEM_TASK_PREFIX)


@router.get(
    "/api/events",
    summary="Server-sent events: push and run notifications",
    responses={**ERROR_RESPONSES, 200: {"content": {"text/event-stream": {}}, "description": "An SSE stream"}},
    response_class=StreamingResponse,
)
async def events(
    request: Request,
    ctx: ServerContext = Depends(get_context),
    namespace: str | None = None,
    user_id: str | None = None,
    types: str = Query("push,run", description="Comma-separated event types: push, run, cancel"),
    principal: Principal = Depends(get_principal),
) -> StreamingResponse:
    """Stream events as `text/event-stream`. Admins see every user (filter with `namespace`/`user_id`); a user
    token sees only its own user's events (asking for another user answers 403). The token goes in the
    Authorization header: browsers read the stream with `fetch` (the admin UI does), never with a token in the
    URL."""
    reject_nul(namespace, "namespace")
    reject_nul(user_id, "user_id")
    wanted = {t.strip() for t in types.split(",") if t.strip()}
    unknown = wanted - set(EVENT_TYPES)
    if unknown or not wanted:
        raise ValidationError(f"types must be a comma-separated list of {', '.join(EVENT_TYPES)}", field="types")
    if not principal.is_admin:  # the guard refused other users; scope the stream to this one
        user_id = principal.user_id
        if principal.namespace is not None:
            namespace = principal.namespace

    def wants(event: Event) -> bool:
        return (
            event.type in wanted
            and (namespace is None or event.namespace == namespace)
            and (user_id is None or event.user_id == user_id)
            and not is_system_event(event)
        )

    sub = ctx.app.events.subscribe(wants, maxsize=1000)
    shutdown = ctx.shutdown

    async def stream() -> AsyncIterator[bytes]:
        seq = 0
        stop = asyncio.ensure_future(shutdown.wait())
        try:
            yield b": connected\n\n"
            while not shutdown.is_set():
                getter = asyncio.ensure_future(sub.get())
                done, _ = await asyncio.wait(
                    {getter, stop}, timeout=KEEPALIVE_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    if stop in done:
                        break
                    yield b": keep-alive\n\n"
                    continue
                event = getter.result()
                seq += 1
                data = dict(event.data)
                data.setdefault("at", rfc3339(event.at))
                payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
                yield f"event: {event.type}\nid: {seq}\ndata: {payload}\n\n".encode()
        finally:
            stop.cancel()
            sub.close()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# ---- webhooks --------------------------------------------------------------------------------------------------


def sign_webhook(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_webhook(secret: str, header: str, body: bytes, *, tolerance: float = 300.0) -> bool:
    """Check a received webhook (for receivers written in Python, and the tests)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign_webhook(secret, timestamp, body), header)


async def deliver_webhook(payload: dict[str, Any], app: Conveyor) -> dict[str, JSON]:
    """POST one notification. 2xx → done; 408/429/5xx or a network error → raise (retried with backoff);
    any other 4xx → Fail (the receiver refuses it: retrying will not help)."""
    namespace = str(payload.get("namespace", ""))
    try:
        ns = await app.aget_namespace(namespace)
    except NamespaceNotFound:
        raise Fail(f"namespace {namespace!r} no longer exists", status_code=404) from None
    url = ns.webhook_url
    if not url:
        raise Fail(f"namespace {namespace!r} has no webhook_url any more", status_code=400)
    body = json.dumps(payload.get("event", {}), separators=(",", ":"), ensure_ascii=False).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "conveyor-webhook/1",
        "X-Conveyor-Event": str(payload.get("type", "")),
    }
    if ns.webhook_secret:
        headers["X-Conveyor-Signature"] = sign_webhook(ns.webhook_secret, int(time.time()), body)
    async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT) as client:
        response = await client.post(url, content=body, headers=headers)
    code = response.status_code
    if 200 <= code < 300:
        return {"status_code": code}
    if code in (408, 429) or code >= 500:
        raise RuntimeError(f"webhook {url} answered {code}")
    raise Fail(f"webhook {url} answered {code}", status_code=code)


def register_system_tasks(app: Conveyor) -> None:
    """Register `conveyor:webhook` on an app (servers and `conveyor worker` processes both need it)."""
    if WEBHOOK_TASK in app.tasks:
        return

    async def webhook(payload: dict[str, Any]) -> dict[str, JSON]:
        return await deliver_webhook(payload, app)

    app._register_system(WEBHOOK_TASK, webhook, max_attempts=10, timeout=WEBHOOK_TIMEOUT * 2)


class WebhookDispatcher:
    """Turns bus events into `conveyor:webhook` jobs for namespaces that asked for them."""

    def __init__(self, app: Conveyor, *, cache_seconds: float = 2.0) -> None:
        self.app = app
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Namespace | None]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        sub = self.app.events.subscribe(lambda e: e.type in ("push", "run") and not is_system_event(e), maxsize=100_000)
        self._task = asyncio.create_task(self._run(sub), name="conveyor-webhooks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _namespace(self, name: str) -> Namespace | None:
        now = time.monotonic()
        cached = self._cache.get(name)
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1]
        try:
            ns: Namespace | None = await self.app.aget_namespace(name)
        except NamespaceNotFound:
            ns = None
        self._cache[name] = (now, ns)
        return ns

    async def _run(self, sub: Any) -> None:
        try:
            while True:
                event: Event = await sub.get()
                try:
                    await self.handle(event)
                except ConveyorError as exc:  # store down: the notification is lost, the server lives on
                    log.warning("webhook for %s event of job %s not queued: %s", event.type, event.job_id, exc)
                except Exception:
                    log.exception("webhook dispatcher failed on %s event", event.type)
        finally:
            sub.close()

    async def handle(self, event: Event) -> None:
        ns = await self._namespace(event.namespace)
        if ns is None or not ns.webhook_url:
            return
        if (event.type == "push" and not ns.push_notification) or (event.type == "run" and not ns.run_notification):
            return
        body = {"type": event.type, **event.data, "at": rfc3339(event.at)}
        await self.app._aenqueue_system(
            WEBHOOK_TASK,
            {"namespace": event.namespace, "type": event.type, "event": body},
            namespace="default",
        )


@contextlib.asynccontextmanager
async def webhook_notifications(app: Conveyor) -> AsyncIterator[None]:
    """Webhooks for a process that runs jobs without the HTTP server (`conveyor worker`): `run` events are
    published where jobs run, so that process must turn them into deliveries too. Registers the delivery task
    (do this before the worker starts) and dispatches while the block runs.

    >>> async with webhook_notifications(app):
    ...     await app.arun_worker()
    """
    register_system_tasks(app)
    dispatcher = WebhookDispatcher(app)
    dispatcher.start()
    try:
        yield
    finally:
        await dispatcher.stop()
