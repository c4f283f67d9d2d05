"""A user's data as one JSON document: every job of the user (any namespace, any status — dead letters are the
`failed` ones) with every attempt. For data requests (dump), account deletion (clean) and moving a player (import).

Used by the GS2 user-data calls (`server/gs2_userdata.py`) and `conveyor users dump | clean | import`, through the
runtime core only (the store on its home loop, and `conveyor.enqueue`).

Import restores the user's *queue*: jobs that were pending or processing come back pending, with their ids, task,
payload text (exactly), namespace, queue, priority, due time and retry budget. Finished jobs (completed, failed,
cancelled) and their attempt records are history: the import report lists them as kept in the document but not
re-inserted, because no store call puts a finished job back yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import Any

from conveyor.enqueue import enqueue_many
from conveyor.errors import ValidationError
from conveyor.model import JSON, Attempt, Job, JobFilter, JobStatus, RawJSON, utcnow
from conveyor.runtime import SupportsRuntime

FORMAT = "conveyor.user-data"
VERSION = 1
PAGE = 500
MAX_JOBS = 100_000


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def attempt_doc(a: Attempt) -> dict[str, JSON]:
    return {
        "tryNumber": a.try_number,
        "outcome": a.outcome.value,
        "statusCode": a.status_code,
        "startedAt": _iso(a.started_at),
        "finishedAt": _iso(a.finished_at),
        "workerId": a.worker_id,
        "result": a.result,
        "error": a.error,
        "traceback": a.traceback,
    }


def job_doc(job: Job, attempts: list[Attempt]) -> dict[str, JSON]:
    return {
        "id": job.id,
        "namespace": job.namespace,
        "queue": job.queue,
        "task": job.task,
        "payloadJson": job.payload_json,
        "payload": job.payload,
        "status": job.status.value,
        "priority": job.priority,
        "runAt": _iso(job.run_at),
        "attempts": job.attempts,
        "maxAttempts": job.max_attempts,
        "tryNumber": job.try_number,
        "created": _iso(job.created),
        "updated": _iso(job.updated),
        "userId": job.user_id,
        "groupKey": job.group_key,
        "uniqueKey": job.unique_key,
        "startedAt": _iso(job.started_at),
        "finishedAt": _iso(job.finished_at),
        "lastError": job.last_error,
        "result": job.result,
        "attemptRecords": [attempt_doc(a) for a in attempts],
    }


async def dump_user(app: SupportsRuntime, user_id: str) -> dict[str, JSON]:
    """The document: every job of `user_id` oldest first, each with its attempts; dead letters listed by id."""
    _check_user(user_id)
    rt = app.runtime
    store = rt.store
    jobs: list[Job] = []
    offset = 0
    while True:
        page = await rt.on_home(partial(store.list_jobs, JobFilter(user_id=user_id), PAGE, offset))
        jobs.extend(page.items)
        offset += len(page.items)
        if not page.items or offset >= page.total:
            break
        if offset > MAX_JOBS:
            raise ValidationError(f"user {user_id!r} has more than {MAX_JOBS} jobs; dump them in parts", field="user")
    jobs.sort(key=lambda j: (j.created, j.id))
    docs = [job_doc(j, await rt.on_home(partial(store.attempts, j.id))) for j in jobs]
    return {
        "format": FORMAT,
        "version": VERSION,
        "userId": user_id,
        "exportedAt": utcnow().isoformat(),
        "jobs": docs,
        "deadLetterJobs": [j.id for j in jobs if j.status is JobStatus.FAILED],
    }


async def clean_user(app: SupportsRuntime, user_id: str) -> int:
    """Delete every job and attempt of the user atomically; how many jobs were deleted."""
    _check_user(user_id)
    rt = app.runtime
    return await rt.on_home(lambda: rt.store.delete_user_data(user_id))


async def import_user(app: SupportsRuntime, user_id: str, document: Mapping[str, Any]) -> dict[str, JSON]:
    """Restore the queue of a dump (see the module doc) and answer a report. Refuses a document that is not a
    Conveyor user-data dump of `user_id`, or one holding another user's job, before changing anything."""
    _check_user(user_id)
    rt = app.runtime
    if not isinstance(document, Mapping) or document.get("format") != FORMAT or document.get("version") != VERSION:
        raise ValidationError(f"not a {FORMAT} document of version {VERSION}", field="document")
    if document.get("userId") != user_id:
        raise ValidationError(
            f"this dump is of user {document.get('userId')!r}, not {user_id!r}; import it for its own user",
            field="userId",
        )
    entries = document.get("jobs")
    if not isinstance(entries, list):
        raise ValidationError("the document has no jobs list", field="jobs")
    specs: list[dict[str, Any]] = []
    skipped: list[dict[str, JSON]] = []
    present: list[str] = []
    now = utcnow()
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise ValidationError(f"jobs[{index}] is not an object", field="jobs")
        if entry.get("userId") != user_id:
            raise ValidationError(f"jobs[{index}] belongs to user {entry.get('userId')!r}", field="jobs")
        status = entry.get("status")
        job_id = entry.get("id")
        if status not in (JobStatus.PENDING.value, JobStatus.PROCESSING.value):
            skipped.append({"id": job_id, "status": status, "reason": "history: kept in the dump, not re-inserted"})
            continue
        if isinstance(job_id, str) and await rt.on_home(partial(rt.store.get_job, job_id)) is not None:
            present.append(job_id)
            continue
        try:
            run_at = datetime.fromisoformat(str(entry.get("runAt")))
        except ValueError:
            raise ValidationError(f"jobs[{index}].runAt is not a time", field="jobs") from None
        text = entry.get("payloadJson")
        spec: dict[str, Any] = {
            "task": entry.get("task"),
            "payload": RawJSON(text) if isinstance(text, str) else entry.get("payload"),
            "namespace": entry.get("namespace"),
            "queue": entry.get("queue"),
            "priority": entry.get("priority"),
            "run_at": max(run_at, now),
            "max_attempts": entry.get("maxAttempts"),
            "user_id": user_id,
            "group_key": entry.get("groupKey"),
            "unique_key": entry.get("uniqueKey"),
            "job_id": job_id,
        }
        specs.append(spec)
    restored = await enqueue_many(rt, specs) if specs else []
    return {
        "format": FORMAT + ".import-report",
        "userId": user_id,
        "importedAt": utcnow().isoformat(),
        "restored": [j.id for j in restored if not j.duplicate],
        "alreadyPresent": present + [j.id for j in restored if j.duplicate],
        "skipped": skipped,
    }


def _check_user(user_id: object) -> None:
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= 1024 or "\x00" in user_id:
        raise ValidationError("user id must be 1 to 1024 characters without NUL", field="user_id")
