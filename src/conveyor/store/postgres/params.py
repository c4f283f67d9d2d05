"""Parameter builders: each statement of queries.py takes its batch as one JSON array (unnested server-side), so a
call of any size is one round trip; these build those arrays and the claim's ranges."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from conveyor.errors import ValidationError
from conveyor.model import REPLACE_PAYLOAD, REPLACE_RUN_AT, AttemptOutcome, Finish, JobStatus, NewJob, not_applied

__all__ = [
    "arms_params",
    "claim_params",
    "dumps",
    "enqueue_params",
    "existing_params",
    "finish_params",
    "stale_batch",
]


def claim_params(
    worker_id: str,
    queues: Sequence[str],
    limit: int,
    lease: timedelta,
    tasks: Sequence[str] | None,
    namespaces: Sequence[str] | None,
    exclude_namespaces: Sequence[str],
    synchronous_commit: str | None,
) -> dict[str, Any]:
    """CLAIM's parameters, for `claim` and for the hand-off's claim alike (`synchronous_commit` None: the
    session's own setting, so that a claim committing with an enqueue keeps the enqueue durable)."""
    return {
        "worker_id": worker_id,
        **arms_params(queues, tasks),
        "limit": limit,
        "lease": lease,
        "namespaces": None if namespaces is None else list(namespaces),
        "exclude": list(exclude_namespaces),
        "synchronous_commit": synchronous_commit,
    }


def arms_params(queues: Sequence[str], tasks: Sequence[str] | None) -> dict[str, Any]:
    """The claim's ranges (queries._ARMS): the wanted queues, the served tasks (None: any), and their product as two
    parallel arrays (queue × task)."""
    wanted = list(dict.fromkeys(queues))
    served = None if tasks is None else list(dict.fromkeys(tasks))
    pairs = [] if served is None else [(q, t) for q in wanted for t in served]
    return {
        "queues": wanted,
        "tasks": served,
        "arm_queues": [q for q, _ in pairs],
        "arm_tasks": [t for _, t in pairs],
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)  # like encode_result: a handler's odd return value is kept as its text


def dumps(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default)
    except ValueError as exc:
        raise ValidationError(f"value is not valid JSON: {exc}") from None


def enqueue_params(jobs: Sequence[NewJob]) -> dict[str, Any]:
    """One JSON array of job records; each payload is spliced in as the JSON text it was validated to."""
    return _batch(jobs, unique=False)


def enqueue_unique_params(jobs: Sequence[NewJob]) -> dict[str, Any]:
    """ENQUEUE_UNIQUE's batch: enqueue_params' records with the unique hash and states."""
    return _batch(jobs, unique=True)


def _batch(jobs: Sequence[NewJob], *, unique: bool) -> dict[str, Any]:
    """The records ENQUEUE and ENQUEUE_UNIQUE read with json_to_recordset (each reads the keys it names)."""
    records = []
    for ord_, j in enumerate(jobs, 1):
        fields: dict[str, Any] = {
            "ord": ord_,
            "id": j.id,
            "namespace": j.namespace,
            "queue": j.queue,
            "task": j.task,
            "priority": j.priority,
            "run_at": j.run_at.isoformat(),
            "max_attempts": j.max_attempts,
            "created": j.created.isoformat(),
            "user_id": j.user_id,
            "group_key": j.group_key,
            "unique_key": j.unique_key,
            "serial_key": j.serial_key,
            "concurrency_key": j.concurrency_key,
        }
        if unique:
            fields["unique_hash"] = j.unique_hash
            fields["unique_states"] = j.unique_states
        records.append(dumps(fields)[:-1] + ',"payload":' + j.payload_json + "}")
    return {"batch": "[" + ",".join(records) + "]"}


def unique_existing_params(jobs: Sequence[NewJob]) -> dict[str, Any]:
    return {"namespaces": [j.namespace for j in jobs], "hashes": [j.unique_hash for j in jobs]}


def replace_params(holder_id: str, new: NewJob) -> dict[str, Any]:
    """REPLACE_PENDING's values: what `unique.replace` takes from the duplicate (None keeps the holder's)."""
    return {
        "id": holder_id,
        "payload": new.payload_json if new.unique_replace & REPLACE_PAYLOAD else None,
        "run_at": new.run_at if new.unique_replace & REPLACE_RUN_AT else None,
    }


def existing_params(jobs: Sequence[NewJob]) -> dict[str, Any]:
    return {"namespaces": [j.namespace for j in jobs], "unique_keys": [j.unique_key for j in jobs]}


def finish_params(finishes: Sequence[Finish], synchronous_commit: str) -> dict[str, Any]:
    records: list[dict[str, Any]] = []
    for ord_, f in enumerate(finishes, 1):
        if f.status is JobStatus.PROCESSING or ((f.release or f.snooze) and f.status is not JobStatus.PENDING):
            raise ValidationError(
                f"a Finish must move the job to pending, completed, failed or cancelled (release: pending), "
                f"got {f.status.value!r}",
                field="status",
            )
        record: dict[str, Any] = {
            "ord": ord_,
            "id": f.lease.job_id,
            "token": f.lease.token,
            "status": f.status.value,
            "run_at": f.run_at,
            "error": f.error,
            "release": f.release,
            "snooze": f.snooze,
        }
        if f.result is not None:  # absent → SQL NULL (a JSON null would be stored as the json value 'null')
            record["result"] = f.result
        a = f.attempt
        if a is not None and not f.release:
            record.update(
                a_try_number=a.try_number,
                a_outcome=AttemptOutcome(a.outcome).value,
                a_status_code=a.status_code,
                a_started=a.started_at,
                a_finished=a.finished_at,
                a_worker_id=a.worker_id,
                a_error=a.error,
                a_traceback=a.traceback,
            )
            if a.result is not None:
                record["a_result"] = a.result
        records.append(record)
    return {"batch": dumps(records), "synchronous_commit": synchronous_commit}


def stale_batch(finishes: Sequence[Finish]) -> str:
    """RECORD_STALE's batch: the refused reports' attempts as the LOST records they are kept as."""
    records: list[dict[str, Any]] = []
    for ord_, f in enumerate(finishes, 1):
        assert f.attempt is not None
        a = not_applied(f.attempt)
        record: dict[str, Any] = {
            "ord": ord_,
            "id": f.lease.job_id,
            "token": f.lease.token,
            "a_try_number": a.try_number,
            "a_outcome": AttemptOutcome(a.outcome).value,
            "a_status_code": a.status_code,
            "a_started": a.started_at,
            "a_finished": a.finished_at,
            "a_worker_id": a.worker_id,
            "a_error": a.error,
            "a_traceback": a.traceback,
        }
        if a.result is not None:
            record["a_result"] = a.result
        records.append(record)
    return dumps(records)
