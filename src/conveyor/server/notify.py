"""Notifications over HTTP: the server-sent-event stream `GET /api/events`. (Webhooks are a core service,
`conveyor.webhooks`, started by every worker; the names below are re-exported from there.)

SSE: each connection subscribes to the app's event bus with a predicate (namespace, user, event types). A user
token is forced to its own user; the admin sees everyone. Events are `push` (a job was queued) and `run` (a job
was executed), plus `cancel`; each SSE message carries the event type, a sequence id and the JSON data.

"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from conveyor.errors import ValidationError
from conveyor.events import Event
from conveyor.model import JSON
from conveyor.server.auth import Principal
from conveyor.server.common import ERROR_RESPONSES, reject_nul, rfc3339
from conveyor.server.deps import ServerContext, get_context, get_principal
from conveyor.webhooks import (
    SYSTEM_TASK_PREFIX,
    WEBHOOK_TASK,
    is_system_event,
    register_webhook_task,
    sign_webhook,
    verify_webhook,
    webhook_notifications,
)

__all__ = [
    "EVENT_TYPES",
    "SYSTEM_TASK_PREFIX",
    "WEBHOOK_TASK",
    "is_system_event",
    "register_webhook_task",
    "router",
    "sign_webhook",
    "sse_data",
    "verify_webhook",
    "webhook_notifications",
]

EVENT_TYPES = ("push", "run", "cancel")


def sse_data(event: Event) -> dict[str, JSON]:
    """The one place an event becomes an SSE message's `data` (GS2's key names; times as the wire always had them:
    `startedAt`/`runAt` in Python's ISO format, `at` RFC 3339 with milliseconds)."""
    job = event.job
    if event.type == "cancel":
        return {"jobName": job.id, "at": rfc3339(event.at)}
    data: dict[str, JSON] = {"namespaceName": job.namespace, "userId": job.user_id, "jobName": job.id, "task": job.task}
    attempt = event.attempt
    if event.type == "run" and attempt is not None:
        started = job.started_at
        data["statusCode"] = attempt.status_code
        data["outcome"] = attempt.outcome.value
        data["queue"] = job.queue
        data["tryNumber"] = job.try_number
        data["startedAt"] = started.isoformat() if started else None
        data["runAt"] = job.run_at.isoformat()
    else:
        data["queue"] = job.queue
    data["at"] = rfc3339(event.at)
    return data


KEEPALIVE_SECONDS = 15.0

router = APIRouter(tags=["events"])


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
        # One getter task at a time, kept across keep-alives; when the client goes away (Starlette cancels or closes
        # this generator mid-wait) the finally block cancels and awaits both tasks, so none is left pending for
        # the garbage collector ("Task was destroyed but it is pending!", docs/ui-api-needs.md "Closing a tab").
        seq = 0
        stop = asyncio.ensure_future(shutdown.wait())
        getter: asyncio.Future[Event] | None = None
        try:
            yield b": connected\n\n"
            while not shutdown.is_set():
                if getter is None:
                    getter = asyncio.ensure_future(sub.get())
                waiting: set[asyncio.Future[Any]] = {getter, stop}
                done, _ = await asyncio.wait(waiting, timeout=KEEPALIVE_SECONDS, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    event = getter.result()
                    getter = None
                    seq += 1
                    payload = json.dumps(sse_data(event), separators=(",", ":"), ensure_ascii=False)
                    yield f"event: {event.type}\nid: {seq}\ndata: {payload}\n\n".encode()
                elif stop in done:
                    break
                else:
                    yield b": keep-alive\n\n"
        finally:
            pending = [task for task in (getter, stop) if task is not None]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            sub.close()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
