"""Conversions at the store's boundary: times as integer microseconds of this process's clock (exact, no float
rounding), rows and JSON aggregates → Job / Attempt (decoders generated from the model's field list), and the JSON
documents of workers and namespaces."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from conveyor.codec import STORED_ATTEMPT_FIELDS, STORED_JOB_FIELDS, field_index, row_decoder
from conveyor.model import (
    JSON,
    Attempt,
    AttemptOutcome,
    Job,
    JobFilter,
    JobStatus,
    Namespace,
)

__all__ = [
    "CONCURRENCY_KEY_AT",
    "EPOCH",
    "GROUP_KEY_AT",
    "ONE_US",
    "OUTCOME",
    "PAYLOAD_AT",
    "STATUS",
    "USER_ID_AT",
    "attempt_params",
    "claim_order",
    "clock_us",
    "decode_attempt",
    "decode_job",
    "dumps",
    "filter_params",
    "from_us",
    "job_from_row",
    "jobs_from_aggregate",
    "namespace_doc",
    "namespace_from_doc",
    "rate_key_path",
    "seconds_us",
    "started_job",
    "to_us",
    "to_us_or_none",
]

log = logging.getLogger("conveyor.store.sqlite")

T = TypeVar("T")


# ---- conversions at the boundary --------------------------------------------------------------------------------

STATUS = {s.value: s for s in JobStatus}
OUTCOME = {o.value: o for o in AttemptOutcome}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)


def clock_us() -> int:
    """This process's clock in integer microseconds (the store's clock)."""
    return time.time_ns() // 1000


# Below this (year 2191) a float of seconds is within half a microsecond of the truth, so fromtimestamp (twice as
# fast as datetime arithmetic) rounds back to the exact microsecond; beyond it we do exact integer arithmetic.
_FAST_US_LIMIT = 7_000_000_000_000_000
_fromtimestamp = datetime.fromtimestamp


def from_us(us: int) -> datetime:
    if -_FAST_US_LIMIT < us < _FAST_US_LIMIT:
        return _fromtimestamp(us / 1_000_000, UTC)
    return EPOCH + timedelta(microseconds=us)


def to_us(value: datetime) -> int:
    return (value - EPOCH) // ONE_US


def to_us_or_none(value: datetime | None) -> int | None:
    return None if value is None else (value - EPOCH) // ONE_US


def seconds_us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def dumps(value: JSON) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


decode_job = row_decoder(Job, STORED_JOB_FIELDS, {"status": STATUS, "time": from_us, "bool": bool}, name="decode_job")
"""A decoded q.JOB_JSON array → Job (payload and result arrive already decoded)."""

# Where q.JOB_JSON puts the fields that a claim changes (`started_job`).
_STATUS_AT, _ATTEMPTS_AT, _TRY_AT, _UPDATED_AT, _STARTED_AT, _EXPIRES_AT, _WORKER_AT, _CANCEL_AT, _TOKEN_AT = (
    field_index(STORED_JOB_FIELDS, name)
    for name in (
        "status",
        "attempts",
        "try_number",
        "updated",
        "started_at",
        "lease_expires_at",
        "worker_id",
        "cancel_requested",
        "lease_token",
    )
)
CONCURRENCY_KEY_AT = field_index(STORED_JOB_FIELDS, "concurrency_key")
"""Where a claim candidate row (STORED_JOB_FIELDS order) holds the job's concurrency key."""
USER_ID_AT, GROUP_KEY_AT, PAYLOAD_AT = (field_index(STORED_JOB_FIELDS, n) for n in ("user_id", "group_key", "payload"))
"""Where it holds what a rate key may name (model.rate_key_value)."""


def rate_key_path(rate_key: str) -> str | None:
    """The JSON path of a `payload.<field>` rate key (q.RATE_KEY_OF's ?P), None for a job column."""
    return "$." + rate_key[8:] if rate_key.startswith("payload.") else None


def started_job(r: list[Any], now: int, worker_id: str, expires: int, token: str) -> Job:
    """A candidate as q.CLAIM leaves it (the same changes, applied in Python instead of read back)."""
    r[_STATUS_AT] = "processing"
    r[_ATTEMPTS_AT] += 1
    r[_TRY_AT] += 1
    r[_UPDATED_AT] = r[_STARTED_AT] = now
    r[_EXPIRES_AT] = expires
    r[_WORKER_AT] = worker_id
    r[_CANCEL_AT] = 0
    r[_TOKEN_AT] = token
    return decode_job(r)


def job_from_row(row: Sequence[Any], duplicate: bool = False) -> Job:
    """A fetched row whose first column is q.JOB_JSON → Job; a second column is the payload's stored text."""
    return decode_job(json.loads(row[0]), duplicate=duplicate, payload_json=row[1] if len(row) > 1 else None)


def jobs_from_aggregate(row: Sequence[Any] | None) -> list[Job]:
    """A fetched json_group_array(q.JOB_JSON) → Jobs."""
    if row is None or row[0] is None:
        return []
    return [decode_job(r) for r in json.loads(row[0])]


def claim_order(job: Job) -> tuple[int, datetime, str]:
    return (job.priority, job.run_at, job.id)


decode_attempt = row_decoder(
    Attempt,
    STORED_ATTEMPT_FIELDS,
    {"outcome": OUTCOME, "time": from_us, "json": json.loads},
    name="decode_attempt",
)
"""A row of q.SELECT_ATTEMPTS → Attempt (the result is JSON text)."""


def attempt_params(a: Attempt, token: str) -> tuple[Any, ...]:
    """A record for INSERT_ATTEMPTS, stored under the claim's token."""
    return (
        a.job_id,
        a.try_number,
        a.outcome.value,
        a.status_code,
        to_us(a.started_at),
        to_us(a.finished_at),
        a.worker_id,
        None if a.result is None else dumps(a.result),
        a.error,
        a.traceback,
        token,
    )


def namespace_doc(ns: Namespace) -> str:
    return json.dumps(ns.to_dict(), ensure_ascii=False)


def namespace_from_doc(doc: str) -> Namespace:
    return Namespace.from_dict(json.loads(doc))


def filter_params(flt: JobFilter) -> tuple[list[str], dict[str, Any]]:
    names: list[str] = []
    params: dict[str, Any] = {}
    for name in ("namespace", "queue", "task", "user_id"):
        value = getattr(flt, name)
        if value is not None:
            names.append(name)
            params[name] = value
    if flt.status is not None:
        names.append("status")
        params["status"] = JobStatus(flt.status).value
    if flt.ids is not None:
        names.append("ids")
        params["ids"] = json.dumps(list(flt.ids))
    return names, params
