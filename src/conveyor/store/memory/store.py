"""The memory store's lifecycle, enqueue, the worker's calls and maintenance (see the package doc)."""

from __future__ import annotations

import bisect
import heapq
import threading
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from conveyor.errors import (
    Conflict,
    ValidationError,
)
from conveyor.model import (
    LOST_STATUS_CODE,
    Attempt,
    AttemptOutcome,
    Finish,
    Job,
    JobStatus,
    Lease,
    LeaseState,
    NewJob,
    RateLimit,
    new_lease_tokens,
    rate_advance,
    rate_allowance,
    rate_key_value,
    utcnow,
)
from conveyor.store.base import IdleClaim, refuse_default
from conveyor.store.feed import EventFeed
from conveyor.store.handoff import IdleClaims, covers, hand_over
from conveyor.store.memory.admin import CONFLICT_MESSAGE, MemoryAdmin
from conveyor.store.memory.data import (
    ClaimKey,
    DataSet,
    LaneKey,
    QueueKey,
    clone_job,
    epoch_us,
    lane_key,
)
from conveyor.store.urls import take_options

_us = epoch_us


__all__ = ["CONFLICT_MESSAGE", "MemoryStore"]


class MemoryStore(MemoryAdmin):
    """Jobs in process memory. `memory://NAME` shares one data set per NAME in this process; `memory://` is
    private. Nothing survives the process, and other processes cannot see it."""

    scheme = "memory"
    supports_transactions = False
    supports_handoff = True
    supports_processes = False

    _registry: ClassVar[dict[str, DataSet]] = {}
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
            self._data = DataSet()
        else:
            with self._registry_lock:
                self._data = self._registry.setdefault(name, DataSet())
        self._idle = IdleClaims()  # this store object's waiting workers (hand-off; never shared through NAME)

    @staticmethod
    def _name(url: str) -> str | None:
        scheme, _, rest = url.partition(":")
        if scheme.lower() != "memory":
            raise ValidationError(f"MemoryStore needs a memory:// URL, got {url!r}", field="url")
        name = rest.removeprefix("//").split("?", 1)[0].strip("/")
        return name or None

    @classmethod
    def shared_data(cls, url: str) -> DataSet | None:
        """The data set a `memory://NAME` URL names in this process (None: no store has opened it). For the
        conformance suite's simulated crash of the store, which copies and puts back the whole data set."""
        name = cls._name(url)
        with cls._registry_lock:
            return None if name is None else cls._registry.get(name)

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
        old, self._data = self._data, DataSet()
        old.waker.notify()

    # ---- events across processes (here: across the stores of this process on one data set) ------------------

    async def publish_events(self, messages: Sequence[str]) -> None:
        with self._data.lock:
            feeds = list(self._data.event_feeds)
        for feed in feeds:
            for message in messages:
                feed.deliver(message)

    async def subscribe_events(self) -> EventFeed:
        data = self._data

        async def unsubscribe() -> None:
            with data.lock:
                if feed in data.event_feeds:
                    data.event_feeds.remove(feed)

        feed = EventFeed(unsubscribe)
        with data.lock:
            data.event_feeds.append(feed)
        return feed

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
                        out.append(clone_job(d.jobs[existing_id], duplicate=True))
                        continue
                    if uk in batch_unique:  # first of equal keys in one batch wins
                        out.append(clone_job(batch_unique[uk], duplicate=True))
                        continue
                if new.unique_hash is not None:
                    holder = d.unique_holder(new)  # an earlier job of this batch is indexed already
                    if holder is not None:
                        d.replace_pending(holder, new)
                        out.append(clone_job(holder, duplicate=True))
                        continue
                    d.uniq_of[new.id] = (new.unique_hash, new.unique_states)
                rec = new.to_job()
                if new.unique_key is not None:
                    batch_unique[(new.namespace, new.unique_key)] = rec
                d.jobs[rec.id] = rec
                d.index_job(rec)
                out.append(clone_job(rec))
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
        now_us = _us(now)
        sources: list[list[ClaimKey]] = []
        room: dict[QueueKey, int | None] = {}  # how many more a queue may start (None = unlimited)
        rated: dict[QueueKey, RateLimit] = {}  # rate-limited queues of this claim
        rate_keyed: dict[QueueKey, tuple[RateLimit, str, dict[str, int]]] = {}  # partitioned: rate, rate_key, tats
        key_limits: dict[QueueKey, int] = {}  # queues with a limit per concurrency key
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
                if settings is not None and settings.rate_limit is not None and settings.rate_key is not None:
                    tats = d.rate_key_tat.setdefault(qk, {})
                    for k in [k for k, t in tats.items() if t <= now_us]:  # full buckets again: forgotten
                        del tats[k]
                    rate_keyed[qk] = (settings.rate_limit, settings.rate_key, tats)
                elif settings is not None and settings.rate_limit is not None:
                    allowed, _ = rate_allowance(settings.rate_limit, d.rate_tat.get(qk), now_us)
                    if allowed <= 0:
                        continue
                    cap = allowed if cap is None else min(cap, allowed)
                    rated[qk] = settings.rate_limit
                if settings is not None and settings.key_concurrency is not None:
                    key_limits[qk] = settings.key_concurrency
                room[qk] = cap
            sources.append(keys)
        if not sources:
            return []
        lanes_taken: set[LaneKey] = set()
        keys_taken: Counter[tuple[str, str, str]] = Counter()
        rate_taken: Counter[tuple[str, str, str]] = Counter()  # (ns, queue, rate key) -> started by this claim
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
            kk = None
            if rec.concurrency_key is not None and qk in key_limits:
                kk = (rec.namespace, rec.queue, rec.concurrency_key)
                if d.key_processing[kk] + keys_taken[kk] >= key_limits[qk]:
                    continue
            rk = None
            if qk in rate_keyed:
                rate, rate_key, tats = rate_keyed[qk]
                value = rate_key_value(rate_key, rec.user_id, rec.group_key, rec.concurrency_key, rec.payload)
                rk = (rec.namespace, rec.queue, value)
                if rate_allowance(rate, tats.get(value), now_us)[0] <= rate_taken[rk]:
                    continue
            lk = lane_key(rec)
            if lk is not None:
                if lk in lanes_taken or d.lane_busy(lk) or d.lane_head(lk) is not rec:
                    continue
                lanes_taken.add(lk)
            if free is not None:
                room[qk] = free - 1
            if kk is not None:
                keys_taken[kk] += 1
            if rk is not None:
                rate_taken[rk] += 1
            chosen.append(rec)
            if len(chosen) >= limit:
                break
        for rec, token in zip(chosen, new_lease_tokens(len(chosen)), strict=True):
            d.start(rec, worker_id, lease, now, token)
        if rated:
            taken = Counter((rec.namespace, rec.queue) for rec in chosen)
            for qk, rate in rated.items():
                if taken[qk]:
                    d.rate_tat[qk] = rate_advance(rate, d.rate_tat.get(qk), now_us, taken[qk])
        for (ns, q, value), n in rate_taken.items():
            rate, _, tats = rate_keyed[(ns, q)]
            tats[value] = rate_advance(rate, tats.get(value), now_us, n)
        return [clone_job(rec) for rec in chosen]

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
            return clone_job(head)

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
            if f.status is JobStatus.PROCESSING or ((f.release or f.snooze) and f.status is not JobStatus.PENDING):
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
                d.unindex_job(rec)
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
                    if f.snooze:  # the try does not count; the last error stays unless one is given
                        rec.attempts = max(0, rec.attempts - 1)
                        if f.error is not None:
                            rec.last_error = f.error
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
                d.index_job(rec)
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
                key_limit = None if settings is None else settings.key_concurrency
                # a rate-limited queue's jobs are claimable no sooner than its next token
                floor: datetime | None = None
                rate_keyed: tuple[RateLimit, str, dict[str, int]] | None = None
                if settings is not None and settings.rate_limit is not None and settings.rate_key is not None:
                    rate_keyed = (settings.rate_limit, settings.rate_key, d.rate_key_tat.get(qk, {}))
                elif settings is not None and settings.rate_limit is not None:
                    _, wait_us = rate_allowance(settings.rate_limit, d.rate_tat.get(qk), _us(now))
                    if wait_us:
                        floor = now + timedelta(microseconds=wait_us)
                # keys are in (priority, run_at, id) order: each priority's first claimable key is its earliest
                i = 0
                while i < len(keys):
                    end = bisect.bisect_left(keys, (keys[i][0] + 1,), lo=i)
                    for _, run_at, job_id in keys[i:end]:
                        at = run_at if floor is None or run_at >= floor else floor
                        if best is not None and at >= best:
                            break
                        rec = d.jobs[job_id]
                        held = False  # by its rate key: a later job of another key may come sooner
                        if rate_keyed is not None:  # no sooner than its key's next token
                            rate, rate_key, tats = rate_keyed
                            value = rate_key_value(
                                rate_key, rec.user_id, rec.group_key, rec.concurrency_key, rec.payload
                            )
                            _, wait_us = rate_allowance(rate, tats.get(value), _us(now))
                            held = wait_us > 0 and now + timedelta(microseconds=wait_us) > at
                            at = max(at, now + timedelta(microseconds=wait_us))
                            if best is not None and at >= best:
                                continue
                        ck = rec.concurrency_key
                        if key_limit is not None and ck is not None and d.key_processing[(ns, q, ck)] >= key_limit:
                            continue  # its key is at its limit: claim skips it
                        lk = lane_key(rec)
                        if lk is None or (not d.lane_busy(lk) and d.lane_head(lk) is rec):
                            best = at
                            if not held:
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
                d.unindex_job(rec)
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
                d.index_job(rec)
                out.append(clone_job(rec))
        if any(job.status is JobStatus.PENDING for job in out):
            d.waker.notify()
        return out

    async def next_lease_expiry(self) -> float | None:
        d = self._data
        with d.lock:
            now = utcnow()
            expiries = [
                rec.lease_expires_at
                for ids in d.processing.values()
                for rec in (d.jobs[i] for i in ids)
                if rec.lease_expires_at is not None
            ]
            return None if not expiries else (min(expiries) - now).total_seconds()

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


def _any_later(jobs: list[Job]) -> bool:
    now = utcnow()
    return any(not job.duplicate and job.run_at > now for job in jobs)
