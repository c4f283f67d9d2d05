"""The in-memory store: the reference implementation of the Store contract (store/base.py).

It backs application tests and `conveyor.testing`, and every other store is checked against the same conformance
suite, so it aims to be obviously correct first and reasonably fast second:

* Jobs live as `Job` objects that only this module changes, in place, under the lock; callers get copies
  (`_clone`, generated from the Job's field list by conveyor.codec), so a new Job field needs nothing here.
* Small indexes (pending jobs per (namespace, queue, task) in claim order — per task so that a claim skips the
  jobs of tasks it does not serve without walking them —, lanes, processing sets, unique keys, status counts) are
  kept in step by the only two functions that touch them, `_index` and `_unindex`: every change un-indexes a
  record, mutates it, and indexes it again. No method awaits in the middle of a change, and a `threading.Lock`
  guards each data set, so every state change is atomic even when several event loops (threads) share one
  named store.
* `memory://NAME` URLs share one data set per NAME within the process (a class-level registry, dropped with
  `MemoryStore.forget(url)`); `memory://` alone is private to its store object.

Readings of the contract where base.py is silent (the conformance suite does not pin these, so other stores may
differ; they are written down here so that the choice is deliberate):

* A lane's head is chosen across all of the lane's queues, as base.py says; so a head in a queue that this claim
  does not serve, or in a paused queue, holds the lane back.
* `claim_user` ignores queue pauses (base.py) and queue concurrency caps (Run executes in the caller's process).
* `rescue(now=…)` uses that `now` for everything: the expiry test, the attempt's finished_at and the new run_at.
* A Finish to pending without `run_at` (not a release) retries at once (run_at = now). A release keeps
  `last_error` unless the Finish carries an error; started_at is kept until the next claim.
* Requeue of a job whose unique key is now held by another active job raises InvalidTransition (two active jobs
  never share a key).
* `put_namespace` on replace keeps the stored `created`; on create it stores the given revision.
* Queue concurrency 0 means nothing is claimed from that queue; a negative limit is a ValidationError.
"""

from __future__ import annotations

import bisect
import heapq
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from conveyor.codec import copier
from conveyor.errors import (
    Conflict,
    InvalidTransition,
    JobNotFound,
    NamespaceExists,
    NamespaceNotFound,
    RevisionConflict,
    ValidationError,
)
from conveyor.model import (
    DEFAULT_NAMESPACE,
    DEFAULT_NAMESPACE_SETTINGS,
    LOST_STATUS_CODE,
    Attempt,
    AttemptOutcome,
    Finish,
    Job,
    JobFilter,
    JobStatus,
    Leadership,
    Lease,
    LeaseState,
    Namespace,
    NewJob,
    Page,
    QueueInfo,
    QueueSettings,
    Stats,
    WorkerInfo,
    attempt_order,
    new_lease_tokens,
    not_applied,
    utcnow,
)
from conveyor.store.base import IdleClaim, Store, refuse_default
from conveyor.store.handoff import IdleClaims, covers, hand_over
from conveyor.store.urls import take_options
from conveyor.store.wake import LocalWaker

__all__ = ["MemoryStore"]

_QueueKey = tuple[str, str]  # (namespace, queue)
_ReadyKey = tuple[str, str, str]  # (namespace, queue, task): one claim-ordered list of pending jobs each
_LaneKey = tuple[str, str]  # (namespace, serial key)
_ClaimKey = tuple[int, datetime, str]  # (priority, run_at, id): claim order
_LaneOrder = tuple[int, str]  # (priority, id): FIFO order inside a lane

CONFLICT_MESSAGE = "Job queue execution conflict. Retry required."


_clone = copier(Job, overrides=("duplicate",), name="clone")
"""`_clone(job, duplicate=False)`: the copy of a stored Job that a caller gets (stored Jobs change in place, under the
lock; what leaves the store never does)."""


def _claim_key(job: Job) -> _ClaimKey:
    return (job.priority, job.run_at, job.id)


def _lane_key(job: Job) -> _LaneKey | None:
    key = job.serial_key
    return None if key is None else (job.namespace, key)


@dataclass(slots=True)
class _Data:
    """One data set: what a `memory://NAME` URL names. Shared by every MemoryStore opened on that URL."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    waker: LocalWaker = field(default_factory=LocalWaker)
    jobs: dict[str, Job] = field(default_factory=dict)  # changed in place only by _Data's methods, never handed out
    attempts: dict[str, dict[str, Attempt]] = field(default_factory=dict)  # job id -> lease token -> record
    # indexes, maintained only by _index/_unindex
    pending: dict[_ReadyKey, list[_ClaimKey]] = field(default_factory=dict)
    processing: dict[_QueueKey, set[str]] = field(default_factory=dict)
    lane_pending: dict[_LaneKey, list[_LaneOrder]] = field(default_factory=dict)
    lane_processing: dict[_LaneKey, set[str]] = field(default_factory=dict)
    unique: dict[tuple[str, str], str] = field(default_factory=dict)
    counts: Counter[tuple[str, str, str, JobStatus]] = field(default_factory=Counter)
    # everything else
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    queue_settings: dict[_QueueKey, QueueSettings] = field(default_factory=dict)
    workers: dict[str, WorkerInfo] = field(default_factory=dict)
    kv: dict[str, tuple[str, float | None]] = field(default_factory=dict)  # key -> (value, monotonic expiry)
    leaders: dict[str, tuple[str, int, float]] = field(default_factory=dict)  # role -> (holder, term, expiry)
    terms: dict[str, int] = field(default_factory=dict)  # role -> last term given (outlives lapsed leases)

    # ---- index maintenance ------------------------------------------------------------------------------------

    def _index(self, rec: Job) -> None:
        qk = (rec.namespace, rec.queue)
        lk = _lane_key(rec)
        self.counts[(rec.namespace, rec.queue, rec.task, rec.status)] += 1
        if rec.status is JobStatus.PENDING:
            bisect.insort(self.pending.setdefault((rec.namespace, rec.queue, rec.task), []), _claim_key(rec))
            if lk is not None:
                bisect.insort(self.lane_pending.setdefault(lk, []), (rec.priority, rec.id))
        elif rec.status is JobStatus.PROCESSING:
            self.processing.setdefault(qk, set()).add(rec.id)
            if lk is not None:
                self.lane_processing.setdefault(lk, set()).add(rec.id)
        if rec.unique_key is not None and not rec.status.is_final:
            self.unique[(rec.namespace, rec.unique_key)] = rec.id

    def _unindex(self, rec: Job) -> None:
        qk = (rec.namespace, rec.queue)
        lk = _lane_key(rec)
        ck = (rec.namespace, rec.queue, rec.task, rec.status)
        self.counts[ck] -= 1
        if self.counts[ck] <= 0:
            del self.counts[ck]
        if rec.status is JobStatus.PENDING:
            _remove_sorted(self.pending, (rec.namespace, rec.queue, rec.task), _claim_key(rec))
            if lk is not None:
                _remove_sorted(self.lane_pending, lk, (rec.priority, rec.id))
        elif rec.status is JobStatus.PROCESSING:
            _discard_set(self.processing, qk, rec.id)
            if lk is not None:
                _discard_set(self.lane_processing, lk, rec.id)
        if rec.unique_key is not None and self.unique.get((rec.namespace, rec.unique_key)) == rec.id:
            del self.unique[(rec.namespace, rec.unique_key)]

    # ---- lanes ------------------------------------------------------------------------------------------------

    def lane_head(self, lk: _LaneKey) -> Job | None:
        """The lane's pending job with the lowest (priority, id), due or not."""
        order = self.lane_pending.get(lk)
        return self.jobs[order[0][1]] if order else None

    def lane_busy(self, lk: _LaneKey) -> bool:
        return bool(self.lane_processing.get(lk))

    # ---- transitions ------------------------------------------------------------------------------------------

    def start(self, rec: Job, worker_id: str, lease: timedelta, now: datetime, token: str) -> None:
        """pending → processing (a claim) under the fresh fencing token `token`."""
        self._unindex(rec)
        rec.status = JobStatus.PROCESSING
        rec.attempts += 1
        rec.try_number += 1
        rec.lease_token = token
        rec.started_at = now
        rec.worker_id = worker_id
        rec.lease_expires_at = now + lease
        rec.updated = now
        rec.cancel_requested = False
        self._index(rec)

    def delete(self, rec: Job) -> None:
        self._unindex(rec)
        del self.jobs[rec.id]
        self.attempts.pop(rec.id, None)

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


def _remove_sorted(index: dict[Any, list[Any]], key: Any, item: Any) -> None:
    items = index[key]
    i = bisect.bisect_left(items, item)
    if i < len(items) and items[i] == item:
        del items[i]
    if not items:
        del index[key]


def _discard_set(index: dict[Any, set[str]], key: Any, item: str) -> None:
    items = index.get(key)
    if items is not None:
        items.discard(item)
        if not items:
            del index[key]


def _matches(rec: Job, flt: JobFilter, ids: frozenset[str] | None) -> bool:
    return (
        (flt.namespace is None or rec.namespace == flt.namespace)
        and (flt.queue is None or rec.queue == flt.queue)
        and (flt.task is None or rec.task == flt.task)
        and (flt.status is None or rec.status == flt.status)
        and (flt.user_id is None or rec.user_id == flt.user_id)
        and (ids is None or rec.id in ids)
    )


class MemoryStore(Store):
    """Jobs in process memory. `memory://NAME` shares one data set per NAME in this process; `memory://` is
    private. Nothing survives the process, and other processes cannot see it."""

    scheme = "memory"
    supports_transactions = False
    supports_handoff = True
    supports_processes = False

    _registry: ClassVar[dict[str, _Data]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, url: str = "memory://", *, lazy: bool = False, **options: Any) -> None:
        self.url = url
        self.lazy = lazy
        # The memory store has no options: one given (in the URL or as a keyword) is a mistake, refused by name.
        take_options("memory", parse_qsl(url.partition("?")[2], keep_blank_values=True), {})
        take_options("memory", options, {})
        self.options = options
        name = self._name(url)
        if name is None:
            self._data = _Data()
        else:
            with self._registry_lock:
                self._data = self._registry.setdefault(name, _Data())
        self._idle = IdleClaims()  # this store object's waiting workers (hand-off; never shared through NAME)

    @staticmethod
    def _name(url: str) -> str | None:
        scheme, _, rest = url.partition(":")
        if scheme.lower() != "memory":
            raise ValidationError(f"MemoryStore needs a memory:// URL, got {url!r}", field="url")
        name = rest.removeprefix("//").split("?", 1)[0].strip("/")
        return name or None

    @classmethod
    def forget(cls, url: str) -> None:
        """Drop the data set a `memory://NAME` URL names (tests call this to clean up). Stores already open on
        it keep their (now private) data."""
        name = cls._name(url)
        if name is not None:
            with cls._registry_lock:
                cls._registry.pop(name, None)

    # ---- lifecycle ------------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Wake every waiter so that idle workers notice the shutdown; the data stays for other openers."""
        self._data.waker.notify()

    async def migrate(self) -> list[str]:
        return []

    @classmethod
    def isolated_url(cls, base_url: str, label: str, workdir: Path) -> str:
        """`memory://<label>`: a data set of its own, shared by the stores of this process opened on that URL."""
        return f"memory://{label}"

    async def drop(self, *, allow_default: bool = False) -> None:
        """Forget the data set (`memory://NAME`'s registry entry, or this store's private one)."""
        name = self._name(self.url)
        refuse_default("the memory data set", name or "", allow_default)
        self.forget(self.url)
        old, self._data = self._data, _Data()
        old.waker.notify()

    # ---- enqueue --------------------------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        d = self._data
        out: list[Job] = []
        with d.lock:
            seen: set[str] = set()
            for new in jobs:  # validate everything first: all or nothing
                if new.id in d.jobs or new.id in seen:
                    raise ValidationError(f"a job with id {new.id} already exists", field="id")
                seen.add(new.id)
            batch_unique: dict[tuple[str, str], Job] = {}
            for new in jobs:
                if new.unique_key is not None:
                    uk = (new.namespace, new.unique_key)
                    existing_id = d.unique.get(uk)
                    if existing_id is not None:
                        out.append(_clone(d.jobs[existing_id], duplicate=True))
                        continue
                    if uk in batch_unique:  # first of equal keys in one batch wins
                        out.append(_clone(batch_unique[uk], duplicate=True))
                        continue
                rec = new.to_job()
                if new.unique_key is not None:
                    batch_unique[(new.namespace, new.unique_key)] = rec
                d.jobs[rec.id] = rec
                d._index(rec)
                out.append(_clone(rec))
            stored = any(not job.duplicate for job in out)
            idle = self._idle.take(jobs) if stored else None
            handed = (
                []
                if idle is None
                else self._claim_locked(
                    idle.worker_id,
                    idle.queues,
                    idle.limit,
                    idle.lease,
                    idle.tasks,
                    idle.namespaces,
                    idle.exclude_namespaces,
                )
            )
        if idle is not None and not hand_over(idle, handed):
            await self.finish([Finish(j.lease, JobStatus.PENDING, release=True) for j in handed])
        # As on the other stores: after a hand-off that took less than it could, for a worker serving every job's
        # queue and namespace, nothing is left that another waiter could claim.
        took_all = idle is not None and len(handed) < idle.limit and covers(idle, jobs)
        if stored and (not took_all or _any_later(out)):  # jobs for later: waiters re-read next_due
            d.waker.notify()
        return out

    # ---- the worker's calls ---------------------------------------------------------------------------------

    async def claim(
        self,
        worker_id: str,
        queues: Sequence[str],
        limit: int,
        lease: timedelta,
        *,
        tasks: Sequence[str] | None = None,
        namespaces: Sequence[str] | None = None,
        exclude_namespaces: Sequence[str] = (),
    ) -> list[Job]:
        if limit <= 0 or not queues:
            return []
        with self._data.lock:
            return self._claim_locked(worker_id, queues, limit, lease, tasks, namespaces, exclude_namespaces)

    def offer_idle(self, claim: IdleClaim) -> None:
        self._idle.offer(claim)

    def withdraw_idle(self, claim: IdleClaim) -> None:
        self._idle.withdraw(claim)

    def _claim_locked(
        self,
        worker_id: str,
        queues: Sequence[str],
        limit: int,
        lease: timedelta,
        tasks: Sequence[str] | None,
        namespaces: Sequence[str] | None,
        exclude_namespaces: Sequence[str],
    ) -> list[Job]:
        """`claim` with the data set's lock held (enqueue claims for an idle worker in the same locked step)."""
        d = self._data
        wanted_queues = set(queues)
        wanted_tasks = None if tasks is None else set(tasks)
        wanted_ns = None if namespaces is None else set(namespaces)
        excluded = set(exclude_namespaces)
        now = utcnow()
        sources: list[list[_ClaimKey]] = []
        room: dict[_QueueKey, int | None] = {}  # how many more a queue may start (None = unlimited)
        for (ns, q, task), keys in d.pending.items():
            if q not in wanted_queues or ns in excluded or (wanted_ns is not None and ns not in wanted_ns):
                continue
            if (wanted_tasks is not None and task not in wanted_tasks) or d.auto_run_off(ns):
                continue
            qk = (ns, q)
            if qk not in room:
                settings = d.queue_settings.get(qk)
                if settings is not None and settings.paused:
                    continue
                cap = None if settings is None else settings.concurrency
                if cap is not None:
                    cap -= len(d.processing.get(qk, ()))
                    if cap <= 0:
                        continue
                room[qk] = cap
            sources.append(keys)
        if not sources:
            return []
        lanes_taken: set[_LaneKey] = set()
        chosen: list[Job] = []
        # Choose first, start afterwards: starting changes the indexes that the merge is walking.
        for _, run_at, job_id in heapq.merge(*sources):
            if run_at > now:
                continue
            rec = d.jobs[job_id]
            qk = (rec.namespace, rec.queue)
            free = room[qk]
            if free is not None and free <= 0:
                continue
            lk = _lane_key(rec)
            if lk is not None:
                if lk in lanes_taken or d.lane_busy(lk) or d.lane_head(lk) is not rec:
                    continue
                lanes_taken.add(lk)
            if free is not None:
                room[qk] = free - 1
            chosen.append(rec)
            if len(chosen) >= limit:
                break
        for rec, token in zip(chosen, new_lease_tokens(len(chosen)), strict=True):
            d.start(rec, worker_id, lease, now, token)
        return [_clone(rec) for rec in chosen]

    async def claim_user(self, namespace: str, user_id: str, worker_id: str, lease: timedelta) -> Job | None:
        d = self._data
        lk = (namespace, f"u:{user_id}")
        with d.lock:
            if d.lane_busy(lk):
                raise Conflict(CONFLICT_MESSAGE)
            head = d.lane_head(lk)
            now = utcnow()
            if head is None or head.run_at > now:
                return None
            d.start(head, worker_id, lease, now, new_lease_tokens(1)[0])
            return _clone(head)

    async def heartbeat(self, leases: Sequence[Lease], lease: timedelta) -> list[LeaseState]:
        d = self._data
        out: list[LeaseState] = []
        with d.lock:
            now = utcnow()
            for held_lease in leases:
                rec = d.held(held_lease)
                if rec is None:
                    out.append(LeaseState(held_lease, held=False))
                    continue
                rec.lease_expires_at = now + lease  # not indexed: no re-index needed
                rec.updated = now
                out.append(LeaseState(held_lease, held=True, cancel_requested=rec.cancel_requested))
        return out

    async def finish(self, finishes: Sequence[Finish]) -> list[bool]:
        for f in finishes:
            if f.status is JobStatus.PROCESSING or (f.release and f.status is not JobStatus.PENDING):
                raise ValidationError(
                    f"a Finish must move the job to pending, completed, failed or cancelled (release: pending), "
                    f"got {f.status.value!r}",
                    field="status",
                )
        d = self._data
        out: list[bool] = []
        woke = False
        with d.lock:
            now = utcnow()
            for f in finishes:
                rec = d.held(f.lease)
                if rec is None:
                    if f.attempt is not None and not f.release:
                        d.record_stale(f.attempt, f.lease.token)
                    out.append(False)
                    continue
                d._unindex(rec)
                rec.status = f.status
                rec.updated = now
                rec.lease_expires_at = None
                rec.worker_id = None
                rec.lease_token = None
                if f.release:
                    rec.attempts = max(0, rec.attempts - 1)
                    rec.try_number = max(0, rec.try_number - 1)
                    if f.run_at is not None:
                        rec.run_at = f.run_at
                    if f.error is not None:
                        rec.last_error = f.error
                    woke = True
                else:
                    rec.last_error = None if f.status is JobStatus.COMPLETED else f.error
                    if f.status is JobStatus.COMPLETED:
                        rec.result = f.result
                    if f.status is JobStatus.PENDING:
                        rec.run_at = f.run_at if f.run_at is not None else now
                        rec.cancel_requested = False
                        woke = woke or rec.run_at <= now
                    if f.attempt is not None:
                        d.record(f.attempt, f.lease.token)
                rec.finished_at = now if rec.status.is_final else None
                d._index(rec)
                out.append(True)
        if woke:
            d.waker.notify()
        return out

    async def wait_for_jobs(self, timeout: float) -> None:
        await self._data.waker.wait(max(0.0, timeout))

    async def next_due(
        self,
        queues: Sequence[str],
        *,
        tasks: Sequence[str] | None = None,
        namespaces: Sequence[str] | None = None,
        exclude_namespaces: Sequence[str] = (),
    ) -> float | None:
        d = self._data
        wanted_queues = set(queues)
        wanted_tasks = None if tasks is None else set(tasks)
        wanted_ns = None if namespaces is None else set(namespaces)
        excluded = set(exclude_namespaces)
        with d.lock:
            now = utcnow()
            best: datetime | None = None
            for (ns, q, task), keys in d.pending.items():
                if q not in wanted_queues or ns in excluded or (wanted_ns is not None and ns not in wanted_ns):
                    continue
                if (wanted_tasks is not None and task not in wanted_tasks) or d.auto_run_off(ns):
                    continue
                qk = (ns, q)
                settings = d.queue_settings.get(qk)
                if settings is not None and (
                    settings.paused
                    or (settings.concurrency is not None and settings.concurrency <= len(d.processing.get(qk, ())))
                ):
                    continue
                # keys are in (priority, run_at, id) order: each priority's first claimable key is its earliest
                i = 0
                while i < len(keys):
                    end = bisect.bisect_left(keys, (keys[i][0] + 1,), lo=i)
                    for _, run_at, job_id in keys[i:end]:
                        if best is not None and run_at >= best:
                            break
                        lk = _lane_key(d.jobs[job_id])
                        if lk is None or (not d.lane_busy(lk) and d.lane_head(lk) is d.jobs[job_id]):
                            best = run_at
                            break
                    i = end
        return None if best is None else (best - now).total_seconds()

    async def mark_timed_out(self, lease: Lease) -> bool:
        d = self._data
        with d.lock:
            rec = d.held(lease)
            if rec is None:
                return False
            rec.timed_out_at = utcnow()  # not indexed
            return True

    # ---- maintenance ----------------------------------------------------------------------------------------

    async def rescue(self, now: datetime | None = None, limit: int = 1000) -> list[Job]:
        d = self._data
        out: list[Job] = []
        with d.lock:
            now = now or utcnow()
            expired = [
                rec
                for ids in d.processing.values()
                for rec in (d.jobs[i] for i in ids)
                if rec.lease_expires_at is not None and rec.lease_expires_at <= now
            ]
            expired.sort(key=lambda r: (r.lease_expires_at or now, r.id))
            for rec in expired[: max(0, limit)]:
                error = f"lease expired: worker {rec.worker_id} stopped heartbeating"
                d.record(
                    Attempt(
                        job_id=rec.id,
                        try_number=rec.try_number,
                        outcome=AttemptOutcome.LOST,
                        status_code=LOST_STATUS_CODE,
                        started_at=rec.started_at or now,
                        finished_at=now,
                        worker_id=rec.worker_id,
                        error=error,
                    ),
                    rec.lease_token or "",
                )
                d._unindex(rec)
                rec.lease_expires_at = None
                rec.worker_id = None
                rec.lease_token = None
                rec.last_error = error
                rec.updated = now
                if rec.attempts < rec.max_attempts:
                    rec.status = JobStatus.PENDING  # run_at kept: it keeps its place in the claim order
                else:
                    rec.status = JobStatus.FAILED
                    rec.finished_at = now
                d._index(rec)
                out.append(_clone(rec))
        if any(job.status is JobStatus.PENDING for job in out):
            d.waker.notify()
        return out

    async def prune(
        self, completed_before: datetime, failed_before: datetime, limit: int = 10_000, *, namespace: str | None = None
    ) -> int:
        d = self._data
        with d.lock:
            doomed = [
                rec
                for rec in d.jobs.values()
                if rec.finished_at is not None
                and (namespace is None or rec.namespace == namespace)
                and (
                    (rec.status is JobStatus.COMPLETED and rec.finished_at < completed_before)
                    or (rec.status in (JobStatus.FAILED, JobStatus.CANCELLED) and rec.finished_at < failed_before)
                )
            ]
            doomed.sort(key=lambda r: (r.finished_at or completed_before, r.id))
            doomed = doomed[: max(0, limit)]
            for rec in doomed:
                d.delete(rec)
            return len(doomed)

    # ---- inspection and management --------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        with self._data.lock:
            rec = self._data.jobs.get(job_id)
            return None if rec is None else _clone(rec)

    async def list_jobs(self, filter: JobFilter, limit: int = 20, offset: int = 0) -> Page[Job]:
        d = self._data
        ids = None if filter.ids is None else frozenset(filter.ids)
        with d.lock:
            source: Iterator[Job] = (
                (d.jobs[i] for i in ids if i in d.jobs) if ids is not None else iter(d.jobs.values())
            )
            matched = [rec for rec in source if _matches(rec, filter, ids)]
            matched.sort(key=lambda r: (r.created, r.id), reverse=True)
            offset = max(0, offset)
            page = matched[offset : offset + max(0, limit)]
            return Page(items=[_clone(r) for r in page], total=len(matched), limit=limit, offset=offset)

    async def attempts(self, job_id: str) -> list[Attempt]:
        with self._data.lock:
            records = self._data.attempts.get(job_id, {})
            return sorted(records.values(), key=attempt_order)

    async def stats(self, namespace: str | None = None, queue: str | None = None, task: str | None = None) -> Stats:
        d = self._data
        by_status: Counter[JobStatus] = Counter()
        with d.lock:
            for (ns, q, t, status), n in d.counts.items():
                if (
                    (namespace is None or ns == namespace)
                    and (queue is None or q == queue)
                    and (task is None or t == task)
                ):
                    by_status[status] += n
            scheduled = d.scheduled(utcnow(), namespace, queue, task)
        return Stats(
            pending=by_status[JobStatus.PENDING],
            processing=by_status[JobStatus.PROCESSING],
            completed=by_status[JobStatus.COMPLETED],
            failed=by_status[JobStatus.FAILED],
            cancelled=by_status[JobStatus.CANCELLED],
            scheduled=scheduled,
        )

    def _get(self, job_id: str) -> Job:
        rec = self._data.jobs.get(job_id)
        if rec is None:
            raise JobNotFound(job_id)
        return rec

    async def cancel(self, job_id: str) -> Job:
        d = self._data
        with d.lock:
            rec = self._get(job_id)
            now = utcnow()
            if rec.status is JobStatus.PENDING:
                d._unindex(rec)
                rec.status = JobStatus.CANCELLED
                rec.finished_at = now
                rec.updated = now
                d._index(rec)
            elif rec.status is JobStatus.PROCESSING:
                rec.cancel_requested = True  # not indexed
                rec.updated = now
            else:
                raise InvalidTransition(
                    f"Job cannot be cancelled (must be in 'pending' or 'processing' status; it is {rec.status.value!r})"
                )
            return _clone(rec)

    async def requeue(self, job_id: str) -> Job:
        d = self._data
        with d.lock:
            rec = self._get(job_id)
            if rec.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
                raise InvalidTransition("Job cannot be requeued (must be in 'failed' status)")
            if rec.unique_key is not None:
                holder = d.unique.get((rec.namespace, rec.unique_key))
                if holder is not None and holder != rec.id:
                    raise InvalidTransition(
                        f"Job cannot be requeued: active job {holder} holds its unique key {rec.unique_key!r}"
                    )
            now = utcnow()
            d._unindex(rec)
            rec.status = JobStatus.PENDING
            rec.attempts = 0
            rec.run_at = now
            rec.last_error = None
            rec.finished_at = None
            rec.cancel_requested = False
            rec.updated = now
            d._index(rec)
            job = _clone(rec)
        d.waker.notify()
        return job

    async def delete(self, job_id: str, *, force: bool = False) -> Job:
        d = self._data
        with d.lock:
            rec = self._get(job_id)
            if not force and rec.status not in (JobStatus.PENDING, JobStatus.FAILED):
                raise InvalidTransition("Job cannot be deleted (must be in 'pending' or 'failed' status)")
            job = _clone(rec)
            d.delete(rec)
            return job

    async def run_now(self, job_id: str) -> Job:
        d = self._data
        with d.lock:
            rec = self._get(job_id)
            if rec.status is not JobStatus.PENDING:
                raise InvalidTransition(
                    f"Job cannot be run now (must be in 'pending' status; it is {rec.status.value!r})"
                )
            now = utcnow()
            d._unindex(rec)
            rec.run_at = min(rec.run_at, now)  # a job already due keeps its place
            rec.updated = now
            d._index(rec)
            job = _clone(rec)
        d.waker.notify()
        return job

    async def delete_user_data(self, user_id: str) -> int:
        d = self._data
        with d.lock:
            doomed = [rec for rec in d.jobs.values() if rec.user_id == user_id]
            for rec in doomed:
                d.delete(rec)
        if doomed:
            d.waker.notify()  # a group lane's next job may have become its head
        return len(doomed)

    async def has_pending_job(self, namespace: str, user_id: str) -> bool:
        d = self._data
        with d.lock:
            return bool(d.lane_pending.get((namespace, f"u:{user_id}")))

    # ---- namespaces ------------------------------------------------------------------------------------------

    async def create_namespace(self, namespace: Namespace) -> Namespace:
        d = self._data
        with d.lock:
            if namespace.name == DEFAULT_NAMESPACE or namespace.name in d.namespaces:
                raise NamespaceExists(namespace.name)
            stored = replace(namespace, extra=dict(namespace.extra))
            d.namespaces[namespace.name] = stored
            return stored

    async def put_namespace(self, namespace: Namespace, *, expected_revision: int | None = None) -> Namespace:
        d = self._data
        with d.lock:
            old = d.namespaces.get(namespace.name)
            stored = replace(namespace, extra=dict(namespace.extra))
            if expected_revision is not None:
                if old is None and namespace.name == DEFAULT_NAMESPACE:
                    old = DEFAULT_NAMESPACE_SETTINGS  # never stored: revision 0
                if old is None:
                    raise NamespaceNotFound(namespace.name)
                if old.revision != expected_revision:
                    raise RevisionConflict(namespace.name, expected_revision, old.revision)
            if old is not None:
                stored = replace(stored, created=old.created, updated=utcnow(), revision=old.revision + 1)
            d.namespaces[namespace.name] = stored
            return stored

    async def get_namespace(self, name: str) -> Namespace | None:
        with self._data.lock:
            ns = self._data.namespaces.get(name)
        if ns is None and name == DEFAULT_NAMESPACE:
            return DEFAULT_NAMESPACE_SETTINGS
        return ns

    async def list_namespaces(self) -> list[Namespace]:
        with self._data.lock:
            found = dict(self._data.namespaces)
        found.setdefault(DEFAULT_NAMESPACE, DEFAULT_NAMESPACE_SETTINGS)
        return [found[name] for name in sorted(found)]

    async def delete_namespace(self, name: str) -> bool:
        if name == DEFAULT_NAMESPACE:
            raise ValidationError("the namespace 'default' always exists and cannot be deleted", field="name")
        d = self._data
        with d.lock:
            doomed = [rec for rec in d.jobs.values() if rec.namespace == name]
            for rec in doomed:
                d.delete(rec)
            for qk in [qk for qk in d.queue_settings if qk[0] == name]:
                del d.queue_settings[qk]
            return d.namespaces.pop(name, None) is not None or bool(doomed)

    # ---- queues ----------------------------------------------------------------------------------------------

    async def put_queue_settings(self, settings: QueueSettings) -> QueueSettings:
        if settings.concurrency is not None and settings.concurrency < 0:
            raise ValidationError("queue concurrency must be ≥ 0 (or None for no limit)", field="concurrency")
        with self._data.lock:
            self._data.queue_settings[(settings.namespace, settings.name)] = settings
        d = self._data
        d.waker.notify()  # a resumed queue or a raised limit may free jobs
        return settings

    async def list_queues(self, namespace: str | None = None) -> list[QueueInfo]:
        d = self._data
        with d.lock:
            now = utcnow()
            counts: dict[_QueueKey, dict[str, int]] = {}
            for (ns, q, _task, status), n in d.counts.items():
                if namespace is None or ns == namespace:
                    c = counts.setdefault((ns, q), _zero_counts())
                    c[status.value] += n
            for qk in d.queue_settings:
                if namespace is None or qk[0] == namespace:
                    counts.setdefault(qk, _zero_counts())
            for qk, c in counts.items():
                c["scheduled"] = d.scheduled(now, qk[0], qk[1], None)
            out: list[QueueInfo] = []
            for qk in sorted(counts):
                settings = d.queue_settings.get(qk)
                out.append(
                    QueueInfo(
                        namespace=qk[0],
                        name=qk[1],
                        paused=settings is not None and settings.paused,
                        counts=counts[qk],
                        concurrency=None if settings is None else settings.concurrency,
                    )
                )
            return out

    # ---- workers ---------------------------------------------------------------------------------------------

    async def register_worker(self, info: WorkerInfo) -> None:
        with self._data.lock:
            self._data.workers[info.id] = info

    async def unregister_worker(self, worker_id: str) -> None:
        with self._data.lock:
            self._data.workers.pop(worker_id, None)

    async def list_workers(self) -> list[WorkerInfo]:
        d = self._data
        with d.lock:
            now = utcnow()
            for wid in [w.id for w in d.workers.values() if w.expires_at <= now]:
                del d.workers[wid]
            return sorted(d.workers.values(), key=lambda w: (w.started_at, w.id))

    # ---- leader election ---------------------------------------------------------------------------------------

    async def elect(self, name: str, candidate: str, ttl: float) -> Leadership:
        d = self._data
        with d.lock:
            now = time.monotonic()
            current = d.leaders.get(name)
            if current is not None and current[2] > now and current[0] != candidate:
                return Leadership(name, current[0], current[1], current[2] - now, held=False)
            if current is not None and current[2] > now:
                term = current[1]  # a renewal
            else:
                term = d.terms.get(name, 0) + 1
                d.terms[name] = term
            d.leaders[name] = (candidate, term, now + ttl)
            return Leadership(name, candidate, term, ttl, held=True)

    async def resign(self, name: str, candidate: str) -> None:
        d = self._data
        with d.lock:
            current = d.leaders.get(name)
            if current is not None and current[0] == candidate:
                del d.leaders[name]

    async def leaders(self) -> list[Leadership]:
        d = self._data
        with d.lock:
            now = time.monotonic()
            return [
                Leadership(name, holder, term, expires - now)
                for name, (holder, term, expires) in sorted(d.leaders.items())
                if expires > now
            ]

    # ---- key-value -------------------------------------------------------------------------------------------

    def _kv_live(self, key: str) -> str | None:
        entry = self._data.kv.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires is not None and expires <= time.monotonic():
            del self._data.kv[key]
            return None
        return value

    async def kv_get(self, key: str) -> str | None:
        with self._data.lock:
            return self._kv_live(key)

    async def kv_set(self, key: str, value: str, *, ttl: float | None = None, only_if_absent: bool = False) -> bool:
        with self._data.lock:
            if only_if_absent and self._kv_live(key) is not None:
                return False
            self._data.kv[key] = (value, None if ttl is None else time.monotonic() + ttl)
            return True

    async def kv_setdefault(self, key: str, value: str, *, ttl: float | None = None) -> tuple[str, bool]:
        with self._data.lock:
            live = self._kv_live(key)
            if live is not None:
                return live, False
            self._data.kv[key] = (value, None if ttl is None else time.monotonic() + ttl)
            return value, True

    async def kv_delete(self, key: str) -> None:
        with self._data.lock:
            self._data.kv.pop(key, None)


def _any_later(jobs: list[Job]) -> bool:
    now = utcnow()
    return any(not job.duplicate and job.run_at > now for job in jobs)


def _zero_counts() -> dict[str, int]:
    return {status.value: 0 for status in JobStatus}
