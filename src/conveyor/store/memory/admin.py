"""The memory store's inspection and management calls (`MemoryStore` inherits them; see store.py)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace

from conveyor.errors import (
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
    SCHEDULE_RUNS_KEPT,
    Attempt,
    Job,
    JobFilter,
    JobKey,
    JobSort,
    JobStatus,
    Leadership,
    Namespace,
    Page,
    QueueChange,
    QueueInfo,
    QueueSettings,
    RateState,
    ScheduleRecord,
    ScheduleRun,
    Stats,
    WorkerInfo,
    attempt_order,
    check_queue_settings,
    job_sort_key,
    occurrence_us,
    utcnow,
)
from conveyor.store.base import Store, check_after, check_restore
from conveyor.store.memory.data import (
    DataSet,
    QueueKey,
    clone_job,
    epoch_us,
    matches_filter,
)

__all__ = ["MemoryAdmin"]

CONFLICT_MESSAGE = "Job queue execution conflict. Retry required."


class MemoryAdmin(Store):
    """Inspection and management of the memory store: reading and changing jobs one at a time, namespaces, queue
    settings, the worker registry, leader election and the key-value map, each under the data set's lock."""

    _data: DataSet

    # ---- inspection and management --------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        with self._data.lock:
            rec = self._data.jobs.get(job_id)
            return None if rec is None else clone_job(rec)

    async def list_jobs(
        self,
        filter: JobFilter,
        limit: int = 20,
        offset: int = 0,
        *,
        after: JobKey | None = None,
        sort: JobSort = JobSort.CREATED_DESC,
    ) -> Page[Job]:
        sort = JobSort(sort)
        check_after(after, sort)
        d = self._data
        ids = None if filter.ids is None else frozenset(filter.ids)
        now = utcnow()
        with d.lock:
            source: Iterator[Job] = (
                (d.jobs[i] for i in ids if i in d.jobs) if ids is not None else iter(d.jobs.values())
            )
            matched = [rec for rec in source if matches_filter(rec, filter, ids) and filter.matches(rec, now)]
            matched.sort(key=lambda r: job_sort_key(r, sort), reverse=sort.descending)
            following = matched if after is None else [r for r in matched if after.precedes(r)]
            offset = max(0, offset)
            page = following[offset : offset + max(0, limit)]
            more = len(following) > offset + len(page) and limit > 0
            return Page(
                items=[clone_job(r) for r in page],
                total=len(matched),
                limit=limit,
                offset=offset,
                next=JobKey.of(page[-1], sort) if more and page else None,
            )

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
                d.unindex_job(rec)
                rec.status = JobStatus.CANCELLED
                rec.finished_at = now
                rec.updated = now
                d.index_job(rec)
            elif rec.status is JobStatus.PROCESSING:
                rec.cancel_requested = True  # not indexed
                rec.updated = now
            else:
                raise InvalidTransition(
                    f"Job cannot be cancelled (must be in 'pending' or 'processing' status; it is {rec.status.value!r})"
                )
            return clone_job(rec)

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
            d.unindex_job(rec)
            d.uniq_of.pop(rec.id, None)  # a requeued job leaves its `unique=` rule behind (never a conflict)
            rec.status = JobStatus.PENDING
            rec.attempts = 0
            rec.run_at = now
            rec.last_error = None
            rec.finished_at = None
            rec.cancel_requested = False
            rec.updated = now
            d.index_job(rec)
            job = clone_job(rec)
        d.waker.notify()
        return job

    async def delete(self, job_id: str, *, force: bool = False) -> Job:
        d = self._data
        with d.lock:
            rec = self._get(job_id)
            if not force and rec.status not in (JobStatus.PENDING, JobStatus.FAILED):
                raise InvalidTransition("Job cannot be deleted (must be in 'pending' or 'failed' status)")
            job = clone_job(rec)
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
            d.unindex_job(rec)
            rec.run_at = min(rec.run_at, now)  # a job already due keeps its place
            rec.updated = now
            d.index_job(rec)
            job = clone_job(rec)
        d.waker.notify()
        return job

    async def restore_jobs(self, jobs: Sequence[Job], attempts: Sequence[Attempt] = ()) -> list[Job]:
        records = check_restore(jobs, attempts)
        d = self._data
        with d.lock:
            taken = [j.id for j in records if j.id in d.jobs]
            if taken:
                raise ValidationError(f"a job with one of these ids already exists: {', '.join(taken)}", field="id")
            for j in records:
                if j.unique_key is not None and not j.status.is_final:
                    holder = d.unique.get((j.namespace, j.unique_key))
                    if holder is not None:
                        raise ValidationError(
                            f"job {j.id}: active job {holder} holds its unique key {j.unique_key!r}",
                            field="unique_key",
                        )
            for j in records:
                rec = clone_job(j)
                d.jobs[rec.id] = rec
                d.index_job(rec)
            for a in attempts:
                d.attempts.setdefault(a.job_id, {})[a.lease_token or f"try-{a.try_number}"] = a
            out = [clone_job(d.jobs[j.id]) for j in records]
        if any(j.status is JobStatus.PENDING for j in records):
            d.waker.notify()
        return out

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
                d.rate_tat.pop(qk, None)
                d.rate_key_tat.pop(qk, None)
            return d.namespaces.pop(name, None) is not None or bool(doomed)

    # ---- queues ----------------------------------------------------------------------------------------------

    async def put_queue_settings(self, settings: QueueSettings) -> QueueSettings:
        check_queue_settings(settings)
        with self._data.lock:
            self._data.queue_settings[(settings.namespace, settings.name)] = settings
        d = self._data
        d.waker.notify()  # a resumed queue or a raised limit may free jobs
        return settings

    async def update_queue_settings(self, namespace: str, queue: str, change: QueueChange) -> QueueSettings:
        d = self._data
        with d.lock:
            settings = change.apply(d.queue_settings.get((namespace, queue)) or QueueSettings(namespace, queue))
            check_queue_settings(settings)
            d.queue_settings[(namespace, queue)] = settings
        d.waker.notify()  # a resumed queue or a raised limit may free jobs
        return settings

    async def get_queue_settings(self, namespace: str, queue: str) -> QueueSettings:
        with self._data.lock:
            return self._data.queue_settings.get((namespace, queue)) or QueueSettings(namespace, queue)

    async def list_queues(self, namespace: str | None = None) -> list[QueueInfo]:
        d = self._data
        with d.lock:
            now = utcnow()
            counts: dict[QueueKey, dict[str, int]] = {}
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
                        rate_limit=None if settings is None else settings.rate_limit,
                        key_concurrency=None if settings is None else settings.key_concurrency,
                        rate_key=None if settings is None else settings.rate_key,
                    )
                )
            return out

    async def rate_state(self, namespace: str, queue: str, limit: int = 10) -> RateState:
        d = self._data
        with d.lock:
            now_us = epoch_us(utcnow())
            keys = [(k, t) for k, t in d.rate_key_tat.get((namespace, queue), {}).items() if t > now_us]
            keys.sort(key=lambda kt: (-kt[1], kt[0]))
            return RateState(now_us, d.rate_tat.get((namespace, queue)), len(keys), keys[: max(0, limit)])

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

    # ---- cron schedules --------------------------------------------------------------------------------------

    async def put_schedule(self, record: ScheduleRecord, *, create: bool) -> bool:
        with self._data.lock:
            if (record.name in self._data.schedules) == create:
                return False
            self._data.schedules[record.name] = record.to_doc()
            return True

    async def get_schedule(self, name: str) -> ScheduleRecord | None:
        with self._data.lock:
            doc = self._data.schedules.get(name)
        return None if doc is None else ScheduleRecord.from_doc(doc)

    async def list_schedules(self) -> list[ScheduleRecord]:
        with self._data.lock:
            docs = [self._data.schedules[name] for name in sorted(self._data.schedules)]
        return [ScheduleRecord.from_doc(doc) for doc in docs]

    async def delete_schedule(self, name: str) -> bool:
        with self._data.lock:
            self._data.schedule_runs.pop(name, None)
            return self._data.schedules.pop(name, None) is not None

    async def record_schedule_run(self, run: ScheduleRun, *, keep: int = SCHEDULE_RUNS_KEPT) -> bool:
        key = occurrence_us(run.occurrence)
        with self._data.lock:
            runs = self._data.schedule_runs.setdefault(run.schedule, {})
            if key in runs:
                return False
            runs[key] = run.to_doc()
            for old in sorted(runs)[: max(0, len(runs) - keep)]:
                del runs[old]
            return True

    async def schedule_runs(self, name: str, limit: int = 20) -> list[ScheduleRun]:
        with self._data.lock:
            runs = self._data.schedule_runs.get(name, {})
            docs = [runs[k] for k in sorted(runs, reverse=True)[: max(0, limit)]]
        return [ScheduleRun.from_doc(doc) for doc in docs]


def _zero_counts() -> dict[str, int]:
    return {status.value: 0 for status in JobStatus}
