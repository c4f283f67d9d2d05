"""The PostgreSQL store: the `Store` methods, each one SQL statement of queries.py (see the package doc). Built in
layers: pool.py (connections, `_run`), enqueue.py (storing jobs), handoff.py (enqueue that claims for an idle
worker), this module (everything else), with listen.py (wake-ups), params.py / copy.py / rows.py (encoding and
decoding) beside them."""

from __future__ import annotations

import asyncio
import json
import logging
import warnings
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import psycopg.errors
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from conveyor.codec import STORED_ATTEMPT_FIELDS, STORED_JOB_FIELDS, FieldSpec
from conveyor.errors import (
    Conflict,
    InvalidTransition,
    JobNotFound,
    NamespaceExists,
    NamespaceNotFound,
    RevisionConflict,
    SchemaTooNew,
    StoreUnavailable,
    ValidationError,
)
from conveyor.model import (
    DEFAULT_NAMESPACE,
    DEFAULT_NAMESPACE_SETTINGS,
    SCHEDULE_RUNS_KEPT,
    Attempt,
    Finish,
    Job,
    JobFilter,
    JobKey,
    JobSort,
    JobStatus,
    Leadership,
    Lease,
    LeaseState,
    Namespace,
    NewJob,
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
)
from conveyor.store.base import (
    HandlerTransaction,
    check_after,
    check_restore,
    filter_conditions,
    refuse_default,
    stats_from_counts,
)
from conveyor.store.feed import EventFeed
from conveyor.store.handoff import IdleClaims
from conveyor.store.postgres import events as pg_events
from conveyor.store.postgres import queries as sqlq
from conveyor.store.postgres.caller import caller_failed, unwrap_async
from conveyor.store.postgres.handoff import PgHandOff
from conveyor.store.postgres.listen import Listener
from conveyor.store.postgres.migrations import MIGRATIONS
from conveyor.store.postgres.params import arms_params, claim_params, dumps, finish_params, stale_batch
from conveyor.store.postgres.pool import DRIVER_ERRORS
from conveyor.store.postgres.rows import PAYLOAD_TEXT, claim_order, decode_attempt, decode_job
from conveyor.store.postgres.statements import Queries, events_channel
from conveyor.store.postgres.url import SYSTEM_SCHEMAS, read_keywords, read_url
from conveyor.store.urls import with_param
from conveyor.store.wake import LocalWaker

__all__ = ["CONFLICT_MESSAGE", "PostgresStore"]

logger = logging.getLogger("conveyor.store.postgres")

CONFLICT_MESSAGE = "Job queue execution conflict. Retry required."


class PostgresStore(PgHandOff):
    """Jobs in PostgreSQL. URL: `postgresql://user@host:port/db?schema=NAME` (default schema `conveyor`).

    Options (URL query parameters or keyword arguments, which win; url.py reads them strictly): `min_size`/`max_size`
    (pool, default 1/10), `timeout` (seconds to wait for a connection before StoreUnavailable, default 10), `listen`
    (LISTEN/NOTIFY wake-ups, default true), `fast_worker_commits` (default true: claims, finishes and heartbeats
    commit without waiting for the WAL flush — enqueues and every other change stay durable; see docs/postgres.md
    for what a database *crash* can then undo). Other URL parameters and keyword arguments must be libpq's (or
    psycopg connect()'s); anything else is refused.
    """

    scheme = "postgresql"
    supports_transactions = True
    supports_handoff = True

    def __init__(
        self,
        url: str,
        *,
        lazy: bool = False,
        min_size: int | None = None,
        max_size: int | None = None,
        timeout: float | None = None,
        listen: bool | None = None,
        fast_worker_commits: bool | None = None,
        **options: Any,
    ) -> None:
        self.url = url
        self.lazy = lazy
        self.conninfo, self.schema, values = read_url(url)
        given = {
            "min_size": min_size,
            "max_size": max_size,
            "timeout": timeout,
            "listen": listen,
            "fast_worker_commits": fast_worker_commits,
        }
        keywords, self.options = read_keywords(given, options)
        values.update(keywords)
        self._min_size: int = values.get("min_size", 1)
        self._max_size: int = values.get("max_size", 10)
        if self._min_size > self._max_size:
            raise ValidationError(
                f"PostgreSQL store option min_size={self._min_size} is above max_size={self._max_size}",
                field="min_size",
            )
        self._timeout: float = values.get("timeout", 10.0)
        self._listen_enabled: bool = values.get("listen", True)
        # claim/finish/heartbeat commit without waiting for the WAL flush unless asked (see docs/postgres.md)
        self._worker_commit = "off" if values.get("fast_worker_commits", True) else "on"
        self.channel = f"conveyor_{self.schema}"[:63]
        self._q = Queries(self.schema, self.channel)
        self._pool: AsyncConnectionPool | None = None
        self.waker = LocalWaker()
        self._listener = Listener(
            self.conninfo,
            self._connect_kwargs,
            self.channel,
            self._q.PING,
            self.waker,
            f"conveyor-listen-{self.schema}",
        )
        self._migrated = False
        self._migrate_lock: asyncio.Lock | None = None
        self._closed = False
        self._idle = IdleClaims()  # workers of this process waiting for jobs (hand-off in enqueue)
        self._handoffs: set[asyncio.Future[list[Job]]] = set()  # hand-off enqueues under way; close() waits
        #: Set while the LISTEN connection is up (tests and health checks can wait for it).
        self.listening = self._listener.listening

    def __repr__(self) -> str:
        return f"PostgresStore(schema={self.schema!r})"

    # ---- lifecycle ------------------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            return
        self._closed = False
        if not self.lazy:
            await self._probe()
        pool = AsyncConnectionPool(
            self.conninfo,
            kwargs=self._connect_kwargs(),
            min_size=self._min_size,
            max_size=self._max_size,
            timeout=self._timeout,
            open=False,
            name=f"conveyor-{self.schema}",
        )
        await pool.open(wait=False)
        self._pool = pool
        try:
            await self.migrate()
        except StoreUnavailable as exc:
            if not self.lazy:
                self._pool = None
                await pool.close()
                raise
            logger.warning("%s; opened lazily, will migrate and serve once the database is back", exc.message)
            warnings.warn(f"Conveyor opened lazily: {exc.message}", RuntimeWarning, stacklevel=2)
        except BaseException:  # SchemaTooNew, a cancellation: nothing may stay open
            self._pool = None
            await pool.close()
            raise
        if self._listen_enabled:
            self._listener.start()

    async def _probe(self) -> None:
        """One direct connection before the pool exists: a wrong port, host or password fails at once with one
        clear StoreUnavailable, instead of the pool retrying (and logging a warning per try) until its timeout.
        A lazy store (a worker that rides out an outage) skips it and lets the pool keep trying."""
        wait = max(2, int(min(self._timeout, 5)))  # libpq's connect_timeout: whole seconds, at least 2
        kwargs = self._connect_kwargs()
        if "connect_timeout" not in kwargs and "connect_timeout=" not in urlsplit(self.conninfo).query:
            kwargs["connect_timeout"] = wait
        try:
            conn = await psycopg.AsyncConnection.connect(self.conninfo, **kwargs)
        except psycopg.Error as exc:
            raise self.unavailable_error(exc) from None
        await conn.close()

    async def close(self) -> None:
        self._closed = True
        self._idle.clear()
        if self._handoffs:  # a hand-off under way may still deliver, or hand refused jobs back: it needs the pool
            await asyncio.wait(set(self._handoffs), timeout=self._timeout)
        await self._listener.stop()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        self.waker.notify()

    async def migrate(self) -> list[str]:
        if self._migrate_lock is None:
            self._migrate_lock = asyncio.Lock()
        async with self._migrate_lock:
            if self._migrated:
                return []
            pool = self._pool
            try:
                if pool is None:  # `conveyor migrate` on a store that is not open: one connection is enough
                    kwargs = {"connect_timeout": max(1, int(self._timeout)), **self._connect_kwargs()}
                    conn = await psycopg.AsyncConnection.connect(self.conninfo, **kwargs)
                    async with conn:
                        applied = await self._migrate_on(conn)
                else:
                    async with pool.connection(timeout=self._timeout) as conn:
                        applied = await self._migrate_on(conn)
            except DRIVER_ERRORS as exc:
                raise self.unavailable_error(exc) from None
            self._migrated = True
            return applied

    async def _migrate_on(self, conn: psycopg.AsyncConnection[Any]) -> list[str]:
        q = self._q
        applied: list[str] = []
        async with conn.transaction():
            # The lock comes first: CREATE SCHEMA IF NOT EXISTS itself races when two processes run it at once.
            await conn.execute(sqlq.MIGRATION_LOCK, {"schema": self.schema})
            await conn.execute(q.CREATE_SCHEMA)
            await conn.execute(q.CREATE_MIGRATIONS_TABLE)
            done = {row[0] for row in await (await conn.execute(q.APPLIED_MIGRATIONS)).fetchall()}
            known = MIGRATIONS[-1][0]
            if done and max(done) > known:  # raised inside the transaction: rolled back, nothing changed
                raise SchemaTooNew(f"PostgreSQL schema {self.schema!r}", str(max(done)), str(known))
            for version, name, text in MIGRATIONS:
                if version in done:
                    continue
                await conn.execute(text.replace("{schema}", q.schema))  # type: ignore[arg-type]
                await conn.execute(q.RECORD_MIGRATION, {"version": version, "name": name})
                applied.append(name)
            # Functions and the trigger are (re)created every time: cheap, and they always match this code.
            await conn.execute(q.CREATE_RUNNING_FUNCTION)
            await conn.execute(q.CREATE_RUNNING_KEYS_FUNCTION)
            await conn.execute(q.CREATE_RATE_KEY_FUNCTION)
            await conn.execute(q.CREATE_RATE_KEYS_FUNCTION)
            await conn.execute(q.CREATE_NOTIFY_TRIGGER)
        if applied:
            logger.info("applied migrations to schema %s: %s", self.schema, ", ".join(applied))
        return applied

    def known_migrations(self) -> list[str]:
        return [name for _, name, _ in MIGRATIONS]

    @classmethod
    def isolated_url(cls, base_url: str, label: str, workdir: Path) -> str:
        """The base URL with `schema=<label>`: a schema of its own on the same server and database."""
        return with_param(base_url, "schema", label)

    async def drop(self, *, allow_default: bool = False) -> None:
        """Close, then `DROP SCHEMA … CASCADE`: every table, index, function and trigger of this store. Refused for
        the default schema (`conveyor`) unless allow_default, and always for `public` and the system schemas."""
        if self.schema.lower() in SYSTEM_SCHEMAS or self.schema.lower().startswith("pg_"):
            raise ValidationError(f"refusing to drop the PostgreSQL schema {self.schema!r}: it is not Conveyor's own")
        refuse_default("the PostgreSQL schema", self.schema, allow_default)
        await self.close()
        try:
            kwargs = {"connect_timeout": max(1, int(self._timeout)), **self._connect_kwargs()}
            async with await psycopg.AsyncConnection.connect(self.conninfo, **kwargs) as conn:
                await conn.execute(self._q.DROP_SCHEMA)
        except DRIVER_ERRORS as exc:
            raise self.unavailable_error(exc) from None
        self._migrated = False

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute(self._q.PING))

    # ---- wake-ups -------------------------------------------------------------------------------------------

    async def wait_for_jobs(self, timeout: float) -> None:
        if self._closed:
            return
        await self.waker.wait(max(0.0, timeout))

    # ---- enqueue --------------------------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        if not jobs:
            return []
        unique = any(j.unique_hash is not None for j in jobs)  # no hand-off: _aenqueue_unique's several steps
        idle = self._idle.take(jobs) if self._idle and not unique else None
        if idle is not None:
            return await self._enqueue_handing_off(jobs, idle)
        out = await self._run_enqueue(jobs, lambda conn: self._aenqueue(conn, jobs))
        if any(not job.duplicate for job in out) or any(j.unique_replace for j in jobs):
            self.waker.notify()
        return out

    # ---- events across processes (store/postgres/events.py) ---------------------------------------------------

    async def publish_events(self, messages: Sequence[str]) -> None:
        if messages:
            await self._run(lambda conn: conn.execute(self._q.PUBLISH_EVENTS, (list(messages),)))

    async def subscribe_events(self) -> EventFeed:
        channel = events_channel(self.schema)
        return await pg_events.subscribe(
            self.conninfo, self._connect_kwargs, channel, self._q.PING, self.unavailable_error
        )

    def publish_events_on_connection(self, connection: Any, messages: Sequence[str]) -> None:
        if not messages:
            return
        try:
            with connection.cursor() as cur:
                cur.execute(self._q.PUBLISH_EVENTS, (list(messages),))
        except psycopg.Error as exc:
            raise caller_failed(exc) from None

    async def apublish_events_on_connection(self, connection: Any, messages: Sequence[str]) -> None:
        if not messages:
            return
        connection = await unwrap_async(connection)
        try:
            async with connection.cursor() as cur:
                await cur.execute(self._q.PUBLISH_EVENTS, (list(messages),))
        except psycopg.Error as exc:
            raise caller_failed(exc) from None

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
        if limit <= 0 or not queues or (tasks is not None and not tasks):
            return []
        params = claim_params(
            worker_id, queues, limit, lease, tasks, namespaces, exclude_namespaces, self._worker_commit
        )

        async def go(conn: psycopg.AsyncConnection[Any]) -> list[Job]:
            for _ in range(5):
                try:
                    if tasks is None:
                        rows = await self._without_jit(conn, self._q.CLAIM_ANY_TASK, params)
                    else:
                        rows = await (await conn.execute(self._q.CLAIM, params)).fetchall()
                except psycopg.errors.UniqueViolation:
                    # jobs_lane_running refused a second running job in a lane (a head changed under a racing
                    # claim): nothing was claimed; claim again with a fresh snapshot.
                    continue
                return sorted((decode_job(row) for row in rows), key=claim_order)
            return []

        return await self._run(go)

    async def _without_jit(
        self, conn: psycopg.AsyncConnection[Any], statement: str, params: dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        """Run a statement of the any-task variety (queries._ARMS_ANY_TASK: claims made by tools and tests) in a
        transaction of its own with JIT off: the planner's estimates for its recursive walks cross jit_above_cost,
        and compiling costs ~100 ms a call for a statement that runs in 1."""
        async with conn.transaction():
            async with conn.pipeline():
                await conn.execute(self._q.JIT_OFF)
                cur = await conn.execute(statement, params)  # type: ignore[arg-type]
            return await cur.fetchall()

    async def claim_user(self, namespace: str, user_id: str, worker_id: str, lease: timedelta) -> Job | None:
        params = {"namespace": namespace, "lane": f"u:{user_id}", "worker_id": worker_id, "lease": lease}

        async def go(conn: psycopg.AsyncConnection[Any]) -> Job | None:
            try:
                row = await (await conn.execute(self._q.CLAIM_USER, params)).fetchone()
            except psycopg.errors.UniqueViolation:
                raise Conflict(CONFLICT_MESSAGE) from None
            assert row is not None
            if row[0]:
                raise Conflict(CONFLICT_MESSAGE)
            if row[1] is not None:
                return decode_job(row[1:])
            # The head may have been claimed by someone else while we waited for its row lock.
            busy = await (await conn.execute(self._q.LANE_BUSY, params)).fetchone()
            if busy is not None and busy[0]:
                raise Conflict(CONFLICT_MESSAGE)
            return None

        return await self._run(go)

    async def heartbeat(self, leases: Sequence[Lease], lease: timedelta) -> list[LeaseState]:
        if not leases:
            return []
        batch = dumps([{"id": x.job_id, "token": x.token} for x in leases])
        params = {"batch": batch, "lease": lease, "synchronous_commit": self._worker_commit}

        async def go(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            return await (await conn.execute(self._q.HEARTBEAT, params)).fetchall()

        rows = await self._run(go)
        held = {(row[0], row[1]): bool(row[2]) for row in rows}
        return [
            LeaseState(x, held=(x.job_id, x.token) in held, cancel_requested=held.get((x.job_id, x.token), False))
            for x in leases
        ]

    async def mark_timed_out(self, lease: Lease) -> bool:
        params = {"id": lease.job_id, "token": lease.token}

        async def go(conn: psycopg.AsyncConnection[Any]) -> bool:
            return (await conn.execute(self._q.MARK_TIMED_OUT, params)).rowcount == 1

        return await self._run(go)

    async def next_due(
        self,
        queues: Sequence[str],
        *,
        tasks: Sequence[str] | None = None,
        namespaces: Sequence[str] | None = None,
        exclude_namespaces: Sequence[str] = (),
    ) -> float | None:
        if not queues or (tasks is not None and not tasks):
            return None
        params = {
            **arms_params(queues, tasks),
            "namespaces": None if namespaces is None else list(namespaces),
            "exclude": list(exclude_namespaces),
        }
        if tasks is None:
            rows = await self._run(lambda conn: self._without_jit(conn, self._q.NEXT_DUE_ANY_TASK, params))
            row = rows[0] if rows else None
        else:
            row = await self._one(self._q.NEXT_DUE, params)
        return None if row is None or row[0] is None else float(row[0])

    async def finish(self, finishes: Sequence[Finish]) -> list[bool]:
        if not finishes:
            return []
        params = finish_params(finishes, self._worker_commit)

        async def go(conn: psycopg.AsyncConnection[Any]) -> list[bool]:
            return await self.finish_on_connection(conn, params, finishes)

        out = await self._run(go)
        if any(ok and f.status is JobStatus.PENDING for ok, f in zip(out, finishes, strict=True)):
            self.waker.notify()
        return out

    async def finish_on_connection(
        self, conn: psycopg.AsyncConnection[Any], params: dict[str, Any], finishes: Sequence[Finish]
    ) -> list[bool]:
        """FINISH, then (only when a report with an attempt was refused) RECORD_STALE for those attempts."""
        rows = await (await conn.execute(self._q.FINISH, params)).fetchall()
        applied = {int(row[0]) for row in rows}
        out = [i + 1 in applied for i in range(len(finishes))]
        stale = [f for f, ok in zip(finishes, out, strict=True) if not ok and f.attempt is not None and not f.release]
        if stale:
            await conn.execute(self._q.RECORD_STALE, {"batch": stale_batch(stale)})
        return out

    @asynccontextmanager
    async def handler_transaction(self, job: Job) -> AsyncIterator[HandlerTransaction]:
        """A pooled connection in an open transaction for a transactional handler.

        The handler writes through `tx.connection`; `tx.finish(...)` applies the job's completion in the same
        transaction (fenced: a stale lease rolls everything back and returns False) and commits. A clean exit
        without finish commits the writes; an exception rolls them back. The connection is held for the whole
        handler, so size the pool above the number of transactional handlers that run at once."""
        pool = await self._ready()
        try:
            conn = await pool.getconn(timeout=self._timeout)
        except DRIVER_ERRORS as exc:
            raise self.unavailable_error(exc) from None
        tx = _PgHandlerTransaction(self, conn)
        try:
            try:
                await conn.set_autocommit(False)
            except DRIVER_ERRORS as exc:
                raise self.unavailable_error(exc) from None
            try:
                yield tx
            except BaseException:
                if not tx.done:
                    try:
                        await conn.rollback()
                    except DRIVER_ERRORS:
                        pass
                raise
            if not tx.done:
                try:
                    await conn.commit()
                except DRIVER_ERRORS as exc:
                    raise self.unavailable_error(exc) from None
        finally:
            try:
                if not conn.closed:
                    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                        await conn.rollback()
                    await conn.set_autocommit(True)
            except DRIVER_ERRORS:
                pass
            await pool.putconn(conn)

    # ---- maintenance ----------------------------------------------------------------------------------------

    async def rescue(self, now: datetime | None = None, limit: int = 1000) -> list[Job]:
        params = {"now": now, "limit": max(0, limit)}

        async def go(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            return await (await conn.execute(self._q.RESCUE, params)).fetchall()

        jobs = [decode_job(row) for row in await self._run(go)]
        jobs.sort(key=lambda j: j.id)
        if any(j.status is JobStatus.PENDING for j in jobs):
            self.waker.notify()
        return jobs

    async def next_lease_expiry(self) -> float | None:
        row = await self._one(self._q.NEXT_LEASE_EXPIRY, {})
        return None if row is None or row[0] is None else float(row[0])

    async def prune(
        self, completed_before: datetime, failed_before: datetime, limit: int = 10_000, *, namespace: str | None = None
    ) -> int:
        params = {
            "completed_before": completed_before,
            "failed_before": failed_before,
            "limit": max(0, limit),
            "namespace": namespace,
        }

        async def go(conn: psycopg.AsyncConnection[Any]) -> int:
            row = await (await conn.execute(self._q.PRUNE, params)).fetchone()
            return int(row[0]) if row else 0

        return await self._run(go)

    # ---- inspection and management --------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        row = await self._one(self._q.GET_JOB, {"id": job_id})
        return None if row is None else decode_job(row, payload_json=row[PAYLOAD_TEXT])

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
        page_params = {**params, "limit": limit_ + 1, "offset": offset}

        async def go(conn: psycopg.AsyncConnection[Any]) -> Page[Job]:
            total = await (await conn.execute(count_sql, params)).fetchone()  # type: ignore[arg-type]
            rows = await (await conn.execute(page_sql, page_params)).fetchall()  # type: ignore[arg-type]
            items = [decode_job(r, payload_json=r[PAYLOAD_TEXT]) for r in rows[:limit_]]
            more = len(rows) > limit_ and bool(items)
            return Page(
                items=items,
                total=int(total[0]) if total else 0,
                limit=limit,
                offset=offset,
                next=JobKey.of(items[-1], sort) if more else None,
            )

        return await self._run(go)

    async def attempts(self, job_id: str) -> list[Attempt]:
        return [decode_attempt(r) for r in await self._all(self._q.ATTEMPTS, {"id": job_id})]

    async def stats(self, namespace: str | None = None, queue: str | None = None, task: str | None = None) -> Stats:
        rows = await self._all(self._q.STATS, {"namespace": namespace, "queue": queue, "task": task})
        counts = {row[0]: int(row[1]) for row in rows}
        scheduled = sum(int(row[2]) for row in rows)
        return stats_from_counts(counts, scheduled)

    async def _status_of(self, job_id: str) -> str:
        row = await self._one(self._q.JOB_STATUS, {"id": job_id})
        if row is None:
            raise JobNotFound(job_id)
        return str(row[0])

    async def cancel(self, job_id: str) -> Job:
        row = await self._one(self._q.CANCEL, {"id": job_id})
        if row is not None:
            return decode_job(row)
        status = await self._status_of(job_id)
        raise InvalidTransition(
            f"Job cannot be cancelled (must be in 'pending' or 'processing' status; it is {status!r})"
        )

    async def requeue(self, job_id: str) -> Job:
        try:
            row = await self._one(self._q.REQUEUE, {"id": job_id})
        except psycopg.errors.UniqueViolation:
            holder = await self._one(self._q.ACTIVE_UNIQUE_HOLDER, {"id": job_id})
            job = await self.get_job(job_id)
            raise InvalidTransition(
                f"Job cannot be requeued: active job {holder[0] if holder else '?'} holds its unique key "
                f"{job.unique_key if job else None!r}"
            ) from None
        if row is None:
            await self._status_of(job_id)
            raise InvalidTransition("Job cannot be requeued (must be in 'failed' status)")
        self.waker.notify()
        return decode_job(row)

    async def delete(self, job_id: str, *, force: bool = False) -> Job:
        row = await self._one(self._q.DELETE, {"id": job_id, "force": force})
        if row is not None:
            return decode_job(row)
        await self._status_of(job_id)
        raise InvalidTransition("Job cannot be deleted (must be in 'pending' or 'failed' status)")

    async def run_now(self, job_id: str) -> Job:
        row = await self._one(self._q.RUN_NOW, {"id": job_id})
        if row is None:
            status = await self._status_of(job_id)
            raise InvalidTransition(f"Job cannot be run now (must be in 'pending' status; it is {status!r})")
        self.waker.notify()
        return decode_job(row)

    def list_statements(
        self, filter: JobFilter, after: JobKey | None, sort: JobSort
    ) -> tuple[str, str, dict[str, Any]]:
        """`list_jobs`'s count and page statements with their parameters (but limit and offset): what it runs,
        and what the EXPLAIN tests check uses an index."""
        conditions, params = filter_conditions(filter, sqlq.LIST_FILTERS)
        count_sql = self._q.COUNT_JOBS.replace("{where}", sqlq.list_where(conditions))
        col = sort.field
        if after is not None:
            if after.value is None:
                seek = sqlq.KEYSET_AFTER_NULL[sort.descending]
            elif col == "finished_at":
                seek = sqlq.KEYSET_AFTER_NULLABLE[sort.descending]
            else:
                seek = sqlq.KEYSET_AFTER[sort.descending]
            conditions = [*conditions, seek.replace("{col}", col)]
            params.update(after_value=after.value, after_id=after.id)
        page_sql = self._q.LIST_JOBS.replace("{where}", sqlq.list_where(conditions)).replace(
            "{order}",
            (sqlq.ORDER_NULLABLE if col == "finished_at" else sqlq.ORDER)[sort.descending].replace("{col}", col),
        )
        return count_sql, page_sql, params

    async def restore_jobs(self, jobs: Sequence[Job], attempts: Sequence[Attempt] = ()) -> list[Job]:
        records = check_restore(jobs, attempts)
        if not records:
            return []
        job_rows = [(*_stored_values(j, STORED_JOB_FIELDS), j.serial_key) for j in records]
        attempt_rows = [
            _stored_values(replace(a, lease_token=a.lease_token or f"try-{a.try_number}"), STORED_ATTEMPT_FIELDS)
            for a in attempts
        ]
        q = self._q

        async def go(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.transaction():
                taken = await (await conn.execute(q.RESTORE_TAKEN, {"ids": [j.id for j in records]})).fetchall()
                if taken:
                    raise ValidationError(
                        f"a job with one of these ids already exists: {', '.join(r[0] for r in taken)}", field="id"
                    )
                for j in records:
                    if j.unique_key is not None and not j.status.is_final:
                        holder = await (
                            await conn.execute(q.RESTORE_UNIQUE_HOLDER, (j.namespace, j.unique_key))
                        ).fetchone()
                        if holder is not None:
                            raise ValidationError(
                                f"job {j.id}: active job {holder[0]} holds its unique key {j.unique_key!r}",
                                field="unique_key",
                            )
                async with conn.cursor() as cur:
                    try:
                        await cur.executemany(q.RESTORE_JOB, job_rows)
                    except psycopg.errors.UniqueViolation as exc:  # a concurrent enqueue took an id or a key
                        raise ValidationError(f"a job id or unique key is taken meanwhile: {exc}", field="id") from None
                    if attempt_rows:
                        await cur.executemany(q.RESTORE_ATTEMPT, attempt_rows)

        await self._run(go)
        if any(j.status is JobStatus.PENDING for j in records):
            self.waker.notify()
        return [j for j in [await self.get_job(j.id) for j in records] if j is not None]

    async def delete_user_data(self, user_id: str) -> int:
        row = await self._one(self._q.DELETE_USER_DATA, {"user_id": user_id})
        self.waker.notify()  # a group lane's next job may have become claimable
        return int(row[0]) if row else 0

    async def has_pending_job(self, namespace: str, user_id: str) -> bool:
        row = await self._one(self._q.HAS_PENDING_JOB, {"namespace": namespace, "lane": f"u:{user_id}"})
        return bool(row and row[0])

    # ---- namespaces ------------------------------------------------------------------------------------------

    async def create_namespace(self, namespace: Namespace) -> Namespace:
        if namespace.name == DEFAULT_NAMESPACE:  # exists whether stored or not
            raise NamespaceExists(namespace.name)
        row = await self._one(self._q.CREATE_NAMESPACE, {"name": namespace.name, "doc": Jsonb(namespace.to_dict())})
        if row is None:
            raise NamespaceExists(namespace.name)
        return Namespace.from_dict(row[0])

    async def put_namespace(self, namespace: Namespace, *, expected_revision: int | None = None) -> Namespace:
        doc = Jsonb(namespace.to_dict())
        if expected_revision is None:
            row = await self._one(self._q.PUT_NAMESPACE, {"name": namespace.name, "doc": doc})
            assert row is not None
            return Namespace.from_dict(row[0])
        params = {"name": namespace.name, "doc": doc, "expected": expected_revision}
        row = await self._one(self._q.UPDATE_NAMESPACE_IF_REVISION, params)
        if row is None and namespace.name == DEFAULT_NAMESPACE and expected_revision == 0:
            row = await self._one(self._q.INSERT_DEFAULT_FIRST, params)  # never stored: its first write
        if row is not None:
            return Namespace.from_dict(row[0])
        current = await self.get_namespace(namespace.name)
        if current is None:
            raise NamespaceNotFound(namespace.name)
        raise RevisionConflict(namespace.name, expected_revision, current.revision)

    async def get_namespace(self, name: str) -> Namespace | None:
        row = await self._one(self._q.GET_NAMESPACE, {"name": name})
        if row is None:
            return DEFAULT_NAMESPACE_SETTINGS if name == DEFAULT_NAMESPACE else None
        return Namespace.from_dict(row[0])

    async def list_namespaces(self) -> list[Namespace]:
        found = {ns.name: ns for ns in (Namespace.from_dict(r[0]) for r in await self._all(self._q.LIST_NAMESPACES))}
        found.setdefault(DEFAULT_NAMESPACE, DEFAULT_NAMESPACE_SETTINGS)
        return [found[name] for name in sorted(found)]

    async def delete_namespace(self, name: str) -> bool:
        if name == DEFAULT_NAMESPACE:
            raise ValidationError("the namespace 'default' always exists and cannot be deleted", field="name")

        row = await self._one(self._q.DELETE_NAMESPACE, {"name": name})
        return bool(row and row[0])

    # ---- queues ----------------------------------------------------------------------------------------------

    async def put_queue_settings(self, settings: QueueSettings) -> QueueSettings:
        check_queue_settings(settings)
        params = _queue_settings_params(settings)
        await self._run(lambda conn: conn.execute(self._q.PUT_QUEUE_SETTINGS, params))
        self.waker.notify()  # a resumed queue or a raised limit may free jobs
        return settings

    async def update_queue_settings(self, namespace: str, queue: str, change: QueueChange) -> QueueSettings:
        check_queue_settings(change.apply(QueueSettings(namespace, queue)))
        key = {"namespace": namespace, "queue": queue}

        async def go(conn: psycopg.AsyncConnection[Any]) -> QueueSettings:
            async with conn.transaction():
                await conn.execute(self._q.ENSURE_QUEUE_SETTINGS, key)
                row = await (await conn.execute(self._q.LOCK_QUEUE_SETTINGS, key)).fetchone()
                assert row is not None
                settings = change.apply(_queue_settings_row(namespace, queue, row))
                await conn.execute(self._q.PUT_QUEUE_SETTINGS, _queue_settings_params(settings))
            return settings

        settings = await self._run(go)
        self.waker.notify()  # a resumed queue or a raised limit may free jobs
        return settings

    async def get_queue_settings(self, namespace: str, queue: str) -> QueueSettings:
        row = await self._one(self._q.GET_QUEUE_SETTINGS, {"namespace": namespace, "queue": queue})
        return QueueSettings(namespace, queue) if row is None else _queue_settings_row(namespace, queue, row)

    async def list_queues(self, namespace: str | None = None) -> list[QueueInfo]:
        rows = await self._all(self._q.LIST_QUEUES, {"namespace": namespace})
        counts: dict[tuple[str, str], dict[str, int]] = {}
        settings: dict[tuple[str, str], tuple[bool, int | None, RateLimit | None, int | None, str | None]] = {}
        for row in rows:
            ns, queue, status, n, scheduled, paused, concurrency, rate_limit, rate_period, rate_burst, kc, rk = row
            c = counts.setdefault((ns, queue), {s.value: 0 for s in JobStatus} | {"scheduled": 0})
            if status is not None:
                c[status] += int(n)
                c["scheduled"] += int(scheduled)
            settings[(ns, queue)] = (
                bool(paused),
                concurrency,
                rate_from_columns(rate_limit, rate_period, rate_burst),
                kc,
                rk,
            )
        return [
            QueueInfo(
                namespace=k[0],
                name=k[1],
                paused=settings[k][0],
                counts=counts[k],
                concurrency=settings[k][1],
                rate_limit=settings[k][2],
                key_concurrency=settings[k][3],
                rate_key=settings[k][4],
            )
            for k in sorted(counts)
        ]

    async def rate_state(self, namespace: str, queue: str, limit: int = 10) -> RateState:
        params = {"namespace": namespace, "queue": queue, "limit": max(0, limit)}
        row = await self._one(self._q.RATE_STATE, params)
        assert row is not None
        now, tat, count, keys = row
        return RateState(int(now), None if tat is None else int(tat), int(count), [(k, int(t)) for k, t in keys])

    # ---- workers ---------------------------------------------------------------------------------------------

    async def register_worker(self, info: WorkerInfo) -> None:
        params = {
            "id": info.id,
            "hostname": info.hostname,
            "pid": info.pid,
            "queues": list(info.queues),
            "concurrency": info.concurrency,
            "started_at": info.started_at,
            "heartbeat_at": info.heartbeat_at,
            "expires_at": info.expires_at,
            "running": list(info.running),
            "version": info.version,
            "tasks": list(info.tasks),
        }
        await self._run(lambda conn: conn.execute(self._q.REGISTER_WORKER, params))

    async def unregister_worker(self, worker_id: str) -> None:
        await self._run(lambda conn: conn.execute(self._q.UNREGISTER_WORKER, {"id": worker_id}))

    async def list_workers(self) -> list[WorkerInfo]:
        rows = await self._all(self._q.LIST_WORKERS)
        return [
            WorkerInfo(
                id=r[0],
                hostname=r[1],
                pid=r[2],
                queues=list(r[3]),
                concurrency=r[4],
                started_at=r[5],
                heartbeat_at=r[6],
                expires_at=r[7],
                running=list(r[8]),
                version=r[9],
                tasks=list(r[10]),
            )
            for r in rows
        ]

    # ---- key-value -------------------------------------------------------------------------------------------

    async def elect(self, name: str, candidate: str, ttl: float) -> Leadership:
        params = {"name": name, "holder": candidate, "ttl": timedelta(seconds=ttl)}
        row = await self._one(self._q.ELECT, params)
        if row is None:
            # Another candidate created the row after this statement's snapshot was taken (a race for a vacant
            # role): ON CONFLICT left it alone, and the fallback SELECT could not see it yet. Read it now.
            current = await self._one(self._q.LEADER, {"name": name})
            if current is None:  # pragma: no cover - the row exists once any INSERT ran
                return Leadership(name, "", 0, 0.0, held=False)
            return Leadership(name, current[0], int(current[1]), float(current[2]), held=False)
        holder, term, expires_in, took = row
        return Leadership(name, holder, int(term), float(expires_in), held=bool(took) and holder == candidate)

    async def resign(self, name: str, candidate: str) -> None:
        async def go(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(self._q.RESIGN, {"name": name, "holder": candidate})

        await self._run(go)

    async def leaders(self) -> list[Leadership]:
        rows = await self._all(self._q.LEADERS)
        return [Leadership(n, h, int(t), float(e)) for n, h, t, e in rows]

    async def kv_get(self, key: str) -> str | None:
        row = await self._one(self._q.KV_GET, {"key": key})
        return None if row is None else str(row[0])

    async def kv_set(self, key: str, value: str, *, ttl: float | None = None, only_if_absent: bool = False) -> bool:
        query = self._q.KV_SET_IF_ABSENT if only_if_absent else self._q.KV_SET
        row = await self._one(query, {"key": key, "value": value, "ttl": ttl})
        return row is not None

    async def kv_setdefault(self, key: str, value: str, *, ttl: float | None = None) -> tuple[str, bool]:
        params = {"key": key, "value": value, "ttl": ttl}
        while True:  # no row: another writer's row is newer than this statement's snapshot (see KV_SETDEFAULT)
            row = await self._one(self._q.KV_SETDEFAULT, params)
            if row is not None:
                return str(row[0]), bool(row[1])

    async def kv_delete(self, key: str) -> None:
        await self._run(lambda conn: conn.execute(self._q.KV_DELETE, {"key": key}))

    # ---- cron schedules --------------------------------------------------------------------------------------

    async def put_schedule(self, record: ScheduleRecord, *, create: bool) -> bool:
        query = self._q.SCHEDULE_INSERT if create else self._q.SCHEDULE_UPDATE
        return await self._one(query, {"name": record.name, "doc": record.to_doc()}) is not None

    async def get_schedule(self, name: str) -> ScheduleRecord | None:
        row = await self._one(self._q.SCHEDULE_GET, {"name": name})
        return None if row is None else ScheduleRecord.from_doc(row[0])

    async def list_schedules(self) -> list[ScheduleRecord]:
        return [ScheduleRecord.from_doc(row[0]) for row in await self._all(self._q.SCHEDULE_LIST)]

    async def delete_schedule(self, name: str) -> bool:
        return await self._one(self._q.SCHEDULE_DELETE, {"name": name}) is not None

    async def record_schedule_run(self, run: ScheduleRun, *, keep: int = SCHEDULE_RUNS_KEPT) -> bool:
        params = {
            "schedule": run.schedule,
            "occurrence": occurrence_us(run.occurrence),
            "doc": run.to_doc(),
            "keep": max(1, keep),
        }

        async def go(conn: psycopg.AsyncConnection[Any]) -> bool:
            async with conn.transaction():
                if await (await conn.execute(self._q.SCHEDULE_RUN_INSERT, params)).fetchone() is None:
                    return False
                await conn.execute(self._q.SCHEDULE_RUNS_TRIM, params)
                return True

        return await self._run(go)

    async def schedule_runs(self, name: str, limit: int = 20) -> list[ScheduleRun]:
        rows = await self._all(self._q.SCHEDULE_RUNS, {"name": name, "limit": max(0, limit)})
        return [ScheduleRun.from_doc(row[0]) for row in rows]


class _PgHandlerTransaction(HandlerTransaction):
    """The open transaction of a transactional handler; `finish` completes the job inside it and commits."""

    def __init__(self, store: PostgresStore, connection: psycopg.AsyncConnection[Any]) -> None:
        self.connection = connection
        self._store = store
        self.done = False

    async def finish(self, finish: Finish) -> bool:
        if self.done:
            raise ValidationError("this handler transaction has already been finished", field="finish")
        conn: psycopg.AsyncConnection[Any] = self.connection
        self.done = True
        try:
            (applied,) = await self._store.finish_on_connection(conn, finish_params([finish], "on"), [finish])
            if applied:
                await conn.commit()
            else:  # the lease was lost: the handler's writes must not outlive it (exactly-once effects)
                await conn.rollback()
        except DRIVER_ERRORS as exc:
            raise self._store.unavailable_error(exc) from None
        if applied and finish.status is JobStatus.PENDING:
            self._store.waker.notify()
        if not applied and finish.attempt is not None:
            # The rollback took the try's LOST record with it; keep it, outside the handler's transaction.
            try:
                await self._store.finish([finish])
            except StoreUnavailable as exc:
                logger.warning("job %s: could not record its refused try (%s)", finish.lease.job_id, exc.message)
        return applied


def _stored_values(value: Any, fields: Sequence[FieldSpec]) -> tuple[Any, ...]:
    """A Job's or Attempt's stored fields as statement parameters, in codec order (json kinds as their text: a
    job's payload exactly as it was given)."""
    out: list[Any] = []
    for f in fields:
        v = getattr(value, f.name)
        if f.kind == "json":
            if f.name == "payload" and getattr(value, "payload_json", None) is not None:
                out.append(value.payload_json)
            else:
                out.append(None if v is None else json.dumps(v, separators=(",", ":")))
        elif f.kind in ("status", "outcome"):
            out.append(v.value)
        else:
            out.append(v)
    return tuple(out)


def _queue_settings_row(namespace: str, queue: str, row: Sequence[Any]) -> QueueSettings:
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


def _queue_settings_params(settings: QueueSettings) -> dict[str, Any]:
    rate = settings.rate_limit
    return {
        "namespace": settings.namespace,
        "queue": settings.name,
        "paused": settings.paused,
        "concurrency": settings.concurrency,
        "rate_limit": None if rate is None else rate.limit,
        "rate_period": None if rate is None else float(rate.period),
        "rate_burst": None if rate is None else rate.burst,
        "rate_interval": None if rate is None else rate.interval_us,
        "rate_tolerance": None if rate is None else rate.tolerance_us,
        "key_concurrency": settings.key_concurrency,
        "rate_key": settings.rate_key,
    }
