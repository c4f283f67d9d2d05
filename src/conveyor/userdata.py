"""A user's data as one JSON document: every job of the user (any namespace, any status — dead letters are the
`failed` ones) with every attempt. For data requests (dump), account deletion (clean) and moving a player (import).

Used by the GS2 user-data calls (`server/gs2_userdata.py`) and `conveyor users dump | clean | import`, through the
runtime core only (the store on its home loop).

Import restores everything of the dump exactly (`Store.restore_jobs`, one atomic step): every job in its status —
pending, completed, failed (dead letters), cancelled — with its id, task, payload text, namespace, queue, priority,
times, attempts, try number, error and result, and every attempt record. One thing cannot come back as it was: a
job that was *processing* when dumped has no worker any more, so it is restored pending and due when it was, its
unfinished try not counted (as after a graceful hand-back). Jobs whose ids exist already are left alone and listed
as already present, so importing the same dump twice changes nothing the second time.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from conveyor.errors import ValidationError
from conveyor.model import (
    JSON,
    MAX_INT_PARAMETER,
    Attempt,
    AttemptOutcome,
    Job,
    JobFilter,
    JobKey,
    JobStatus,
    NewJob,
    RawJSON,
    check_public_task_name,
    utcnow,
)
from conveyor.runtime import SupportsRuntime

FORMAT = "conveyor.user-data"
VERSION = 1
PAGE = 500
MAX_JOBS = 100_000
MAX_PAYLOAD_BYTES = 1 << 30
"""A dump's payloads were accepted once under the server's limit of the time; an import does not judge them again."""


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
        "leaseToken": a.lease_token,
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
    after: JobKey | None = None
    while True:  # by keyset: jobs that run or finish meanwhile are neither skipped nor dumped twice
        page = await rt.on_home(partial(store.list_jobs, JobFilter(user_id=user_id), PAGE, after=after))
        jobs.extend(page.items)
        if page.next is None:
            break
        after = page.next
        if len(jobs) > MAX_JOBS:
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
    """Restore a dump (see the module doc) and answer a report. Refuses a document that is not a Conveyor
    user-data dump of `user_id`, or one holding another user's job, before changing anything; the restore itself
    is all or nothing."""
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
    if len(entries) > MAX_JOBS:
        raise ValidationError(f"a dump holds at most {MAX_JOBS} jobs; import it in parts", field="jobs")
    jobs: list[Job] = []
    attempts: list[Attempt] = []
    present: list[str] = []
    resumed: list[str] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise ValidationError(f"jobs[{index}] is not an object", field="jobs")
        if entry.get("userId") != user_id:
            raise ValidationError(f"jobs[{index}] belongs to user {entry.get('userId')!r}", field="jobs")
        job, records = _job_from(entry, index, user_id)
        if await rt.on_home(partial(rt.store.get_job, job.id)) is not None:
            present.append(job.id)
            continue
        if job.status is JobStatus.PROCESSING:
            resumed.append(job.id)
            job = replace(
                job,
                status=JobStatus.PENDING,
                attempts=max(0, job.attempts - 1),
                try_number=max(0, job.try_number - 1),
            )
        jobs.append(job)
        attempts.extend(records)
    restored = await rt.on_home(partial(rt.store.restore_jobs, jobs, attempts)) if jobs else []
    return {
        "format": FORMAT + ".import-report",
        "userId": user_id,
        "importedAt": utcnow().isoformat(),
        "restored": [j.id for j in restored],
        "alreadyPresent": present,
        "resumedAsPending": resumed,
        "skipped": [],
    }


def _job_from(entry: Mapping[str, Any], index: int, user_id: str) -> tuple[Job, list[Attempt]]:
    """A dumped job and its attempt records, checked by the rules every enqueue follows."""
    where = f"jobs[{index}]"

    def time(name: str, optional: bool = False) -> datetime | None:
        raw = entry.get(name)
        if raw is None and optional:
            return None
        try:
            value = datetime.fromisoformat(str(raw))
        except ValueError:
            raise ValidationError(f"{where}.{name} is not a time", field="jobs") from None
        if value.tzinfo is None:
            raise ValidationError(f"{where}.{name} has no time zone", field="jobs")
        return value.astimezone(UTC)

    def integer(name: str, low: int, high: int) -> int:
        value = entry.get(name, 0)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValidationError(f"{where}.{name} must be an integer from {low} to {high}", field="jobs")
        return value

    try:
        check_public_task_name(entry.get("task"))
    except ValidationError as exc:
        raise ValidationError(f"{where}: {exc.message}", field="jobs") from None
    try:
        status = JobStatus(str(entry.get("status", "pending")))
    except ValueError:
        raise ValidationError(f"{where}.status is not a job status", field="jobs") from None
    text = entry.get("payloadJson")
    created = time("created", True) or utcnow()
    updated = time("updated", True) or created
    try:
        new = NewJob.build(
            str(entry.get("task")),
            RawJSON(text) if isinstance(text, str) else entry.get("payload"),
            namespace=entry.get("namespace"),  # type: ignore[arg-type]
            queue=entry.get("queue"),  # type: ignore[arg-type]
            priority=entry.get("priority"),  # type: ignore[arg-type]
            run_at=time("runAt"),
            max_attempts=entry.get("maxAttempts"),
            user_id=user_id,
            group_key=entry.get("groupKey"),
            unique_key=entry.get("uniqueKey"),
            now=created,
            job_id=_job_id(entry.get("id"), where),
            max_payload_bytes=MAX_PAYLOAD_BYTES,
        )
    except ValidationError as exc:
        raise ValidationError(f"{where}: {exc.message}", field="jobs") from None
    last_error, result = entry.get("lastError"), entry.get("result")
    if last_error is not None and not isinstance(last_error, str):
        raise ValidationError(f"{where}.lastError must be text", field="jobs")
    job = replace(
        new.to_job(),
        status=status,
        attempts=integer("attempts", 0, MAX_INT_PARAMETER),
        try_number=integer("tryNumber", 0, MAX_INT_PARAMETER),
        updated=updated,
        started_at=time("startedAt", True),
        finished_at=time("finishedAt", True),
        last_error=last_error,
        result=result,
    )
    records = entry.get("attemptRecords") or []
    if not isinstance(records, list):
        raise ValidationError(f"{where}.attemptRecords must be a list", field="jobs")
    return job, [_attempt_from(r, job.id, f"{where}.attemptRecords[{i}]") for i, r in enumerate(records)]


def _job_id(value: object, where: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ValidationError(f"{where}.id is not a job id", field="jobs") from None


def _attempt_from(doc: object, job_id: str, where: str) -> Attempt:
    if not isinstance(doc, Mapping):
        raise ValidationError(f"{where} is not an object", field="jobs")
    try:
        started = datetime.fromisoformat(str(doc.get("startedAt"))).astimezone(UTC)
        finished = datetime.fromisoformat(str(doc.get("finishedAt"))).astimezone(UTC)
        outcome = AttemptOutcome(str(doc.get("outcome")))
    except ValueError:
        raise ValidationError(f"{where} has a bad time or outcome", field="jobs") from None
    number, code = doc.get("tryNumber"), doc.get("statusCode")
    for name, value in (("tryNumber", number), ("statusCode", code)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_INT_PARAMETER:
            raise ValidationError(f"{where}.{name} must be a non-negative integer", field="jobs")
    texts = {name: doc.get(name) for name in ("workerId", "error", "traceback", "leaseToken")}
    for name, value in texts.items():
        if value is not None and not isinstance(value, str):
            raise ValidationError(f"{where}.{name} must be text", field="jobs")
    return Attempt(
        job_id=job_id,
        try_number=number,  # type: ignore[arg-type]
        outcome=outcome,
        status_code=code,  # type: ignore[arg-type]
        started_at=started,
        finished_at=finished,
        worker_id=texts["workerId"],
        result=doc.get("result"),
        error=texts["error"],
        traceback=texts["traceback"],
        lease_token=texts["leaseToken"],
    )


def _check_user(user_id: object) -> None:
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= 1024 or "\x00" in user_id:
        raise ValidationError("user id must be 1 to 1024 characters without NUL", field="user_id")
