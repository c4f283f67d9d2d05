"""The SQLite store's inspection and management calls (`SQLiteStore` inherits them; see store.py)."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from conveyor.codec import STORED_ATTEMPT_FIELDS, STORED_JOB_FIELDS, FieldSpec
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
    RateLimit,
    RateState,
    ScheduleRecord,
    ScheduleRun,
    Stats,
    WorkerInfo,
    check_queue_settings,
    occurrence_us,
    rate_from_columns,
    utcnow,
)
from conveyor.store.base import check_after, check_restore, filter_conditions, stats_from_counts
from conveyor.store.documents import worker_from_json, worker_to_json
from conveyor.store.sqlite import queries as q
from conveyor.store.sqlite.connections import SQLiteConnections
from conveyor.store.sqlite.rows import (
    clock_us,
    decode_attempt,
    dumps,
    filter_params,
    job_from_row,
    namespace_doc,
    namespace_from_doc,
    seconds_us,
    to_us,
)

__all__ = ["SQLiteAdmin"]

log = logging.getLogger("conveyor.store.sqlite")

T = TypeVar("T")


class SQLiteAdmin(SQLiteConnections):
    """Inspection and management of the SQLite store: reading and changing jobs one at a time, namespaces, queue
    settings, the worker registry, leader election and the key-value table. Each is one read on the reader thread
    or one `BEGIN IMMEDIATE` write on the writer thread."""

    # ---- inspection and management --------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        rows = await self._read(lambda conn: conn.execute(q.SELECT_JOB, (job_id,)).fetchall())
        return job_from_row(rows[0]) if rows else None

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
        offset, limit_ = max(0, offset), max(0, limit)
        count_sql, page_sql, params = self.list_statements(filter, after, sort)

        def run(conn: sqlite3.Connection) -> tuple[int, list[Any]]:
            total = conn.execute(count_sql, params).fetchone()[0]
            return total, conn.execute(page_sql, {**params, "limit": limit_ + 1, "offset": offset}).fetchall()

        total, rows = await self._read(run, snapshot=True)
        items = [job_from_row(r) for r in rows[:limit_]]
        more = len(rows) > limit_ and bool(items)
        return Page(
            items=items, total=total, limit=limit, offset=offset, next=JobKey.of(items[-1], sort) if more else None
        )

    async def attempts(self, job_id: str) -> list[Attempt]:
        rows = await self._read(lambda conn: conn.execute(q.SELECT_ATTEMPTS, (job_id,)).fetchall())
        return [decode_attempt(r) for r in rows]

    async def stats(self, namespace: str | None = None, queue: str | None = None, task: str | None = None) -> Stats:
        names, params = filter_params(JobFilter(namespace=namespace, queue=queue, task=task))
        sql = q.STATS.format(where=q.where_clause(names))
        scheduled_sql = q.COUNT_SCHEDULED.format(where=q.where_clause([*names, "scheduled"]))

        def run(conn: sqlite3.Connection) -> tuple[list[Any], int]:
            rows = conn.execute(sql, params).fetchall()
            return rows, conn.execute(scheduled_sql, {**params, "now": clock_us()}).fetchone()[0]

        rows, scheduled = await self._read(run, snapshot=True)
        counts = {status: n for status, n in rows}
        return stats_from_counts(counts, scheduled)

    @staticmethod
    def _get(conn: sqlite3.Connection, job_id: str) -> Job:
        rows = conn.execute(q.SELECT_JOB, (job_id,)).fetchall()
        if not rows:
            raise JobNotFound(job_id)
        return job_from_row(rows[0])

    async def cancel(self, job_id: str) -> Job:
        def run(conn: sqlite3.Connection) -> Job:
            job = self._get(conn, job_id)
            now = clock_us()
            if job.status is JobStatus.PENDING:
                return job_from_row(conn.execute(q.CANCEL_PENDING, (now, job_id)).fetchall()[0])
            if job.status is JobStatus.PROCESSING:
                return job_from_row(conn.execute(q.REQUEST_CANCEL, (now, job_id)).fetchall()[0])
            raise InvalidTransition(
                f"Job cannot be cancelled (must be in 'pending' or 'processing' status; it is {job.status.value!r})"
            )

        return await self._write(run)

    async def requeue(self, job_id: str) -> Job:
        def run(conn: sqlite3.Connection) -> Job:
            job = self._get(conn, job_id)
            if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
                raise InvalidTransition("Job cannot be requeued (must be in 'failed' status)")
            if job.unique_key is not None:
                holder = conn.execute(
                    q.SELECT_OTHER_ACTIVE_WITH_KEY, (job.namespace, job.unique_key, job.id)
                ).fetchone()
                if holder is not None:
                    raise InvalidTransition(
                        f"Job cannot be requeued: active job {holder[0]} holds its unique key {job.unique_key!r}"
                    )
            return job_from_row(conn.execute(q.REQUEUE, (clock_us(), job_id)).fetchall()[0])

        return await self._write(run, _always)

    async def delete(self, job_id: str, *, force: bool = False) -> Job:
        def run(conn: sqlite3.Connection) -> Job:
            job = self._get(conn, job_id)
            if not force and job.status not in (JobStatus.PENDING, JobStatus.FAILED):
                raise InvalidTransition("Job cannot be deleted (must be in 'pending' or 'failed' status)")
            conn.execute(q.DELETE_ATTEMPTS_OF_JOB, (job_id,))
            conn.execute(q.DELETE_JOB, (job_id,))
            return job

        return await self._write(run)

    async def run_now(self, job_id: str) -> Job:
        def run(conn: sqlite3.Connection) -> Job:
            job = self._get(conn, job_id)
            if job.status is not JobStatus.PENDING:
                raise InvalidTransition(
                    f"Job cannot be run now (must be in 'pending' status; it is {job.status.value!r})"
                )
            return job_from_row(conn.execute(q.RUN_NOW, (clock_us(), job_id)).fetchall()[0])

        return await self._write(run, _always)

    def list_statements(
        self, filter: JobFilter, after: JobKey | None, sort: JobSort
    ) -> tuple[str, str, dict[str, Any]]:
        """`list_jobs`'s count and page statements with their parameters (but limit and offset): what it runs,
        and what the EXPLAIN tests check uses an index."""
        conditions, params = filter_conditions(filter, q.LIST_FILTERS)
        if "ids" in params:
            params["ids"] = json.dumps(params["ids"])
        if "path" in params:
            params["path"] = "$" + "".join(f"[{s}]" if s.isdigit() else '."' + s + '"' for s in params["path"])
            params["path_values"] = json.dumps(params["path_values"])
        params["now"] = clock_us()
        count_sql = q.COUNT_JOBS.format(where=q.list_where(conditions))
        col = sort.field
        if after is not None:
            if after.value is None:
                seek = q.KEYSET_AFTER_NULL[sort.descending]
            elif col == "finished_at":
                seek = q.KEYSET_AFTER_NULLABLE[sort.descending]
            else:
                seek = q.KEYSET_AFTER[sort.descending]
            conditions = [*conditions, seek.replace("{col}", col)]
            value = after.value
            params.update(after_value=to_us(value) if isinstance(value, datetime) else value, after_id=after.id)
        page_sql = q.LIST_JOBS.format(
            where=q.list_where(conditions),
            order=(q.ORDER_NULLABLE if col == "finished_at" else q.ORDER)[sort.descending].replace("{col}", col),
        )

        return count_sql, page_sql, params

    async def restore_jobs(self, jobs: Sequence[Job], attempts: Sequence[Attempt] = ()) -> list[Job]:
        records = check_restore(jobs, attempts)
        if not records:
            return []
        job_rows = [_stored_values(j, STORED_JOB_FIELDS) for j in records]
        attempt_rows = [
            _stored_values(replace(a, lease_token=a.lease_token or f"try-{a.try_number}"), STORED_ATTEMPT_FIELDS)
            for a in attempts
        ]

        def run(conn: sqlite3.Connection) -> bool:
            taken = conn.execute(q.RESTORE_TAKEN, (json.dumps([j.id for j in records]),)).fetchall()
            if taken:
                raise ValidationError(
                    f"a job with one of these ids already exists: {', '.join(r[0] for r in taken)}", field="id"
                )
            for j in records:
                if j.unique_key is not None and not j.status.is_final:
                    holder = conn.execute(q.RESTORE_UNIQUE_HOLDER, (j.namespace, j.unique_key)).fetchone()
                    if holder is not None:
                        raise ValidationError(
                            f"job {j.id}: active job {holder[0]} holds its unique key {j.unique_key!r}",
                            field="unique_key",
                        )
            conn.executemany(q.RESTORE_JOB, job_rows)
            conn.executemany(q.RESTORE_ATTEMPT, attempt_rows)
            for ns, queue, task in sorted({(j.namespace, j.queue, j.task) for j in records}):
                conn.execute(q.REGISTER_QUEUE, (ns, queue))
                conn.execute(q.REGISTER_QUEUE_TASK, (queue, task, ns))
            return any(j.status is JobStatus.PENDING for j in records)

        await self._write(run, bool)
        return [j for j in [await self.get_job(j.id) for j in records] if j is not None]

    async def delete_user_data(self, user_id: str) -> int:
        def run(conn: sqlite3.Connection) -> int:
            conn.execute(q.DELETE_ATTEMPTS_OF_USER, (user_id,))
            deleted: int = conn.execute(q.DELETE_JOBS_OF_USER, (user_id,)).rowcount
            return deleted

        return await self._write(run, _always)

    async def has_pending_job(self, namespace: str, user_id: str) -> bool:
        key = f"u:{user_id}"

        def run(conn: sqlite3.Connection) -> bool:
            return bool(conn.execute(q.HAS_PENDING_JOB, (namespace, key)).fetchone()[0])

        return await self._read(run)

    # ---- namespaces ------------------------------------------------------------------------------------------

    async def create_namespace(self, namespace: Namespace) -> Namespace:
        if namespace.name == DEFAULT_NAMESPACE:  # seeded by every migrate: it always exists
            raise NamespaceExists(namespace.name)
        stored = replace(namespace, extra=dict(namespace.extra))

        def run(conn: sqlite3.Connection) -> Namespace:
            if conn.execute(q.INSERT_NAMESPACE_IF_ABSENT, (stored.name, namespace_doc(stored))).rowcount == 0:
                raise NamespaceExists(stored.name)
            return stored

        return await self._write(run)

    async def put_namespace(self, namespace: Namespace, *, expected_revision: int | None = None) -> Namespace:
        def run(conn: sqlite3.Connection) -> Namespace:
            row = conn.execute(q.SELECT_NAMESPACE, (namespace.name,)).fetchone()
            old = None if row is None else namespace_from_doc(row[0])
            if expected_revision is not None:
                if old is None:
                    raise NamespaceNotFound(namespace.name)
                if old.revision != expected_revision:
                    raise RevisionConflict(namespace.name, expected_revision, old.revision)
            stored = replace(namespace, extra=dict(namespace.extra))
            if old is not None:
                stored = replace(stored, created=old.created, updated=utcnow(), revision=old.revision + 1)
            conn.execute(q.UPSERT_NAMESPACE, (stored.name, namespace_doc(stored)))
            return stored

        return await self._write(run)

    async def get_namespace(self, name: str) -> Namespace | None:
        rows = await self._read(lambda conn: conn.execute(q.SELECT_NAMESPACE, (name,)).fetchall())
        if rows:
            return namespace_from_doc(rows[0][0])
        return DEFAULT_NAMESPACE_SETTINGS if name == DEFAULT_NAMESPACE else None

    async def list_namespaces(self) -> list[Namespace]:
        rows = await self._read(lambda conn: conn.execute(q.LIST_NAMESPACES).fetchall())
        found = {ns.name: ns for ns in (namespace_from_doc(r[0]) for r in rows)}
        found.setdefault(DEFAULT_NAMESPACE, DEFAULT_NAMESPACE_SETTINGS)
        return [found[name] for name in sorted(found)]

    async def delete_namespace(self, name: str) -> bool:
        if name == DEFAULT_NAMESPACE:
            raise ValidationError("the namespace 'default' always exists and cannot be deleted", field="name")

        def run(conn: sqlite3.Connection) -> bool:
            conn.execute(q.DELETE_ATTEMPTS_OF_NAMESPACE, (name,))
            jobs = conn.execute(q.DELETE_JOBS_OF_NAMESPACE, (name,)).rowcount
            conn.execute(q.RESET_QUEUES_OF_NAMESPACE, (name,))
            conn.execute(q.DELETE_RATE_KEYS_OF_NAMESPACE, (name,))
            return conn.execute(q.DELETE_NAMESPACE, (name,)).rowcount > 0 or jobs > 0

        return await self._write(run)

    # ---- queues ----------------------------------------------------------------------------------------------

    async def put_queue_settings(self, settings: QueueSettings) -> QueueSettings:
        check_queue_settings(settings)

        def run(conn: sqlite3.Connection) -> QueueSettings:
            _upsert_queue_settings(conn, settings)
            return settings

        return await self._write(run, _always)  # a resumed queue or a raised limit may free jobs

    async def update_queue_settings(self, namespace: str, queue: str, change: QueueChange) -> QueueSettings:
        def run(conn: sqlite3.Connection) -> QueueSettings:
            settings = change.apply(_queue_settings(conn, namespace, queue))
            check_queue_settings(settings)
            _upsert_queue_settings(conn, settings)
            return settings

        return await self._write(run, _always)  # a resumed queue or a raised limit may free jobs

    async def get_queue_settings(self, namespace: str, queue: str) -> QueueSettings:
        return await self._read(lambda conn: _queue_settings(conn, namespace, queue))

    async def list_queues(self, namespace: str | None = None) -> list[QueueInfo]:
        names = [] if namespace is None else ["namespace"]
        where = q.where_clause(names)
        scheduled_where = q.where_clause([*names, "scheduled"])

        def run(conn: sqlite3.Connection) -> tuple[list[Any], list[Any], list[Any]]:
            params = {"namespace": namespace, "now": clock_us()}
            counts = conn.execute(q.QUEUE_COUNTS.format(where=where), params).fetchall()
            scheduled = conn.execute(q.QUEUE_SCHEDULED.format(where=scheduled_where), params).fetchall()
            settings = conn.execute(q.SELECT_QUEUE_SETTINGS.format(where=where), params).fetchall()
            return counts, scheduled, settings

        count_rows, scheduled_rows, setting_rows = await self._read(run, snapshot=True)
        counts: dict[tuple[str, str], dict[str, int]] = {}
        for ns, queue, status, n in count_rows:
            counts.setdefault((ns, queue), _zero_counts())[status] += n
        for ns, queue, n in scheduled_rows:
            counts.setdefault((ns, queue), _zero_counts())["scheduled"] += n
        settings: dict[tuple[str, str], tuple[bool, int | None, RateLimit | None, int | None, str | None]] = {}
        for row in setting_rows:
            ns, name, paused, concurrency, configured, rate_limit, rate_period, rate_burst, key_cap, rate_key = row
            rate = rate_from_columns(rate_limit, rate_period, rate_burst)
            settings[(ns, name)] = (bool(paused), concurrency, rate, key_cap, rate_key)
            if configured:
                counts.setdefault((ns, name), _zero_counts())
        none: tuple[bool, int | None, RateLimit | None, int | None, str | None] = (False, None, None, None, None)
        return [
            QueueInfo(
                namespace=key[0],
                name=key[1],
                paused=settings.get(key, none)[0],
                counts=counts[key],
                concurrency=settings.get(key, none)[1],
                rate_limit=settings.get(key, none)[2],
                key_concurrency=settings.get(key, none)[3],
                rate_key=settings.get(key, none)[4],
            )
            for key in sorted(counts)
        ]

    async def rate_state(self, namespace: str, queue: str, limit: int = 10) -> RateState:
        def run(conn: sqlite3.Connection) -> RateState:
            now = clock_us()
            tat, count, keys = conn.execute(q.RATE_STATE, (namespace, queue, now, max(0, limit))).fetchone()
            return RateState(now, tat, count, [(k, t) for k, t in json.loads(keys)])

        return await self._read(run, snapshot=True)

    # ---- workers ---------------------------------------------------------------------------------------------

    async def register_worker(self, info: WorkerInfo) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(q.DELETE_EXPIRED_WORKERS, (clock_us(),))
            conn.execute(
                q.UPSERT_WORKER, (info.id, worker_to_json(info), to_us(info.started_at), to_us(info.expires_at))
            )

        await self._write(run)

    async def unregister_worker(self, worker_id: str) -> None:
        await self._write(lambda conn: conn.execute(q.DELETE_WORKER, (worker_id,)).rowcount)

    async def list_workers(self) -> list[WorkerInfo]:
        rows = await self._read(lambda conn: conn.execute(q.LIST_WORKERS, (clock_us(),)).fetchall())
        return [worker_from_json(r[0]) for r in rows]

    # ---- leader election ---------------------------------------------------------------------------------------

    async def elect(self, name: str, candidate: str, ttl: float) -> Leadership:
        def run(conn: sqlite3.Connection) -> Leadership:
            now = clock_us()
            conn.execute(q.ELECT, (name, candidate, now + seconds_us(ttl), now))
            holder, term, expires = conn.execute(q.SELECT_LEADER, (name,)).fetchone()
            return Leadership(name, holder, term, (expires - now) / 1e6, held=holder == candidate and expires > now)

        return await self._write(run)

    async def resign(self, name: str, candidate: str) -> None:
        await self._write(lambda conn: conn.execute(q.RESIGN, (name, candidate, clock_us())).rowcount)

    async def leaders(self) -> list[Leadership]:
        def run(conn: sqlite3.Connection) -> list[Leadership]:
            now = clock_us()
            rows = conn.execute(q.LIST_LEADERS, (now,)).fetchall()
            return [Leadership(n, h, t, (e - now) / 1e6) for n, h, t, e in rows]

        return await self._read(run)

    # ---- key-value -------------------------------------------------------------------------------------------

    async def kv_get(self, key: str) -> str | None:
        rows = await self._read(lambda conn: conn.execute(q.KV_GET, (key, clock_us())).fetchall())
        return rows[0][0] if rows else None

    async def kv_set(self, key: str, value: str, *, ttl: float | None = None, only_if_absent: bool = False) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            now = clock_us()
            expires = None if ttl is None else now + seconds_us(ttl)
            if only_if_absent:
                return conn.execute(q.KV_SET_IF_ABSENT, (key, value, expires, now)).rowcount > 0
            conn.execute(q.KV_SET, (key, value, expires))
            return True

        return await self._write(run)

    async def kv_setdefault(self, key: str, value: str, *, ttl: float | None = None) -> tuple[str, bool]:
        def run(conn: sqlite3.Connection) -> tuple[str, bool]:
            now = clock_us()
            expires = None if ttl is None else now + seconds_us(ttl)
            if conn.execute(q.KV_SET_IF_ABSENT, (key, value, expires, now)).rowcount > 0:
                return value, True
            return str(conn.execute(q.KV_VALUE, (key,)).fetchone()[0]), False  # live: it refused the insert

        return await self._write(run)

    async def kv_delete(self, key: str) -> None:
        await self._write(lambda conn: conn.execute(q.KV_DELETE, (key,)).rowcount)

    # ---- cron schedules --------------------------------------------------------------------------------------

    async def put_schedule(self, record: ScheduleRecord, *, create: bool) -> bool:
        doc = record.to_doc()
        query = q.SCHEDULE_INSERT if create else q.SCHEDULE_UPDATE
        return await self._write(lambda conn: conn.execute(query, (record.name, doc)).rowcount > 0)

    async def get_schedule(self, name: str) -> ScheduleRecord | None:
        rows = await self._read(lambda conn: conn.execute(q.SCHEDULE_GET, (name,)).fetchall())
        return ScheduleRecord.from_doc(rows[0][0]) if rows else None

    async def list_schedules(self) -> list[ScheduleRecord]:
        rows = await self._read(lambda conn: conn.execute(q.SCHEDULE_LIST).fetchall())
        return [ScheduleRecord.from_doc(row[0]) for row in rows]

    async def delete_schedule(self, name: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            conn.execute(q.SCHEDULE_RUNS_DELETE, (name,))
            return conn.execute(q.SCHEDULE_DELETE, (name,)).rowcount > 0

        return await self._write(run)

    async def record_schedule_run(self, run: ScheduleRun, *, keep: int = SCHEDULE_RUNS_KEPT) -> bool:
        params = (run.schedule, occurrence_us(run.occurrence), run.to_doc())

        def write(conn: sqlite3.Connection) -> bool:
            if conn.execute(q.SCHEDULE_RUN_INSERT, params).rowcount == 0:
                return False
            conn.execute(q.SCHEDULE_RUNS_TRIM, (run.schedule, max(1, keep)))
            return True

        return await self._write(write)

    async def schedule_runs(self, name: str, limit: int = 20) -> list[ScheduleRun]:
        rows = await self._read(lambda conn: conn.execute(q.SCHEDULE_RUNS, (name, max(0, limit))).fetchall())
        return [ScheduleRun.from_doc(row[0]) for row in rows]


def _zero_counts() -> dict[str, int]:
    counts = {status.value: 0 for status in JobStatus}
    counts["scheduled"] = 0
    return counts


def _always(_: object) -> bool:
    return True


def _stored_values(value: Any, fields: Sequence[FieldSpec]) -> tuple[Any, ...]:
    """A Job's or Attempt's stored fields as statement parameters in codec order, kept as this store keeps each
    kind (times in integer microseconds, JSON as text: a job's payload exactly as it was given)."""
    out: list[Any] = []
    for f in fields:
        v = getattr(value, f.name)
        if f.name == "payload":  # NOT NULL: a None payload is the JSON text null
            text = getattr(value, "payload_json", None)
            out.append(text if text is not None else dumps(v))
        elif v is None:
            out.append(None)
        elif f.kind == "json":
            out.append(dumps(v))
        elif f.kind == "time":
            out.append(to_us(v))
        elif f.kind in ("status", "outcome"):
            out.append(v.value)
        elif f.kind == "bool":
            out.append(1 if v else 0)
        else:
            out.append(v)
    return tuple(out)


def _queue_settings(conn: sqlite3.Connection, namespace: str, queue: str) -> QueueSettings:
    row = conn.execute(q.SELECT_ONE_QUEUE_SETTINGS, (namespace, queue)).fetchone()
    if row is None:
        return QueueSettings(namespace, queue)
    paused, concurrency, rate_limit, rate_period, rate_burst, key_concurrency, rate_key = row
    return QueueSettings(
        namespace,
        queue,
        bool(paused),
        concurrency,
        rate_from_columns(rate_limit, rate_period, rate_burst),
        key_concurrency,
        rate_key,
    )


def _upsert_queue_settings(conn: sqlite3.Connection, settings: QueueSettings) -> None:
    rate = settings.rate_limit
    conn.execute(
        q.UPSERT_QUEUE_SETTINGS,
        (
            settings.namespace,
            settings.name,
            int(settings.paused),
            settings.concurrency,
            None if rate is None else rate.limit,
            None if rate is None else float(rate.period),
            None if rate is None else rate.burst,
            settings.key_concurrency,
            settings.rate_key,
        ),
    )
