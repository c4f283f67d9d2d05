"""Shared pieces of the HTTP layer: the error body, error handlers, JSON shapes of Conveyor's values.

Every error answer has one shape, PocketBase's `{code, message, data}` extended with `error` (a stable machine
code from conveyor.errors) and `field` (the input that broke a rule), so that clients of the PocketBase API keep
working and every other client gets the field and rule in words.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from conveyor.app import Conveyor, unserved_warning
from conveyor.errors import ConveyorError, JobNotFound, StoreUnavailable, ValidationError
from conveyor.model import (
    JSON,
    Attempt,
    CheckedJSON,
    Job,
    JobStatus,
    Namespace,
    QueueFlow,
    QueueInfo,
    RateBucket,
    RateLimit,
    WorkerInfo,
    check_json_text,
    is_reserved_task,
)

log = logging.getLogger("conveyor.server")

_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class ErrorBody(BaseModel):
    """Every error answer. `code` is the HTTP status (PocketBase), `error` the machine code, `field` the input."""

    code: int
    message: str
    error: str = "error"
    field: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "Bad input or a state that forbids the change"),
        (401, "Missing, invalid or expired token"),
        (403, "The token may not reach this resource"),
        (404, "Not found"),
        (409, "Conflict: another job of the user is processing (Run), the name exists, or the request is in flight"),
        (413, "Payload or body too large"),
        (422, "Input does not match the schema"),
        (503, "The store is unavailable; retry later"),
    )
}


def error_response(status: int, message: str, *, error: str = "error", field: str | None = None) -> JSONResponse:
    data: dict[str, Any] = {}
    if field is not None:
        data[field] = {"code": error, "message": message}
    body = {"code": status, "message": message, "error": error, "field": field, "data": data}
    return JSONResponse(body, status_code=status)


STORE_UNAVAILABLE_TEXT = "the job store is unavailable right now; retry later"
SERVER_ERROR_TEXT = "internal error; see the server log"


def caller_is_admin(request: Request) -> bool:
    principal = getattr(request.state, "principal", None)
    return bool(principal is not None and principal.is_admin)


def server_error_text(request: Request, exc: ConveyorError) -> str:
    """What a caller may read of a 5xx: the admin gets the message (a store's own words: hosts, file paths, driver
    errors — what an operator needs); anyone else a fixed sentence, the detail going to the server log."""
    if caller_is_admin(request):
        return exc.message
    log.warning("%s on %s %s: %s", exc.code, request.method, request.url.path, exc.message)
    return STORE_UNAVAILABLE_TEXT if isinstance(exc, StoreUnavailable) else SERVER_ERROR_TEXT


def _conveyor_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConveyorError)
    field = exc.field if isinstance(exc, ValidationError) else None
    status = exc.status_code
    if status >= 500 and not isinstance(exc, StoreUnavailable):
        # a ConveyorError that maps to 500 (e.g. a misconfiguration) still says what it is (to the admin)
        status = 500
    message = server_error_text(request, exc) if status >= 500 else exc.message
    return error_response(status, message, error=exc.code, field=field)


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "Error"
    if exc.status_code == 404 and message == "Not Found":
        message = f"Not found: {request.method} {request.url.path}"
    if exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}"
    response = error_response(exc.status_code, message, error=_code_for(exc.status_code))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def _code_for(status: int) -> str:
    return {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}.get(
        status, "error"
    )


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """Name the first offending field and its rule. PocketBase answers any bad body with 400, so its routes do."""
    assert isinstance(exc, RequestValidationError)
    errors: Sequence[Mapping[str, Any]] = exc.errors()
    status = 400 if request.url.path.startswith(("/api/jobs", "/api/dm-jobqueue")) else 422
    data: dict[str, Any] = {}
    first_field: str | None = None
    first_message = "Invalid request"
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        field = ".".join(loc) or str((err.get("loc") or ("body",))[0])
        rule = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            field, rule = "body", "must be valid JSON"
            status = 400
        if first_field is None:
            first_field = field
            first_message = f"{field}: {rule}"
        data.setdefault(field, {"code": str(err.get("type", "invalid")), "message": rule})
    body = {"code": status, "message": first_message, "error": "validation_error", "field": first_field, "data": data}
    return JSONResponse(body, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ConveyorError, _conveyor_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)


def fix_openapi_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Point FastAPI's generated 422 answers at ErrorBody, which is what the handlers really send."""
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            responses = operation.get("responses", {})
            if "422" in responses:
                responses["422"] = {
                    "description": "Input does not match the schema",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                }
    comps = schema.get("components", {}).get("schemas", {})
    comps.pop("HTTPValidationError", None)
    comps.pop("ValidationError", None)
    return schema


# ---- input checks shared by the routes ------------------------------------------------------------------------


def check_payload(payload: Any, max_bytes: int, field: str = "payload") -> CheckedJSON:
    """Refuse a non-JSON or oversize payload with its own status (413) and field name, before any store call, and
    hand back the payload with its encoding, which enqueue keeps: a request's payload is encoded once. (The encoder
    refuses NUL and lone surrogates too, on every store alike.)"""
    try:
        return CheckedJSON.encode(payload, max_bytes)
    except ValidationError as exc:
        exc.field = field
        raise


def check_job_id(job_id: str) -> str:
    """Job ids are UUIDs; anything else cannot exist, so answer 404 without a store round trip."""
    if not _UUID_RE.match(job_id):
        raise JobNotFound(job_id)
    return job_id.lower()


def reject_nul(value: Any, field: str) -> None:
    """Refuse text no store can keep — NUL (PostgreSQL text and JSONB cannot hold it) and lone UTF-16 surrogates
    (not Unicode; nothing can encode them) — on every store alike, naming the place (conveyor.model.text_problem).
    Request bodies are checked once more by the server's RequestGuard; this covers values from anywhere."""
    if value is None or isinstance(value, int | float):
        return
    check_json_text(value, field)


# ---- what a caller may see of a job's errors --------------------------------------------------------------------

INTERNAL_ERROR_TEXT = "the task failed with an internal error (its details are visible to admins only)"


def public_error(attempt: Attempt, task: str) -> str | None:
    """The error text of an attempt that a user token may read. A deliberate failure's text is the handler's own
    words for its callers (`Fail(reason)`, `Retry(reason=...)`, timeouts, cancels, a lost lease); an unexpected
    exception (status 500) carries internal exception text — paths, hosts, driver messages, values from the code —
    and Conveyor's own `conveyor:` jobs (webhook deliveries) carry URLs: both are replaced by a fixed sentence."""
    if attempt.error is None:
        return None
    if attempt.status_code == 500 or is_reserved_task(task):
        return INTERNAL_ERROR_TEXT
    return attempt.error


def visible_attempt(attempt: Attempt, task: str, *, admin: bool) -> Attempt:
    """The attempt as the caller may see it: everything for the admin; for a user token no traceback, and the
    error text only as `public_error` allows."""
    if admin:
        return attempt
    return dataclasses.replace(attempt, error=public_error(attempt, task), traceback=None)


def visible_job(job: Job, *, admin: bool, last_attempt: Attempt | None = None) -> Job:
    """The job as the caller may see it: a user token reads `last_error` only as the public text of the attempt
    that set it (when the caller has it at hand, as Run does), never the stored text."""
    if admin or job.last_error is None:
        return job
    shown = public_error(last_attempt, job.task) if last_attempt is not None else None
    return dataclasses.replace(job, last_error=shown)


# ---- JSON shapes ----------------------------------------------------------------------------------------------


def rfc3339(value: datetime | None) -> str | None:
    """RFC 3339 UTC with milliseconds (Conveyor's own surface: ordering inside a second stays visible)."""
    if value is None:
        return None
    value = value.astimezone(UTC)
    return f"{value.year:04d}-{value:%m-%dT%H:%M:%S}.{value.microsecond // 1000:03d}Z"  # %Y does not pad year 1


def pb_time(value: datetime) -> str:
    """PocketBase's time format: RFC 3339 UTC at second precision."""
    value = value.astimezone(UTC)
    return f"{value.year:04d}-{value:%m-%dT%H:%M:%S}Z"


def pocketbase_job(job: Job) -> dict[str, JSON]:
    """The PocketBase Job JSON (`locked_until`/`last_error` omitted when empty), plus Conveyor's extra fields.

    PocketBase counts `retries` as failures that led to another try and `max_retries` as the total number of
    tries; Conveyor counts tries (`attempts`). A pending job's attempts all failed; otherwise the current or last
    try is not a retry."""
    retries = job.attempts if job.status is JobStatus.PENDING else max(job.attempts - 1, 0)
    out: dict[str, JSON] = {
        "id": job.id,
        "topic": job.task,
        "payload": job.payload,
        "status": job.status.value,
        "run_at": pb_time(job.run_at),
        "retries": retries,
        "max_retries": job.max_attempts,
        "created": pb_time(job.created),
        "updated": pb_time(job.updated),
    }
    if job.lease_expires_at is not None and job.status is JobStatus.PROCESSING:
        out["locked_until"] = pb_time(job.lease_expires_at)
    if job.last_error is not None:
        out["last_error"] = job.last_error
    out.update(
        {
            "namespace": job.namespace,
            "queue": job.queue,
            "priority": job.priority,
            "attempts": job.attempts,
            "user_id": job.user_id,
            "group_key": job.group_key,
            "unique_key": job.unique_key,
            "duplicate": job.duplicate,
        }
    )
    return out


def job_json(job: Job) -> dict[str, JSON]:
    """Conveyor's own job JSON (the /api/v1 surface): every field of the model."""
    return {
        "id": job.id,
        "namespace": job.namespace,
        "queue": job.queue,
        "task": job.task,
        "payload": job.payload,
        "status": job.status.value,
        "scheduled": job.is_scheduled(),
        "priority": job.priority,
        "run_at": rfc3339(job.run_at),
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "try_number": job.try_number,
        "created": rfc3339(job.created),
        "updated": rfc3339(job.updated),
        "user_id": job.user_id,
        "group_key": job.group_key,
        "unique_key": job.unique_key,
        "concurrency_key": job.concurrency_key,
        "started_at": rfc3339(job.started_at),
        "finished_at": rfc3339(job.finished_at),
        "lease_expires_at": rfc3339(job.lease_expires_at),
        "worker_id": job.worker_id,
        "last_error": job.last_error,
        "result": job.result,
        "cancel_requested": job.cancel_requested,
        "duplicate": job.duplicate,
        "timed_out_at": rfc3339(job.timed_out_at),
        "overrunning": job.overrunning,  # "timed out, still running": the retry waits for the handler's thread
    }


def attempt_json(attempt: Attempt) -> dict[str, JSON]:
    return {
        "job_id": attempt.job_id,
        "try_number": attempt.try_number,
        "outcome": attempt.outcome.value,
        "status_code": attempt.status_code,
        "succeeded": attempt.succeeded,
        "started_at": rfc3339(attempt.started_at),
        "finished_at": rfc3339(attempt.finished_at),
        "duration": attempt.duration,
        "worker_id": attempt.worker_id,
        "result": attempt.result,
        "error": attempt.error,
        "traceback": attempt.traceback,
    }


def namespace_json(ns: Namespace, *, reveal_secret: bool = False) -> dict[str, JSON]:
    """A namespace's settings. The webhook secret is write-only: answers say whether one is set."""
    data = ns.to_dict()
    data["created"] = rfc3339(ns.created)
    data["updated"] = rfc3339(ns.updated)
    secret = data.pop("webhook_secret", None)
    data["webhook_secret_set"] = bool(secret)
    if reveal_secret:
        data["webhook_secret"] = secret
    return data


def queue_json(q: QueueInfo) -> dict[str, JSON]:
    return {
        "namespace": q.namespace,
        "name": q.name,
        "paused": q.paused,
        "concurrency": q.concurrency,
        "rate_limit": rate_json(q.rate_limit),
        "key_concurrency": q.key_concurrency,
        "rate_key": q.rate_key,
        "counts": dict(q.counts),
    }


def bucket_json(bucket: RateBucket, now: datetime) -> dict[str, JSON]:
    out: dict[str, JSON] = {"tokens": bucket.tokens, "next_in": round(bucket.next_in, 6)}
    out["next_at"] = None if bucket.tokens > 0 else rfc3339(now + timedelta(seconds=bucket.next_in))
    if bucket.key is not None:
        out = {"key": bucket.key, **out}
    return out


def flow_json(flow: QueueFlow, now: datetime) -> dict[str, JSON]:
    """A queue's live limits (`Conveyor.aqueue_flow`) as GET /api/v1/queues/{queue} and the UI show them."""
    return {
        "processing": flow.processing,
        "processing_per_key": [{"key": k, "processing": n} for k, n in flow.busiest_keys],
        "rate": None if flow.rate is None else bucket_json(flow.rate, now),
        "rate_keys_limited": flow.limited_keys,
        "rate_keys": [bucket_json(b, now) for b in flow.most_limited],
        "rate_limited": flow.rate_limited,
        "due": flow.due,
        "oldest_due_age": None if flow.oldest_due_age is None else round(flow.oldest_due_age, 3),
    }


def rate_json(rate: RateLimit | None) -> dict[str, JSON] | None:
    if rate is None:
        return None
    return {"limit": rate.limit, "period": rate.period, "burst": rate.burst}


def worker_json(w: WorkerInfo) -> dict[str, JSON]:
    return {
        "id": w.id,
        "hostname": w.hostname,
        "pid": w.pid,
        "queues": list(w.queues),
        "concurrency": w.concurrency,
        "started_at": rfc3339(w.started_at),
        "heartbeat_at": rfc3339(w.heartbeat_at),
        "expires_at": rfc3339(w.expires_at),
        "running": list(w.running),
        "version": w.version,
        "leader_of": list(w.leader_of),
        "tasks": list(w.tasks),
    }


async def enqueue_warnings(app: Conveyor, tasks: Iterable[str]) -> list[str]:
    """The `warnings` of an enqueue answer: one per task that no live worker has registered (docs/http-api.md)."""
    return [unserved_warning(task) for task in await app.aunserved_tasks(tasks)]
