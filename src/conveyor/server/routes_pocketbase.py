"""The PocketBase job API (`/api/jobs…`), answer for answer, with Conveyor's optional fields and batch enqueue.

PocketBase semantics kept here on purpose, even where Conveyor's own API differs: default limit 20 with invalid
or non-positive limits ignored, newest first, `{items,total,limit,offset}`, requeue only `failed` (Conveyor's
store also requeues `cancelled`), delete only `pending`/`failed`, `{"ok": true}` on delete, 404 "Job not found",
400 "Topic is required", `max_retries` ≤ 0 meaning the default. Every call needs the admin token (PocketBase:
superuser only; enforced by `conveyor.server.access`).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from conveyor.errors import InvalidTransition, JobNotFound, PayloadTooLarge, ValidationError
from conveyor.model import MAX_INT_PARAMETER, JobFilter, JobStatus
from conveyor.server.common import (
    ERROR_RESPONSES,
    check_job_id,
    check_payload,
    enqueue_warnings,
    error_response,
    pocketbase_job,
    reject_nul,
)
from conveyor.server.deps import ServerContext, context_of, get_context
from conveyor.server.idempotency import OPENAPI_HEADER, idempotent, key_of
from conveyor.server.schemas import (
    OkAnswer,
    PBBatchAnswer,
    PBEnqueue,
    PBEnqueueBatch,
    PBJob,
    PBJobList,
    PBStats,
    unique_option,
)

router = APIRouter(prefix="/api/jobs", tags=["jobs (PocketBase)"])

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def enqueue_options(body: PBEnqueue, max_bytes: int, where: str = "") -> tuple[str, Any, dict[str, Any]]:
    """Validate one PocketBase enqueue body into (task, payload, options) for Conveyor.aenqueue_many."""
    topic = body.topic
    if topic is None or not topic.strip():
        raise ValidationError("Topic is required", field=f"{where}topic")
    reject_nul(topic, f"{where}topic")
    try:
        payload = check_payload(body.payload, max_bytes, f"{where}payload")
    except PayloadTooLarge as exc:
        # PocketBase answers 400 "payload too large (max 1MB)" (its JobMaxPayloadSize check), not 413
        limit = "1MB" if max_bytes == 1 << 20 else f"{max_bytes} bytes"
        raise ValidationError(f"payload too large (max {limit})", field=f"{where}payload") from exc
    options: dict[str, Any] = {}
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
    ):
        value = unique_option(body.unique) if name == "unique" else getattr(body, name)
        if value is not None:
            if name == "unique":  # its strings are checked by the model (fields: NUL too, as payload keys)
                options[name] = value
                continue
            reject_nul(value, f"{where}{name}")
            options[name] = value
    if body.max_retries is not None and body.max_retries > 0:
        options["max_attempts"] = body.max_retries
    return topic, payload, options


def _prefix_field(exc: ValidationError, where: str) -> ValidationError:
    if where and exc.field and not exc.field.startswith(where):
        exc.field = f"{where}{exc.field}"
    return exc


@router.post(
    "/enqueue", response_model=PBJob, responses=ERROR_RESPONSES, summary="Enqueue a job", openapi_extra=OPENAPI_HEADER
)
async def enqueue(body: PBEnqueue, request: Request) -> JSONResponse:
    """PocketBase's enqueue (200 with the job). Extra fields: namespace, queue, priority, delay, user_id,
    group_key, unique_key. `Idempotency-Key` makes a retried request return the first answer."""
    ctx = context_of(request)
    idempotency_key = key_of(request)
    task, payload, options = enqueue_options(body, ctx.app.max_payload_bytes)

    async def run() -> JSONResponse:
        job = await ctx.app.aenqueue(task, payload, **options)
        answer = pocketbase_job(job)
        warnings = await enqueue_warnings(ctx.app, [job.task])
        if warnings:
            answer["warnings"] = list(warnings)
        return JSONResponse(answer)

    return await idempotent(ctx.app, idempotency_key, "pb-enqueue", await request.body(), ctx.idempotency_ttl, run)


@router.post(
    "/enqueue/batch",
    response_model=PBBatchAnswer,
    responses=ERROR_RESPONSES,
    summary="Enqueue several jobs",
    openapi_extra=OPENAPI_HEADER,
)
async def enqueue_batch(
    body: PBEnqueueBatch,
    request: Request,
) -> JSONResponse:
    """Enqueue up to 1000 jobs in one round trip, all or nothing; answers in input order."""
    ctx = context_of(request)
    idempotency_key = key_of(request)
    specs: list[dict[str, Any]] = []
    for index, item in enumerate(body.jobs):
        where = f"jobs.{index}."
        try:
            task, payload, options = enqueue_options(item, ctx.app.max_payload_bytes, where)
        except ValidationError as exc:
            raise _prefix_field(exc, where) from None
        specs.append({"task": task, "payload": payload, **options})

    async def run() -> JSONResponse:
        jobs = await ctx.app.aenqueue_many(specs)
        answer: dict[str, Any] = {"items": [pocketbase_job(j) for j in jobs]}
        warnings = await enqueue_warnings(ctx.app, [j.task for j in jobs])
        if warnings:
            answer["warnings"] = warnings
        return JSONResponse(answer)

    return await idempotent(ctx.app, idempotency_key, "pb-batch", await request.body(), ctx.idempotency_ttl, run)


_INTEGER = re.compile(r"[+-]?[0-9]+")


def _int_or(value: str | None, default: int, *, positive: bool, name: str) -> int:
    """PocketBase's paging rule: what is not a number, or is out of range below, means the default. A number too
    large for any store is refused (400 naming the parameter) rather than overflowing the database."""
    if value is None or not _INTEGER.fullmatch(value.strip()):
        return default
    number = int(value) if len(value) <= 20 else MAX_INT_PARAMETER + 1
    if number > MAX_INT_PARAMETER:
        raise ValidationError(f"{name} must be an integer from 0 to {MAX_INT_PARAMETER}", field=name)
    if (positive and number <= 0) or number < 0:
        return default
    return number


@router.get("", response_model=PBJobList, responses=ERROR_RESPONSES, summary="List jobs, newest first")
async def list_jobs(
    ctx: ServerContext = Depends(get_context),
    topic: str | None = None,
    status: str | None = None,
    limit: str | None = None,
    offset: str | None = None,
    namespace: str | None = None,
    queue: str | None = None,
    user_id: str | None = None,
) -> JSONResponse:
    """`limit` defaults to 20 (invalid or non-positive values are ignored, PocketBase's rule; at most 1000)."""
    lim = min(_int_or(limit, DEFAULT_LIMIT, positive=True, name="limit"), MAX_LIMIT)
    off = _int_or(offset, 0, positive=False, name="offset")
    for name, value in (("topic", topic), ("namespace", namespace), ("queue", queue), ("user_id", user_id)):
        reject_nul(value, name)
    if status:
        try:
            job_status: JobStatus | None = JobStatus(status)
        except ValueError:  # PocketBase passes the value to SQL: an unknown status matches nothing
            return JSONResponse({"items": [], "total": 0, "limit": lim, "offset": off})
    else:
        job_status = None
    flt = JobFilter(
        namespace=namespace or None, queue=queue or None, task=topic or None, status=job_status, user_id=user_id or None
    )
    page = await ctx.app.alist_jobs(flt, limit=lim, offset=off)
    return JSONResponse(
        {"items": [pocketbase_job(j) for j in page.items], "total": page.total, "limit": lim, "offset": off}
    )


@router.get("/stats", response_model=PBStats, responses=ERROR_RESPONSES, summary="Counts by status")
async def stats(
    ctx: ServerContext = Depends(get_context),
    namespace: str | None = None,
    queue: str | None = None,
    topic: str | None = None,
) -> JSONResponse:
    """`total = pending + processing + completed + failed` and `success_rate = completed / (completed + failed)`
    (0 when neither), as in PocketBase. `cancelled` and `scheduled` are Conveyor's extras, outside the total."""
    for name, value in (("topic", topic), ("namespace", namespace), ("queue", queue)):
        reject_nul(value, name)
    s = await ctx.app.astats(namespace or None, queue or None, topic or None)
    return JSONResponse(
        {
            "pending": s.pending,
            "processing": s.processing,
            "completed": s.completed,
            "failed": s.failed,
            # PocketBase's total is the sum of the four statuses it lists; Conveyor's own keys sit beside it
            "total": s.pending + s.processing + s.completed + s.failed,
            "success_rate": s.success_rate,
            "cancelled": s.cancelled,
            "scheduled": s.scheduled,
        }
    )


def _not_found() -> JSONResponse:
    return error_response(404, "Job not found", error="not_found")


@router.get("/{job_id}", response_model=PBJob, responses=ERROR_RESPONSES, summary="Get a job")
async def get_job(job_id: str, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    try:
        job = await ctx.app.aget_job(check_job_id(job_id))
    except JobNotFound:
        return _not_found()
    if job is None:
        return _not_found()
    return JSONResponse(pocketbase_job(job))


@router.post("/{job_id}/requeue", response_model=PBJob, responses=ERROR_RESPONSES, summary="Requeue a failed job")
async def requeue(job_id: str, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    """Only `failed` jobs: status pending, retries 0, run now, lock and error cleared."""
    try:
        job = await ctx.app.aget_job(check_job_id(job_id))
        if job is None:
            return _not_found()
        if job.status is not JobStatus.FAILED:
            raise InvalidTransition("Job cannot be requeued (must be in 'failed' status)")
        return JSONResponse(pocketbase_job(await ctx.app.arequeue(job.id)))
    except JobNotFound:
        return _not_found()


@router.delete("/{job_id}", response_model=OkAnswer, responses=ERROR_RESPONSES, summary="Delete a job")
async def delete(job_id: str, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    """Only `pending` or `failed` jobs (with their attempt records)."""
    try:
        await ctx.app.adelete(check_job_id(job_id))
    except JobNotFound:
        return _not_found()
    return JSONResponse({"ok": True})
