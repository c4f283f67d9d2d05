"""One in-memory data set (what a `memory://NAME` URL names): the jobs, their attempts, and the indexes every
transition keeps in step (claim order per (namespace, queue, task), lanes, unique keys, counts), all under one lock."""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from conveyor.codec import copier
from conveyor.model import (
    REPLACE_PAYLOAD,
    REPLACE_RUN_AT,
    UNIQUE_STATE_BITS,
    Attempt,
    AttemptOutcome,
    Job,
    JobFilter,
    JobStatus,
    Lease,
    Namespace,
    NewJob,
    QueueSettings,
    WorkerInfo,
    not_applied,
    utcnow,
)
from conveyor.store.feed import EventFeed
from conveyor.store.wake import LocalWaker

__all__ = [
    "ClaimKey",
    "DataSet",
    "LaneKey",
    "LaneOrder",
    "QueueKey",
    "ReadyKey",
    "claim_key",
    "clone_job",
    "discard_from_set",
    "lane_key",
    "matches_filter",
    "remove_sorted",
]


QueueKey = tuple[str, str]  # (namespace, queue)
ReadyKey = tuple[str, str, str]  # (namespace, queue, task): one claim-ordered list of pending jobs each
LaneKey = tuple[str, str]  # (namespace, serial key)
ClaimKey = tuple[int, datetime, str]  # (priority, run_at, id): claim order
LaneOrder = tuple[int, str]  # (priority, id): FIFO order inside a lane

clone_job = copier(Job, overrides=("duplicate",), name="clone")
"""`clone_job(job, duplicate=False)`: the copy of a stored Job that a caller gets (stored Jobs change in place,
under the lock; what leaves the store never does)."""


def claim_key(job: Job) -> ClaimKey:
    return (job.priority, job.run_at, job.id)


def lane_key(job: Job) -> LaneKey | None:
    key = job.serial_key
    return None if key is None else (job.namespace, key)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_us(moment: datetime) -> int:
    """Microseconds since the epoch, exactly (the rate limiter's clock)."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


@dataclass(slots=True)
class DataSet:
    """One data set: what a `memory://NAME` URL names. Shared by every MemoryStore opened on that URL."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    waker: LocalWaker = field(default_factory=LocalWaker)
    jobs: dict[str, Job] = field(default_factory=dict)  # changed in place only by DataSet's methods, never handed out
    attempts: dict[str, dict[str, Attempt]] = field(default_factory=dict)  # job id -> lease token -> record
    # indexes, maintained only by index_job/unindex_job
    pending: dict[ReadyKey, list[ClaimKey]] = field(default_factory=dict)
    processing: dict[QueueKey, set[str]] = field(default_factory=dict)
    lane_pending: dict[LaneKey, list[LaneOrder]] = field(default_factory=dict)
    lane_processing: dict[LaneKey, set[str]] = field(default_factory=dict)
    unique: dict[tuple[str, str], str] = field(default_factory=dict)
    uniq: dict[tuple[str, str], str] = field(default_factory=dict)  # (ns, unique hash) -> the job holding it
    uniq_of: dict[str, tuple[str, int]] = field(default_factory=dict)  # job id -> (unique hash, state bits)
    key_processing: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (ns, queue, concurrency key)
    counts: Counter[tuple[str, str, str, JobStatus]] = field(default_factory=Counter)
    event_feeds: list[EventFeed] = field(default_factory=list)  # Store.subscribe_events of this data set
    # everything else
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    queue_settings: dict[QueueKey, QueueSettings] = field(default_factory=dict)
    rate_tat: dict[QueueKey, int] = field(default_factory=dict)  # rate limiter state (µs), kept across writes
    rate_key_tat: dict[QueueKey, dict[str, int]] = field(default_factory=dict)  # per rate key (rate_key queues)
    workers: dict[str, WorkerInfo] = field(default_factory=dict)
    kv: dict[str, tuple[str, float | None]] = field(default_factory=dict)  # key -> (value, monotonic expiry)
    leaders: dict[str, tuple[str, int, float]] = field(default_factory=dict)  # role -> (holder, term, expiry)
    terms: dict[str, int] = field(default_factory=dict)  # role -> last term given (outlives lapsed leases)
    schedules: dict[str, str] = field(default_factory=dict)  # runtime cron schedule name -> its document
    schedule_runs: dict[str, dict[int, str]] = field(default_factory=dict)  # name -> occurrence µs -> run doc

    # ---- index maintenance ------------------------------------------------------------------------------------

    def index_job(self, rec: Job) -> None:
        qk = (rec.namespace, rec.queue)
        lk = lane_key(rec)
        self.counts[(rec.namespace, rec.queue, rec.task, rec.status)] += 1
        if rec.status is JobStatus.PENDING:
            bisect.insort(self.pending.setdefault((rec.namespace, rec.queue, rec.task), []), claim_key(rec))
            if lk is not None:
                bisect.insort(self.lane_pending.setdefault(lk, []), (rec.priority, rec.id))
        elif rec.status is JobStatus.PROCESSING:
            self.processing.setdefault(qk, set()).add(rec.id)
            if lk is not None:
                self.lane_processing.setdefault(lk, set()).add(rec.id)
            if rec.concurrency_key is not None:
                self.key_processing[(rec.namespace, rec.queue, rec.concurrency_key)] += 1
        if rec.unique_key is not None and not rec.status.is_final:
            self.unique[(rec.namespace, rec.unique_key)] = rec.id
        if self.uniq_of:
            rule = self.uniq_of.get(rec.id)
            if rule is not None and UNIQUE_STATE_BITS[rec.status] & rule[1]:
                self.uniq.setdefault((rec.namespace, rule[0]), rec.id)

    def unindex_job(self, rec: Job) -> None:
        qk = (rec.namespace, rec.queue)
        lk = lane_key(rec)
        ck = (rec.namespace, rec.queue, rec.task, rec.status)
        self.counts[ck] -= 1
        if self.counts[ck] <= 0:
            del self.counts[ck]
        if rec.status is JobStatus.PENDING:
            remove_sorted(self.pending, (rec.namespace, rec.queue, rec.task), claim_key(rec))
            if lk is not None:
                remove_sorted(self.lane_pending, lk, (rec.priority, rec.id))
        elif rec.status is JobStatus.PROCESSING:
            discard_from_set(self.processing, qk, rec.id)
            if lk is not None:
                discard_from_set(self.lane_processing, lk, rec.id)
            if rec.concurrency_key is not None:
                kk = (rec.namespace, rec.queue, rec.concurrency_key)
                self.key_processing[kk] -= 1
                if self.key_processing[kk] <= 0:
                    del self.key_processing[kk]
        if rec.unique_key is not None and self.unique.get((rec.namespace, rec.unique_key)) == rec.id:
            del self.unique[(rec.namespace, rec.unique_key)]
        if self.uniq_of:
            rule = self.uniq_of.get(rec.id)
            if rule is not None and self.uniq.get((rec.namespace, rule[0])) == rec.id:
                del self.uniq[(rec.namespace, rule[0])]

    # ---- lanes ------------------------------------------------------------------------------------------------

    def lane_head(self, lk: LaneKey) -> Job | None:
        """The lane's pending job with the lowest (priority, id), due or not."""
        order = self.lane_pending.get(lk)
        return self.jobs[order[0][1]] if order else None

    def lane_busy(self, lk: LaneKey) -> bool:
        return bool(self.lane_processing.get(lk))

    # ---- transitions ------------------------------------------------------------------------------------------

    def start(self, rec: Job, worker_id: str, lease: timedelta, now: datetime, token: str) -> None:
        """pending → processing (a claim) under the fresh fencing token `token`."""
        self.unindex_job(rec)
        rec.status = JobStatus.PROCESSING
        rec.attempts += 1
        rec.try_number += 1
        rec.lease_token = token
        rec.started_at = now
        rec.worker_id = worker_id
        rec.lease_expires_at = now + lease
        rec.updated = now
        rec.cancel_requested = False
        self.index_job(rec)

    def delete(self, rec: Job) -> None:
        self.unindex_job(rec)
        del self.jobs[rec.id]
        self.attempts.pop(rec.id, None)
        self.uniq_of.pop(rec.id, None)

    def unique_holder(self, new: NewJob) -> Job | None:
        """The job whose unique hash `new` shares while in one of that job's states, if any (`unique=`)."""
        if new.unique_hash is None:
            return None
        holder = self.uniq.get((new.namespace, new.unique_hash))
        return None if holder is None else self.jobs[holder]

    def replace_pending(self, holder: Job, new: NewJob) -> None:
        """A duplicate's `unique.replace`: its payload and/or run_at written on a pending holder."""
        if holder.status is not JobStatus.PENDING or not new.unique_replace:
            return
        self.unindex_job(holder)
        if new.unique_replace & REPLACE_PAYLOAD:
            holder.payload, holder.payload_json = new.payload, new.payload_json
        if new.unique_replace & REPLACE_RUN_AT:
            holder.run_at = new.run_at
        holder.updated = utcnow()
        self.index_job(holder)

    def held(self, lease: Lease) -> Job | None:
        """The job when `lease` still holds it (fencing on the token), else None."""
        rec = self.jobs.get(lease.job_id)
        if rec is None or rec.status is not JobStatus.PROCESSING or rec.lease_token != lease.token:
            return None
        return rec

    def record(self, attempt: Attempt, token: str) -> None:
        """Store the attempt record of the claim `token` (one record per claim)."""
        if attempt.lease_token != token:  # workers fill it in already: no copy on the hot path
            attempt = replace(attempt, lease_token=token)
        self.attempts.setdefault(attempt.job_id, {})[token] = attempt

    def record_stale(self, attempt: Attempt, token: str) -> None:
        """A refused report's attempt: kept as LOST under its own claim, unless the job is gone or that claim
        already has a record other than a LOST one (a repeated report of a try that was applied)."""
        if attempt.job_id not in self.jobs:
            return
        old = self.attempts.get(attempt.job_id, {}).get(token)
        if old is None or old.outcome is AttemptOutcome.LOST:
            self.record(not_applied(attempt), token)

    def auto_run_off(self, namespace: str) -> bool:
        ns = self.namespaces.get(namespace)
        return ns is not None and not ns.auto_run

    def scheduled(self, now: datetime, namespace: str | None, queue: str | None, task: str | None) -> int:
        n = 0
        for (ns, q, t), keys in self.pending.items():
            if (namespace is not None and ns != namespace) or (queue is not None and q != queue):
                continue
            if task is not None and t != task:
                continue
            # keys are sorted by priority first, so every key must be looked at
            for _, run_at, _ in keys:
                if run_at > now:
                    n += 1
        return n


def remove_sorted(index: dict[Any, list[Any]], key: Any, item: Any) -> None:
    items = index[key]
    i = bisect.bisect_left(items, item)
    if i < len(items) and items[i] == item:
        del items[i]
    if not items:
        del index[key]


def discard_from_set(index: dict[Any, set[str]], key: Any, item: str) -> None:
    items = index.get(key)
    if items is not None:
        items.discard(item)
        if not items:
            del index[key]


def matches_filter(rec: Job, flt: JobFilter, ids: frozenset[str] | None) -> bool:
    return (
        (flt.namespace is None or rec.namespace == flt.namespace)
        and (flt.queue is None or rec.queue == flt.queue)
        and (flt.task is None or rec.task == flt.task)
        and (flt.status is None or rec.status == flt.status)
        and (flt.user_id is None or rec.user_id == flt.user_id)
        and (ids is None or rec.id in ids)
    )
