"""Conveyor's own API under `/api/v1`: jobs, attempts, dead letters, namespaces, queues, workers, stats, tokens,
and the per-user GS2-style calls (push, list, get, delete, attempts, Run).

Who may call each route is decided by `conveyor.server.access` (admin-only routes, per-user routes that the
admin or that user's token reach; another user's token gets 403 there, and a job that is not the user's is 404,
never the data). Routes here only read the caller and the user the guard resolved.
"""

from __future__ import annotations

import dataclasses
import uuid
from enum import StrEnum
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from conveyor.errors import Conflict, JobNotFound, NamespaceExists, NamespaceNotFound, NotFound, ValidationError
from conveyor.model import (
    DEFAULT_NAMESPACE,
    KEEP,
    MAX_INT_PARAMETER,
    Job,
    JobFilter,
    JobSort,
    JobStatus,
    Keep,
    Namespace,
    Page,
    RateLimit,
    decode_cursor,
    encode_cursor,
    id_fragment,
    parse_json_path,
    utcnow,
    validate_name,
)
from conveyor.server import tokens
from conveyor.server.auth import Principal
from conveyor.server.common import (
    ERROR_RESPONSES,
    attempt_json,
    check_job_id,
    check_payload,
    enqueue_warnings,
    flow_json,
    job_json,
    namespace_json,
    queue_json,
    reject_nul,
    rfc3339,
    visible_attempt,
    visible_job,
    worker_json,
)
from conveyor.server.deps import ServerContext, context_of, get_context, get_principal, get_user
from conveyor.server.idempotency import OPENAPI_HEADER, idempotent, key_of
from conveyor.server.schemas import (
    MAX_BATCH,
    AttemptList,
    AttemptOut,
    JobList,
    JobOut,
    JobsAnswer,
    NamespaceBody,
    NamespaceCreate,
    NamespaceList,
    NamespaceOut,
    NewJobBody,
    OkAnswer,
    QueueDetail,
    QueueList,
    QueueOut,
    QueuePatch,
    RateLimitOut,
    RunAnswer,
    StatsOut,
    TokenBody,
    TokenOut,
    UserPushBody,
    WorkerList,
    unique_option,
)

admin = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)
users = APIRouter(prefix="/api/v1", tags=["users"], responses=ERROR_RESPONSES)

LimitQ = Query(20, ge=1, le=1000)
OffsetQ = Query(0, ge=0, le=MAX_INT_PARAMETER)


def _job_options(body: NewJobBody, max_bytes: int) -> dict[str, Any]:
    reject_nul(body.task, "task")
    options: dict[str, Any] = {"task": body.task, "payload": check_payload(body.payload, max_bytes)}
    for name in (
        "namespace",
        "queue",
        "priority",
        "delay",
        "user_id",
        "group_key",
        "unique_key",
        "concurrency_key",
        "unique",
        "run_at",
        "max_attempts",
    ):
        value = unique_option(body.unique) if name == "unique" else getattr(body, name)
        if value is not None:
            if name == "unique":  # its strings are checked by the model (fields: NUL too, as payload keys)
                options[name] = value
                continue
            reject_nul(value, name)
            options[name] = value
    return options


def _name(value: str, what: str) -> str:
    validate_name(value, what)
    return value


async def _get_job(ctx: ServerContext, job_id: str) -> Job:
    job = await ctx.app.aget_job(check_job_id(job_id))
    if job is None:
        raise JobNotFound(job_id)
    return job


# ---- jobs (admin) -----------------------------------------------------------------------------------------------


@admin.post(
    "/jobs",
    response_model=JobOut,
    status_code=201,
    tags=["jobs"],
    summary="Enqueue a job",
    openapi_extra=OPENAPI_HEADER,
)
async def create_job(
    body: NewJobBody,
    request: Request,
) -> JSONResponse:
    ctx = context_of(request)
    idempotency_key = key_of(request)
    options = _job_options(body, ctx.app.max_payload_bytes)

    async def run() -> JSONResponse:
        job = await ctx.app.aenqueue(**options)
        answer = job_json(job)
        warnings = await enqueue_warnings(ctx.app, [job.task])
        if warnings:
            answer["warnings"] = list(warnings)
        return JSONResponse(answer, status_code=201)

    return await idempotent(ctx.app, idempotency_key, "v1-job", await request.body(), ctx.idempotency_ttl, run)


@admin.post(
    "/jobs/batch",
    response_model=JobList,
    status_code=201,
    tags=["jobs"],
    summary="Enqueue many jobs",
    openapi_extra=OPENAPI_HEADER,
)
async def create_jobs(
    body: list[NewJobBody],
    request: Request,
) -> JSONResponse:
    """All or nothing, in one store round trip (1 to 1000 jobs)."""
    ctx = context_of(request)
    idempotency_key = key_of(request)
    if not 1 <= len(body) <= MAX_BATCH:
        raise ValidationError(f"give 1 to {MAX_BATCH} jobs, got {len(body)}", field="body")
    specs = []
    for index, item in enumerate(body):
        try:
            specs.append(_job_options(item, ctx.app.max_payload_bytes))
        except ValidationError as exc:
            raise ValidationError(f"job #{index}: {exc.message}", field=f"{index}.{exc.field}") from None

    async def run() -> JSONResponse:
        jobs = await ctx.app.aenqueue_many(specs)
        items = [job_json(j) for j in jobs]
        answer: dict[str, Any] = {"items": items, "total": len(items), "limit": len(items), "offset": 0}
        warnings = await enqueue_warnings(ctx.app, [j.task for j in jobs])
        if warnings:
            answer["warnings"] = warnings
        return JSONResponse(answer, status_code=201)

    return await idempotent(ctx.app, idempotency_key, "v1-batch", await request.body(), ctx.idempotency_ttl, run)


class StatusFilter(StrEnum):
    """The `status` filter of job lists: a job status, or `scheduled` (pending, due later, never tried) or
    `retrying` (pending after at least one try)."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    RETRYING = "retrying"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


CursorQ = Query(
    None,
    max_length=2048,
    description="The `next_cursor` of the previous page (leave out for the first). Opaque; a cursor continues the "
    "`sort` it was made for",
)
SortQ = Query(JobSort.CREATED_DESC, description="Order; ties are broken by id. `-` means descending")


@dataclasses.dataclass(frozen=True)
class JobSearch:
    """The job list's query parameters (docs/ui-api-needs.md §3), declared once for `/jobs` and `/dead-letters`."""

    namespace: str | None = None
    queue: str | None = None
    task: str | None = None
    user_id: str | None = None
    id: str | None = Query(
        None,
        max_length=64,
        description="A whole id, or 4+ hexadecimal characters (dashes ignored) that begin or end it",
    )
    q: str | None = Query(None, max_length=1024, description="Text in the JSON payload, case-insensitive")
    path: str | None = Query(
        None, max_length=512, description="A JSON path in the payload ($.user.id, dotted keys and [n]); with `value`"
    )
    value: str | None = Query(
        None, max_length=1024, description="What `path` must equal: as JSON when it parses as JSON, or as text"
    )
    queue_contains: str | None = Query(None, max_length=128, description="Case-insensitive part of the queue name")
    task_contains: str | None = Query(None, max_length=1024, description="Case-insensitive part of the task name")
    sort: JobSort = SortQ
    cursor: str | None = CursorQ
    limit: int = LimitQ
    offset: int = OffsetQ

    def job_filter(self, status: StatusFilter | None) -> JobFilter:
        for name in ("namespace", "queue", "task", "user_id", "id", "q", "path", "value"):
            reject_nul(getattr(self, name), name)
        for name in ("queue_contains", "task_contains"):
            reject_nul(getattr(self, name), name)
        ids: list[str] | None = None
        fragment: str | None = None
        if self.id is not None:
            whole = _whole_id(self.id)
            if whole is not None:
                ids = [whole]
            else:
                fragment = id_fragment(self.id, field="id")
        if self.value is not None and self.path is None:
            raise ValidationError("value needs a path: give path=$.some.key too", field="value")
        plain = None if status in (None, StatusFilter.SCHEDULED, StatusFilter.RETRYING) else JobStatus(status)
        return JobFilter(
            namespace=self.namespace,
            queue=self.queue,
            task=self.task,
            status=plain,
            user_id=self.user_id,
            ids=ids,
            scheduled=True if status is StatusFilter.SCHEDULED else None,
            retrying=True if status is StatusFilter.RETRYING else None,
            id_fragment=fragment,
            q=self.q or None,
            path=None if self.path is None else parse_json_path(self.path, field="path"),
            value=self.value if self.path is not None else None,
            queue_contains=self.queue_contains or None,
            task_contains=self.task_contains or None,
        )

    async def page(self, ctx: ServerContext, status: StatusFilter | None) -> JSONResponse:
        flt = self.job_filter(status)
        after = None if not self.cursor else decode_cursor(self.cursor, self.sort, field="cursor")
        page = await ctx.app.alist_jobs(flt, limit=self.limit, offset=self.offset, after=after, sort=self.sort)
        return JSONResponse(page_json(page, [job_json(j) for j in page.items]))


def _whole_id(text: str) -> str | None:
    try:
        return str(uuid.UUID(text)) if len(text) == 36 else None
    except ValueError:
        return None


def page_json(page: Page[Job], items: list[Any]) -> dict[str, Any]:
    """A job list's answer: the page, its total and the keyset cursor of the next page."""
    return {
        "items": items,
        "total": page.total,
        "limit": page.limit,
        "offset": page.offset,
        "next_cursor": None if page.next is None else encode_cursor(page.next),
    }


@admin.get("/jobs", response_model=JobList, tags=["jobs"], summary="List jobs, newest first")
async def list_jobs(
    ctx: ServerContext = Depends(get_context),
    search: JobSearch = Depends(),
    status: StatusFilter | None = None,
) -> JSONResponse:
    """Page with `cursor` (the previous answer's `next_cursor`): jobs consumed or added between pages never make
    a page skip or repeat one. `offset` skips that many more jobs from there."""
    return await search.page(ctx, status)


@admin.get("/jobs/{job_id}", response_model=JobOut, tags=["jobs"], summary="Get a job")
async def get_job(job_id: str, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    return JSONResponse(job_json(await _get_job(ctx, job_id)))


@admin.delete("/jobs/{job_id}", response_model=JobOut, tags=["jobs"], summary="Delete a job")
async def delete_job(job_id: str, ctx: ServerContext = Depends(get_context), force: bool = False) -> JSONResponse:
    """Pending or failed jobs; any state with `force=true`. Answers the job as it was."""
    return JSONResponse(job_json(await ctx.app.adelete(check_job_id(job_id), force=force)))


@admin.post("/jobs/{job_id}/cancel", response_model=JobOut, tags=["jobs"], summary="Cancel a job")
async def cancel_job(job_id: str, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    """A pending job is cancelled at once; a processing one is asked to stop (`cancel_requested`)."""
    return JSONResponse(job_json(await ctx.app.acancel(check_job_id(job_id))))


@admin.post("/jobs/{job_id}/requeue", response_model=JobOut, tags=["jobs"], summary="Requeue a job")
async def requeue_job(job_id: str, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    """A failed or cancelled job runs again now with its attempts reset."""
    return JSONResponse(job_json(await ctx.app.arequeue(check_job_id(job_id))))


@admin.post("/jobs/{job_id}/run-now", response_model=JobOut, tags=["jobs"], summary="Run a pending job now")
async def run_now(job_id: str, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    return JSONResponse(job_json(await ctx.app.arun_now(check_job_id(job_id))))


@admin.get("/jobs/{job_id}/attempts", response_model=AttemptList, tags=["jobs"], summary="Every attempt")
async def job_attempts(job_id: str, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    job = await _get_job(ctx, job_id)
    return JSONResponse({"items": [attempt_json(a) for a in await ctx.app.aattempts(job.id)]})


@admin.get("/jobs/{job_id}/result", response_model=AttemptOut, tags=["jobs"], summary="One attempt")
async def job_result(
    job_id: str, ctx: ServerContext = Depends(get_context), try_number: int | None = Query(None, ge=1, le=10_000)
) -> JSONResponse:
    """The attempt with `try_number`, or the latest when omitted (GS2 GetJobResult)."""
    job = await _get_job(ctx, job_id)
    return JSONResponse(await _one_attempt(ctx, job, try_number))


async def _one_attempt(ctx: ServerContext, job: Job, try_number: int | None, *, admin: bool = True) -> dict[str, Any]:
    attempts = await ctx.app.aattempts(job.id)
    if try_number is None:
        if not attempts:
            raise NotFound(f"Job {job.id} has not run yet: no attempt recorded")
        return attempt_json(visible_attempt(attempts[-1], job.task, admin=admin))
    for attempt in reversed(attempts):  # attempt_order: the last record of a try number is the one that counted
        if attempt.try_number == try_number:
            return attempt_json(visible_attempt(attempt, job.task, admin=admin))
    raise NotFound(f"Job {job.id} has no attempt number {try_number}")


# ---- dead letters ----------------------------------------------------------------------------------------------


@admin.get("/dead-letters", response_model=JobList, tags=["dead letters"], summary="List failed jobs")
async def list_dead(ctx: ServerContext = Depends(get_context), search: JobSearch = Depends()) -> JSONResponse:
    """The job list's parameters (but `status`), for failed jobs; paged by `cursor` like `/jobs`."""
    return await search.page(ctx, StatusFilter.FAILED)


async def _dead(ctx: ServerContext, job_id: str) -> Job:
    job = await _get_job(ctx, job_id)
    if job.status is not JobStatus.FAILED:
        raise NotFound(f"Dead letter not found: {job_id} (the job is {job.status.value}, not failed)")
    return job


@admin.get("/dead-letters/{job_id}", response_model=JobOut, tags=["dead letters"], summary="Get a failed job")
async def get_dead(job_id: str, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    return JSONResponse(job_json(await _dead(ctx, job_id)))


@admin.post("/dead-letters/{job_id}/requeue", response_model=JobOut, tags=["dead letters"], summary="Requeue")
async def requeue_dead(job_id: str, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    job = await _dead(ctx, job_id)
    return JSONResponse(job_json(await ctx.app.arequeue(job.id)))


@admin.delete("/dead-letters/{job_id}", response_model=JobOut, tags=["dead letters"], summary="Delete")
async def delete_dead(job_id: str, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    job = await _dead(ctx, job_id)
    return JSONResponse(job_json(await ctx.app.adelete(job.id)))


# ---- stats, queues, workers -------------------------------------------------------------------------------------


@admin.get("/stats", response_model=StatsOut, tags=["queues"], summary="Counts by status")
async def stats(
    ctx: ServerContext = Depends(get_context),
    namespace: str | None = None,
    queue: str | None = None,
    task: str | None = None,
) -> JSONResponse:
    for name, value in (("namespace", namespace), ("queue", queue), ("task", task)):
        reject_nul(value, name)
    s = await ctx.app.astats(namespace, queue, task)
    return JSONResponse(
        {
            "pending": s.pending,
            "processing": s.processing,
            "completed": s.completed,
            "failed": s.failed,
            "cancelled": s.cancelled,
            "scheduled": s.scheduled,
            "total": s.total,
            "success_rate": s.success_rate,
        }
    )


@admin.get("/queues", response_model=QueueList, tags=["queues"], summary="Queues with counts")
async def list_queues(ctx: ServerContext = Depends(get_context), namespace: str | None = None) -> JSONResponse:
    reject_nul(namespace, "namespace")
    return JSONResponse({"items": [queue_json(q) for q in await ctx.app.alist_queues(namespace)]})


async def _queue_body(ctx: ServerContext, namespace: str, queue: str) -> dict[str, Any]:
    for q in await ctx.app.alist_queues(namespace):
        if q.name == queue:
            return queue_json(q)
    return {
        "namespace": namespace,
        "name": queue,
        "paused": False,
        "concurrency": None,
        "rate_limit": None,
        "key_concurrency": None,
        "rate_key": None,
        "counts": {},
    }


async def _queue_answer(ctx: ServerContext, namespace: str, queue: str) -> JSONResponse:
    return JSONResponse(await _queue_body(ctx, namespace, queue))


@admin.get("/queues/{queue}", response_model=QueueDetail, tags=["queues"], summary="A queue and its live limits")
async def get_queue(
    queue: str, ctx: ServerContext = Depends(get_context), namespace: str = DEFAULT_NAMESPACE
) -> JSONResponse:
    """The queue's settings and counts (as in the list), with `flow`: processing jobs in all and for the busiest
    concurrency keys, the rate limiter's tokens left and next token (`rate`: the queue's bucket; `rate_keys`: with a
    rate_key, the most limited keys, and `rate_keys_limited`: how many keys hold state), whether the rate limit holds
    jobs back now, and the jobs due now with the age of the oldest."""
    answer = await _queue_body(ctx, namespace, queue)
    flow = await ctx.app.aqueue_flow(queue, namespace)
    answer["flow"] = flow_json(flow, utcnow())
    return JSONResponse(answer)


@admin.patch("/queues/{queue}", response_model=QueueOut, tags=["queues"], summary="Change a queue's settings")
async def update_queue(
    queue: str, body: QueuePatch, ctx: ServerContext = Depends(get_context), namespace: str = DEFAULT_NAMESPACE
) -> JSONResponse:
    """Set or remove the queue's concurrency cap and rate limit, or pause it; omitted fields keep their value (a
    pause keeps the limits). Workers apply the change at their next claim; Run ignores pauses and limits."""
    given = body.model_fields_set
    burst_given = "rate_burst" in given and body.rate_burst is not None
    if burst_given and "rate_limit" in given and not isinstance(body.rate_limit, str):
        raise ValidationError(
            "rate_burst goes with a text rate_limit such as '100/s' (an object rate_limit has its own burst), "
            "or alone to change the stored limit's burst",
            field="rate_burst",
        )
    rate: RateLimit | str | Keep | None = KEEP
    if "rate_limit" in given:
        r = body.rate_limit
        rate = RateLimit(r.limit, r.period, r.burst) if isinstance(r, RateLimitOut) else r
    if "paused" in given and body.paused is None:
        raise ValidationError("paused must be true or false", field="paused")
    await ctx.app.aupdate_queue(
        queue,
        namespace,
        paused=body.paused if "paused" in given and body.paused is not None else KEEP,
        concurrency=body.concurrency if "concurrency" in given else KEEP,
        key_concurrency=body.key_concurrency if "key_concurrency" in given else KEEP,
        rate_limit=rate,
        rate_burst=body.rate_burst,
        rate_key=body.rate_key if "rate_key" in given else KEEP,
    )
    return await _queue_answer(ctx, namespace, queue)


@admin.post("/queues/{queue}/pause", response_model=QueueOut, tags=["queues"], summary="Pause a queue")
async def pause_queue(
    queue: str, ctx: ServerContext = Depends(get_context), namespace: str = DEFAULT_NAMESPACE
) -> JSONResponse:
    """Workers stop claiming from it (Run still consumes it)."""
    await ctx.app.apause_queue(queue, namespace)
    return await _queue_answer(ctx, namespace, queue)


@admin.post("/queues/{queue}/resume", response_model=QueueOut, tags=["queues"], summary="Resume a queue")
async def resume_queue(
    queue: str, ctx: ServerContext = Depends(get_context), namespace: str = DEFAULT_NAMESPACE
) -> JSONResponse:
    await ctx.app.aresume_queue(queue, namespace)
    return await _queue_answer(ctx, namespace, queue)


@admin.get("/workers", response_model=WorkerList, tags=["workers"], summary="Live workers")
async def list_workers(ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    """Registrations with a live heartbeat, and the ids of the jobs each is running."""
    return JSONResponse({"items": [worker_json(w) for w in await ctx.app.alist_workers()]})


# ---- namespaces ------------------------------------------------------------------------------------------------


def _settings(body: NamespaceBody) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    changes = {k: v for k, v in changes.items() if v is not None}
    for key in ("webhook_url", "webhook_secret", "description"):
        if key in changes:
            reject_nul(changes[key], key)
    url = changes.get("webhook_url")
    if url is not None:
        if url == "":
            changes["webhook_url"] = None
        elif not url.startswith(("http://", "https://")):
            raise ValidationError("webhook_url must be an http:// or https:// URL", field="webhook_url")
    if changes.get("webhook_secret") == "":
        changes["webhook_secret"] = None
    return changes


@admin.post("/namespaces", response_model=NamespaceOut, status_code=201, tags=["namespaces"], summary="Create")
async def create_namespace(body: NamespaceCreate, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    name = _name(body.name, "namespace")
    changes = _settings(body)
    changes.pop("name", None)
    try:
        stored = await ctx.app.acreate_namespace(Namespace(name=name, **changes))
    except NamespaceExists:
        raise Conflict(f"Namespace {name!r} already exists; update it with PATCH /api/v1/namespaces/{name}") from None
    return JSONResponse(namespace_json(stored), status_code=201)


@admin.get("/namespaces", response_model=NamespaceList, tags=["namespaces"], summary="List")
async def list_namespaces(ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    return JSONResponse({"items": [namespace_json(ns) for ns in await ctx.app.alist_namespaces()]})


@admin.get("/namespaces/{name}", response_model=NamespaceOut, tags=["namespaces"], summary="Get")
async def get_namespace(name: str, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    return JSONResponse(namespace_json(await ctx.app.aget_namespace(_name(name, "namespace"))))


@admin.patch("/namespaces/{name}", response_model=NamespaceOut, tags=["namespaces"], summary="Update")
async def update_namespace(name: str, body: NamespaceBody, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    """Only the given fields change; an empty `webhook_url` or `webhook_secret` removes it."""
    changes = _settings(body)
    stored = await ctx.app.aupdate_namespace(
        _name(name, "namespace"), lambda current: dataclasses.replace(current, **changes)
    )
    return JSONResponse(namespace_json(stored))


@admin.delete("/namespaces/{name}", response_model=OkAnswer, tags=["namespaces"], summary="Delete")
async def delete_namespace(name: str, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    """Deletes the namespace with its settings and every job of it (with their attempts), in one step: none of them
    can run afterwards (GS2's rule). `default` cannot be deleted."""
    if not await ctx.app.adelete_namespace(_name(name, "namespace")):
        raise NamespaceNotFound(name)
    return JSONResponse({"ok": True})


# ---- tokens ----------------------------------------------------------------------------------------------------


@admin.post("/tokens", response_model=TokenOut, status_code=201, tags=["auth"], summary="Issue a user token")
async def issue_token(body: TokenBody, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    """A signed token reaching only this user's jobs, attempts, Run and events (in one namespace if given)."""
    auth = await ctx.get_auth()
    issued = auth.issue(body.user_id, namespace=body.namespace, ttl=body.ttl)
    return JSONResponse(
        {
            "token": issued.token,
            "user_id": issued.user_id,
            "namespace": issued.namespace,
            "expires_at": rfc3339(issued.expires_at),
        },
        status_code=201,
    )


class AdminTokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=128, pattern=r"^[A-Za-z0-9\-_.]{1,128}$")


class AdminTokenOut(BaseModel):
    name: str
    source: str
    created_at: str
    hint: str | None = None
    active: bool
    revoked_at: str | None = None


class AdminTokenCreated(AdminTokenOut):
    token: str = Field(..., description="The token itself: shown this once, the store keeps only its hash")


class AdminTokenList(BaseModel):
    items: list[AdminTokenOut]


class SecretRotated(BaseModel):
    rotated_at: str


async def _refreshed(ctx: ServerContext) -> None:
    """This node applies an auth change at once (others within conveyor.server.auth.REFRESH_SECONDS)."""
    await (await ctx.get_auth()).refresh()


@admin.get("/admin-tokens", response_model=AdminTokenList, tags=["auth"], summary="List admin tokens")
async def list_admin_tokens(ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    """Every named admin token, revoked ones included (never the token, nor its hash)."""
    return JSONResponse({"items": [t.public() for t in await tokens.list_admin_tokens(ctx.app)]})


@admin.post(
    "/admin-tokens", response_model=AdminTokenCreated, status_code=201, tags=["auth"], summary="Create an admin token"
)
async def create_admin_token(body: AdminTokenBody, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    """A new admin token named `name`, answered this once: the store keeps only its hash. 409 if an active token
    has that name."""
    created = await tokens.create_admin_token(ctx.app, body.name)
    await _refreshed(ctx)
    return JSONResponse({**created.record.public(), "token": created.token}, status_code=201)


@admin.delete("/admin-tokens/{name}", response_model=AdminTokenOut, tags=["auth"], summary="Revoke an admin token")
async def revoke_admin_token(name: str, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    """Revoked at once on this node, within seconds on every other. The last active token cannot be revoked (409):
    create another first."""
    revoked = await tokens.revoke_admin_token(ctx.app, name)
    await _refreshed(ctx)
    return JSONResponse(revoked.public())


@admin.post("/token-secret/rotate", response_model=SecretRotated, tags=["auth"], summary="Rotate the user-token secret")
async def rotate_token_secret(ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    """A new signing secret for user tokens: every user token issued so far stops working (issue new ones). Refused
    (400) when the servers sign with CONVEYOR_TOKEN_SECRET: change that variable instead."""
    auth = await ctx.get_auth()
    state = await tokens.rotate_token_secret(ctx.app, env_secret=auth.env_secret)
    auth.apply(state)
    return JSONResponse({"rotated_at": state.secret_rotated_at})


@users.get("/me", tags=["auth"], summary="Who this token is")
async def whoami(principal: Principal = Depends(get_principal)) -> dict[str, Any]:
    return {
        "kind": principal.kind,
        "name": principal.name,
        "user_id": principal.user_id,
        "namespace": principal.namespace,
        "expires_at": rfc3339(principal.expires_at),
    }


# ---- per-user (GS2) ---------------------------------------------------------------------------------------------

USER = "/namespaces/{namespace}/users/{user_id}"


@users.post(
    USER + "/jobs",
    response_model=JobsAnswer,
    status_code=201,
    summary="Push 1–10 jobs for a user",
    openapi_extra=OPENAPI_HEADER,
)
async def push_user_jobs(
    namespace: str,
    user_id: str,
    body: UserPushBody,
    request: Request,
) -> JSONResponse:
    """Admin only (GS2 PushByUserId): the user's jobs run one at a time, oldest first."""
    ctx = context_of(request)
    idempotency_key = key_of(request)
    _name(namespace, "namespace")
    if user_id == "me":
        raise ValidationError(
            "'me' names the user of a user token; the admin token must give a user id", field="user_id"
        )
    uid = user_id
    reject_nul(uid, "user_id")
    specs: list[dict[str, Any]] = []
    for index, entry in enumerate(body.jobs):
        reject_nul(entry.task, f"jobs.{index}.task")
        payload = check_payload(entry.payload, ctx.app.max_payload_bytes, f"jobs.{index}.payload")
        spec: dict[str, Any] = {"task": entry.task, "payload": payload, "namespace": namespace, "user_id": uid}
        for name in ("queue", "priority", "delay", "max_attempts", "unique_key"):
            value = getattr(entry, name)
            if value is not None:
                reject_nul(value, f"jobs.{index}.{name}")
                spec[name] = value
        specs.append(spec)

    async def run() -> JSONResponse:
        ns = await ctx.app.aget_namespace(namespace)
        jobs = await ctx.app.aenqueue_many(specs)
        answer: dict[str, Any] = {"items": [job_json(j) for j in jobs], "auto_run": ns.auto_run}
        warnings = await enqueue_warnings(ctx.app, [j.task for j in jobs]) if ns.auto_run else []
        if warnings:  # (with auto_run off, Run executes the jobs here: no worker is needed)
            answer["warnings"] = warnings
        return JSONResponse(answer, status_code=201)

    scope = f"v1-push:{namespace}:{uid}"
    return await idempotent(ctx.app, idempotency_key, scope, await request.body(), ctx.idempotency_ttl, run)


@users.get(USER + "/jobs", response_model=JobList, summary="A user's jobs, newest first")
async def list_user_jobs(
    namespace: str,
    user_id: str,
    ctx: ServerContext = Depends(get_context),
    uid: str = Depends(get_user),
    principal: Principal = Depends(get_principal),
    status: JobStatus | None = None,
    limit: int = LimitQ,
    offset: int = OffsetQ,
    cursor: str | None = CursorQ,
) -> JSONResponse:
    _name(namespace, "namespace")
    reject_nul(uid, "user_id")
    after = None if not cursor else decode_cursor(cursor, JobSort.CREATED_DESC, field="cursor")
    page = await ctx.app.alist_jobs(
        JobFilter(namespace=namespace, user_id=uid, status=status), limit=limit, offset=offset, after=after
    )
    return JSONResponse(page_json(page, [job_json(visible_job(j, admin=principal.is_admin)) for j in page.items]))


async def _user_job(ctx: ServerContext, namespace: str, uid: str, job_id: str) -> Job:
    """The job if it belongs to (namespace, user); 404 otherwise — never reveal another user's job."""
    _name(namespace, "namespace")
    job = await ctx.app.aget_job(check_job_id(job_id))
    if job is None or job.namespace != namespace or job.user_id != uid:
        raise JobNotFound(job_id)
    return job


@users.get(USER + "/jobs/{job_id}", response_model=JobOut, summary="One of a user's jobs")
async def get_user_job(
    namespace: str,
    user_id: str,
    job_id: str,
    ctx: ServerContext = Depends(get_context),
    uid: str = Depends(get_user),
    principal: Principal = Depends(get_principal),
) -> JSONResponse:
    job = await _user_job(ctx, namespace, uid, job_id)
    return JSONResponse(job_json(visible_job(job, admin=principal.is_admin)))


@users.delete(USER + "/jobs/{job_id}", response_model=JobOut, summary="Delete one of a user's jobs")
async def delete_user_job(
    namespace: str,
    user_id: str,
    job_id: str,
    ctx: ServerContext = Depends(get_context),
    uid: str = Depends(get_user),
    principal: Principal = Depends(get_principal),
) -> JSONResponse:
    """Deletes regardless of state, as GS2 does (a running job's attempt is lost)."""
    job = await _user_job(ctx, namespace, uid, job_id)
    deleted = await ctx.app.adelete(job.id, force=True)
    return JSONResponse(job_json(visible_job(deleted, admin=principal.is_admin)))


@users.get(USER + "/jobs/{job_id}/attempts", response_model=AttemptList, summary="A user's job's attempts")
async def user_job_attempts(
    namespace: str,
    user_id: str,
    job_id: str,
    ctx: ServerContext = Depends(get_context),
    uid: str = Depends(get_user),
    principal: Principal = Depends(get_principal),
) -> JSONResponse:
    job = await _user_job(ctx, namespace, uid, job_id)
    attempts = await ctx.app.aattempts(job.id)
    return JSONResponse(
        {"items": [attempt_json(visible_attempt(a, job.task, admin=principal.is_admin)) for a in attempts]}
    )


@users.get(USER + "/jobs/{job_id}/result", response_model=AttemptOut, summary="One attempt (latest by default)")
async def user_job_result(
    namespace: str,
    user_id: str,
    job_id: str,
    ctx: ServerContext = Depends(get_context),
    uid: str = Depends(get_user),
    principal: Principal = Depends(get_principal),
    try_number: int | None = Query(None, ge=1, le=10_000),
) -> JSONResponse:
    job = await _user_job(ctx, namespace, uid, job_id)
    return JSONResponse(await _one_attempt(ctx, job, try_number, admin=principal.is_admin))


@users.post(USER + "/run", response_model=RunAnswer, summary="Run the user's next job here (GS2 Run)")
async def run_user(
    namespace: str,
    user_id: str,
    ctx: ServerContext = Depends(get_context),
    uid: str = Depends(get_user),
    principal: Principal = Depends(get_principal),
) -> JSONResponse:
    """Executes the user's next due job in this request and answers `{job, attempt, is_last}`.
    409 while another job of that user is processing: retry."""
    _name(namespace, "namespace")
    reject_nul(uid, "user_id")
    result = await ctx.app.arun_next(namespace, uid)
    admin = principal.is_admin
    job, attempt = result.job, result.attempt
    return JSONResponse(
        {
            "job": None if job is None else job_json(visible_job(job, admin=admin, last_attempt=attempt)),
            "attempt": None
            if attempt is None or job is None
            else attempt_json(visible_attempt(attempt, job.task, admin=admin)),
            "is_last": result.is_last,
        }
    )
