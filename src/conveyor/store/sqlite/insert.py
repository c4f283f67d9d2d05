"""Inserting jobs: shared by enqueue (the writer thread) and enqueue_on_connection (the caller's connection)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, TypeVar

from conveyor.errors import (
    ValidationError,
)
from conveyor.model import (
    REPLACE_PAYLOAD,
    REPLACE_RUN_AT,
    Job,
    JobStatus,
    NewJob,
)
from conveyor.store.sqlite import queries as q
from conveyor.store.sqlite.rows import (
    clock_us,
    dumps,
    job_from_row,
    to_us,
)

__all__ = ["insert_jobs"]

log = logging.getLogger("conveyor.store.sqlite")

T = TypeVar("T")


# ---- inserting jobs: shared by enqueue and enqueue_on_connection ----------------------------------------------


def insert_jobs(
    conn: sqlite3.Connection,
    jobs: Sequence[NewJob],
    registered: frozenset[tuple[str, str, str]] | set[tuple[str, str, str]] = frozenset(),
) -> list[Job]:
    """Insert inside the connection's current transaction (the caller begins and commits). Applies the unique-key
    rule: an active job with the same (namespace, unique_key) — or an earlier job of this batch — wins and is
    returned with duplicate=True. Each job's (namespace, queue) is recorded in conveyor_queues and its
    (namespace, queue, task) in conveyor_queue_tasks for the claim, except those in `registered` (known committed:
    rows there are never deleted)."""
    out: list[Job] = []
    rows: list[list[Any]] = []
    places: list[int] = []  # rows[i] is out[places[i]]
    ranges: set[tuple[str, str, str]] = set()
    batch_unique: dict[tuple[str, str], Job] = {}
    batch_hash: dict[tuple[str, str], int] = {}  # (namespace, unique hash) -> its holder's place in rows / out
    seen: set[str] = set()
    for new in jobs:
        if new.id in seen:
            raise ValidationError(f"a job with id {new.id} already exists", field="id")
        seen.add(new.id)
        if new.unique_hash is not None:
            hkey = (new.namespace, new.unique_hash)
            place = batch_hash.get(hkey)
            if place is not None:  # an earlier job of this batch holds it (pending: replace applies to it)
                out.append(_replace_in_batch(rows[place], out, places[place], new))
                continue
            row = conn.execute(q.SELECT_UNIQUE_HOLDER, hkey).fetchone()
            if row is not None:
                out.append(_replace_stored(conn, job_from_row(row, duplicate=True), new))
                continue
            batch_hash[hkey] = len(rows)
            job = new.to_job()
        elif new.unique_key is not None:
            key = (new.namespace, new.unique_key)
            prior = batch_unique.get(key)
            if prior is not None:
                out.append(replace(prior, duplicate=True))
                continue
            row = conn.execute(q.SELECT_ACTIVE_BY_UNIQUE_KEY, key).fetchone()
            if row is not None:
                out.append(job_from_row(row, duplicate=True))
                continue
            job = new.to_job()
            batch_unique[key] = job
        else:
            job = new.to_job()
        rows.append(
            [
                new.id,
                new.namespace,
                new.queue,
                new.task,
                new.payload_json,
                new.priority,
                to_us(new.run_at),
                new.max_attempts,
                to_us(new.created),
                new.user_id,
                new.group_key,
                new.unique_key,
                new.concurrency_key,
                new.unique_hash,
                new.unique_states if new.unique_hash is not None else None,
            ]
        )
        ranges.add((new.namespace, new.queue, new.task))
        out.append(job)
        places.append(len(out) - 1)
    if rows:
        try:
            conn.execute(q.INSERT_JOBS, (dumps(rows),))
        except sqlite3.IntegrityError as exc:
            if "conveyor_jobs.id" in str(exc):
                raise ValidationError(
                    f"a job with one of these ids already exists: {', '.join(r[0] for r in rows)}", field="id"
                ) from None
            raise
        ranges.difference_update(registered)
        for ns, queue, task in sorted(ranges):
            conn.execute(q.REGISTER_QUEUE, (ns, queue))
            conn.execute(q.REGISTER_QUEUE_TASK, (queue, task, ns))
    return out


def _replace_in_batch(row: list[Any], out: list[Job], place: int, new: NewJob) -> Job:
    """A duplicate of an earlier job of the same batch: apply its `unique.replace` to that job's row and answer it."""
    held = out[place]
    if new.unique_replace & REPLACE_PAYLOAD:
        row[4] = new.payload_json
        held = out[place] = replace(held, payload=new.payload, payload_json=new.payload_json)
    if new.unique_replace & REPLACE_RUN_AT:
        row[6] = to_us(new.run_at)
        held = out[place] = replace(held, run_at=new.run_at)
    return replace(held, duplicate=True)


def _replace_stored(conn: sqlite3.Connection, holder: Job, new: NewJob) -> Job:
    """A duplicate of a stored job: apply its `unique.replace` when the holder is pending (in this transaction)."""
    if not new.unique_replace or holder.status is not JobStatus.PENDING:
        return holder
    payload = new.payload_json if new.unique_replace & REPLACE_PAYLOAD else None
    run_at = to_us(new.run_at) if new.unique_replace & REPLACE_RUN_AT else None
    row = conn.execute(q.REPLACE_PENDING, (holder.id, payload, run_at, clock_us())).fetchone()
    return holder if row is None else job_from_row(row, duplicate=True)
