"""Rows → model values: the job and attempt decoders (generated from the model's field list, conveyor/codec.py), the
claim order, and how an enqueue's answer is put together from inserted ids and the holders of unique keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from conveyor.codec import STORED_ATTEMPT_FIELDS, STORED_JOB_FIELDS, row_decoder
from conveyor.model import Attempt, AttemptOutcome, Job, JobStatus, NewJob

__all__ = ["PAYLOAD_TEXT", "claim_order", "collect_existing", "collect_inserted", "decode_attempt", "decode_job"]

_STATUS = {s.value: s for s in JobStatus}
decode_job = row_decoder(Job, STORED_JOB_FIELDS, {"status": _STATUS}, name="decode_job")
"""A row of `{job_columns}` → Job (psycopg already gives datetimes, booleans and decoded JSON). Reads for callers
also select the payload's stored text after the job columns: pass it as `payload_json=row[PAYLOAD_TEXT]`."""
PAYLOAD_TEXT = len(STORED_JOB_FIELDS)
decode_attempt = row_decoder(Attempt, STORED_ATTEMPT_FIELDS, {"outcome": AttemptOutcome}, name="decode_attempt")


def claim_order(job: Job) -> tuple[int, datetime, str]:
    return (job.priority, job.run_at, job.id)


def collect_inserted(jobs: Sequence[NewJob], inserted: set[str], found: dict[str, Job]) -> list[NewJob]:
    """Record the inserted jobs; return the ones skipped because their unique key is held."""
    rest: list[NewJob] = []
    for j in jobs:
        if j.id in inserted:
            found[j.id] = j.to_job()
        else:
            rest.append(j)
    return rest


def collect_existing(jobs: Sequence[NewJob], rows: Sequence[Sequence[Any]], found: dict[str, Job]) -> list[NewJob]:
    """Answer skipped jobs with the active job holding their key; return those whose holder vanished meanwhile."""
    holders = {(job.namespace, job.unique_key): job for job in (decode_job(row, duplicate=True) for row in rows)}
    rest: list[NewJob] = []
    for j in jobs:
        holder = holders.get((j.namespace, j.unique_key or ""))
        if holder is None:
            rest.append(j)
        else:
            found[j.id] = holder
    return rest
