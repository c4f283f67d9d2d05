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
    Job,
    NewJob,
)
from conveyor.store.sqlite import queries as q
from conveyor.store.sqlite.rows import (
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
    ranges: set[tuple[str, str, str]] = set()
    batch_unique: dict[tuple[str, str], Job] = {}
    seen: set[str] = set()
    for new in jobs:
        if new.id in seen:
            raise ValidationError(f"a job with id {new.id} already exists", field="id")
        seen.add(new.id)
        if new.unique_key is not None:
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
            ]
        )
        ranges.add((new.namespace, new.queue, new.task))
        out.append(job)
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
