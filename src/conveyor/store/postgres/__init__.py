"""The PostgreSQL store: many API and worker processes on many hosts sharing one database.

Built on psycopg 3 (async) with a `psycopg_pool` pool of autocommit connections. Every state change is one SQL
statement (see queries.py), so it is atomic without explicit transactions and costs one round trip:

* claims take a batch with `FOR UPDATE SKIP LOCKED` from a partial index over pending rows, so workers never
  block each other and finished rows never slow them down;
* finishes and heartbeats of many jobs go in one statement each (arrays unnested server-side);
* enqueue inserts a whole batch from arrays; a statement trigger sends NOTIFY, which PostgreSQL delivers when the
  inserting transaction commits — also when that transaction is the caller's own (transactional enqueue);
* one dedicated connection LISTENs and wakes this process's idle workers; it reconnects by itself. Polling
  (the worker's `wait_for_jobs` timeout) stays as the fallback;
* hand-off: an enqueue made while a worker of this process waits (`offer_idle`) claims for that worker in its own
  transaction, in the same round trip, and hands it the jobs (see `_enqueue_handing_off`).

Outages: driver errors become `StoreUnavailable`; broken pooled connections are checked and replaced, and an
operation that failed on a dead connection is retried once on a fresh one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from conveyor.codec import STORED_ATTEMPT_FIELDS, STORED_JOB_FIELDS, row_decoder
from conveyor.errors import (
    REQUIRE_TRANSACTION_HINT,
    CallerConnectionError,
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
    not_applied,
    utcnow,
)
from conveyor.store.base import DEFAULT_SPACE, HandlerTransaction, IdleClaim, Store, refuse_default
from conveyor.store.caller import check_sqlalchemy
from conveyor.store.handoff import IdleClaims, covers, hand_over
from conveyor.store.postgres import queries as sqlq
from conveyor.store.postgres.migrations import MIGRATIONS
from conveyor.store.urls import with_param
from conveyor.store.wake import LocalWaker

__all__ = ["DEFAULT_SCHEMA", "PostgresStore"]

logger = logging.getLogger("conveyor.store.postgres")

DEFAULT_SCHEMA = DEFAULT_SPACE
_SYSTEM_SCHEMAS = ("public", "information_schema")  # never dropped, whatever the caller says (nor pg_*)
CONFLICT_MESSAGE = "Job queue execution conflict. Retry required."
_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_DRIVER_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, PoolClosed)
T = TypeVar("T")


def parse_url(url: str) -> tuple[str, str]:
    """Split a store URL into (libpq conninfo URL without `schema=`, schema name)."""
    parts = urlsplit(url)
    schema = DEFAULT_SCHEMA
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "schema":
            schema = value
        else:
            rest.append((key, value))
    if not _SCHEMA_RE.match(schema):
        raise ValidationError(
            f"schema must be a plain identifier (letters, digits, '_'; at most 63 characters), got {schema!r}",
            field="schema",
        )
    scheme = parts.scheme.split("+", 1)[0]  # accept SQLAlchemy-style postgresql+psycopg:// too
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(rest, quote_via=quote), parts.fragment)), schema


class PostgresStore(Store):
    """Jobs in PostgreSQL. URL: `postgresql://user@host:port/db?schema=NAME` (default schema `conveyor`).

    Options: `min_size`/`max_size` (pool, default 1/10), `timeout` (seconds to wait for a connection before
    StoreUnavailable, default 10), `listen` (LISTEN/NOTIFY wake-ups, default True), `fast_worker_commits`
    (default True: claims, finishes and heartbeats commit without waiting for the WAL flush — enqueues and every
    other change stay durable; see docs/postgres.md for what a database *crash* can then undo).
    """

    scheme = "postgresql"
    supports_transactions = True
    supports_handoff = True

    def __init__(
        self,
        url: str,
        *,
        lazy: bool = False,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 10.0,
        listen: bool = True,
        fast_worker_commits: bool = True,
        **options: Any,
    ) -> None:
        self.url = url
        self.lazy = lazy
        self.conninfo, self.schema = parse_url(url)
        self.options = options
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = timeout
        self._listen_enabled = listen
        # claim/finish/heartbeat commit without waiting for the WAL flush unless asked (see docs/postgres.md)
        self._worker_commit = "off" if fast_worker_commits else "on"
        self.channel = f"conveyor_{self.schema}"[:63]
        self._q = _Queries(self.schema, self.channel)
        self._pool: AsyncConnectionPool | None = None
        self._listener: asyncio.Task[None] | None = None
        self._waker = LocalWaker()
        self._migrated = False
        self._migrate_lock: asyncio.Lock | None = None
        self._closed = False
        self._idle = IdleClaims()  # workers of this process waiting for jobs (hand-off in enqueue)
        self._handoffs: set[asyncio.Future[list[Job]]] = set()  # hand-off enqueues under way; close() waits
        #: Set while the LISTEN connection is up (tests and health checks can wait for it).
        self.listening = asyncio.Event()

    def __repr__(self) -> str:
        return f"PostgresStore(schema={self.schema!r})"

    # ---- connections ----------------------------------------------------------------------------------------

    def _connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"autocommit": True}
        if "options=" not in urlsplit(self.conninfo).query:
            kwargs["options"] = "-c TimeZone=UTC"
        kwargs.update(self.options)
        return kwargs

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StoreUnavailable(
            f"PostgreSQL is unavailable ({detail}). Conveyor reconnects by itself; retry the call later."
        )

    async def _ready(self) -> AsyncConnectionPool:
        """The pool, with migrations applied (a lazily opened store migrates on first use)."""
        pool = self._pool
        if pool is None:
            if self._closed:
                raise StoreUnavailable("the PostgreSQL store is closed")
            await self.open()
            pool = self._pool
            assert pool is not None
        if not self._migrated:
            await self.migrate()
        return pool

    async def _run(self, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]], *, retry: bool = True) -> T:
        """Run `fn` on a pooled connection, mapping driver errors to StoreUnavailable.

        A pooled connection may have died since it was last used (a database restart): the first failure makes
        the pool check its idle connections, and the call is retried once on a fresh connection."""
        pool = await self._ready()
        for attempt in (1, 2):
            try:
                async with pool.connection(timeout=self._timeout) as conn:
                    return await fn(conn)
            except _DRIVER_ERRORS as exc:
                if attempt == 1 and retry and not isinstance(exc, PoolTimeout | PoolClosed):
                    logger.warning("PostgreSQL connection lost (%s); checking the pool and retrying once", exc)
                    try:
                        await pool.check()
                    except Exception:  # the check itself may fail while the server is down
                        pass
                    continue
                raise self._unavailable(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- lifecycle ------------------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            return
        self._closed = False
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
        if self._listen_enabled and self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name=f"conveyor-listen-{self.schema}")

    async def close(self) -> None:
        self._closed = True
        self._idle.clear()
        if self._handoffs:  # a hand-off under way may still deliver, or hand refused jobs back: it needs the pool
            await asyncio.wait(set(self._handoffs), timeout=self._timeout)
        self.listening.clear()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            try:
                await listener
            except (asyncio.CancelledError, Exception):
                pass
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        self._waker.notify()

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
            except _DRIVER_ERRORS as exc:
                raise self._unavailable(exc) from None
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
        if self.schema.lower() in _SYSTEM_SCHEMAS or self.schema.lower().startswith("pg_"):
            raise ValidationError(f"refusing to drop the PostgreSQL schema {self.schema!r}: it is not Conveyor's own")
        refuse_default("the PostgreSQL schema", self.schema, allow_default)
        await self.close()
        try:
            kwargs = {"connect_timeout": max(1, int(self._timeout)), **self._connect_kwargs()}
            async with await psycopg.AsyncConnection.connect(self.conninfo, **kwargs) as conn:
                await conn.execute(self._q.DROP_SCHEMA)
        except _DRIVER_ERRORS as exc:
            raise self._unavailable(exc) from None
        self._migrated = False

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute(self._q.PING))

    # ---- wake-ups -------------------------------------------------------------------------------------------

    async def _listen(self) -> None:
        """Keep one connection LISTENing; wake local waiters on every notification. Reconnects by itself."""
        delay = 0.1
        down = False
        while not self._closed:
            try:
                conn = await psycopg.AsyncConnection.connect(self.conninfo, **self._connect_kwargs())
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.listening.set()
                    if down:
                        logger.warning("LISTEN connection to PostgreSQL restored")
                        self._waker.notify()  # jobs may have arrived while nobody listened
                    down = False
                    delay = 0.1
                    while not self._closed:
                        async for _ in conn.notifies(timeout=15.0):
                            self._waker.notify()
                        await conn.execute(self._q.PING)  # a quiet spell: make sure the link is alive
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.listening.clear()
                if self._closed:
                    return
                if not down:
                    logger.warning("LISTEN connection to PostgreSQL lost (%s); reconnecting, polling meanwhile", exc)
                down = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def wait_for_jobs(self, timeout: float) -> None:
        if self._closed:
            return
        await self._waker.wait(max(0.0, timeout))

    # ---- enqueue --------------------------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        if not jobs:
            return []
        idle = self._idle.take(jobs) if self._idle else None
        if idle is not None:
            return await self._enqueue_handing_off(jobs, idle)
        out = await self._run_enqueue(jobs, lambda conn: self._aenqueue(conn, jobs))
        if any(not job.duplicate for job in out):
            self._waker.notify()
        return out

    async def _run_enqueue(
        self, jobs: Sequence[NewJob], first: Callable[[psycopg.AsyncConnection[Any]], Awaitable[list[Job]]]
    ) -> list[Job]:
        """Run `first` (which stores `jobs`) on a pooled connection; a retry after a lost connection stores what
        the first try did not (`_enqueue_again`)."""
        tries = 0

        async def go(conn: psycopg.AsyncConnection[Any]) -> list[Job]:
            nonlocal tries
            tries += 1
            return await (first(conn) if tries == 1 else self._enqueue_again(conn, jobs))

        return await self._run(go)

    async def _enqueue_again(self, conn: psycopg.AsyncConnection[Any], jobs: Sequence[NewJob]) -> list[Job]:
        """A retry after a lost connection: the first try may have committed before its answer was lost. Jobs
        already stored under their id with the same task and creation instant are ours; store the rest."""
        rows = await (await conn.execute(self._q.JOBS_BY_ID, {"ids": [j.id for j in jobs]})).fetchall()
        stored = {row[0]: _job(row) for row in rows}
        ours = {
            j.id for j in jobs if j.id in stored and (stored[j.id].task, stored[j.id].created) == (j.task, j.created)
        }
        rest = [j for j in jobs if j.id not in ours]
        done = {job.id: job for job in await self._aenqueue(conn, rest)} if rest else {}
        return [j.to_job() if j.id in ours else done[j.id] for j in jobs]

    # ---- hand-off -------------------------------------------------------------------------------------------

    def offer_idle(self, claim: IdleClaim) -> None:
        if not self._closed:
            self._idle.offer(claim)

    def withdraw_idle(self, claim: IdleClaim) -> None:
        self._idle.withdraw(claim)

    async def _enqueue_handing_off(self, jobs: Sequence[NewJob], idle: IdleClaim) -> list[Job]:
        """`enqueue` for a batch an idle worker of this process serves: insert, claim for the worker by the rules
        of `claim`, commit once (as durably as any enqueue), then deliver the claimed jobs to it.

        The work runs in a task of its own that the caller awaits through `shield`: a caller cancelled after the
        commit went out (a timeout, a client that hung up) must not strand the claimed jobs in `processing` — the
        task still delivers them. Only when that task itself is cancelled (the event loop shutting down) or the
        connection dies mid-commit can it stay unknown whether the commit happened; then the claimed jobs, if any,
        are never delivered, their lease expires and the rescuer gives them back (a LOST attempt)."""
        task = asyncio.ensure_future(self._hand_off(jobs, idle))
        self._handoffs.add(task)
        task.add_done_callback(self._hand_off_done)
        return await asyncio.shield(task)

    def _hand_off_done(self, task: asyncio.Future[list[Job]]) -> None:
        self._handoffs.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller cancelled meanwhile no longer awaits it (nothing to log twice)

    async def _hand_off(self, jobs: Sequence[NewJob], idle: IdleClaim) -> list[Job]:
        tries = 0

        async def go(conn: psycopg.AsyncConnection[Any]) -> _HandOff:
            nonlocal tries
            tries += 1
            if tries == 1:
                return await self._enqueue_and_claim(conn, jobs, idle)
            # A retry after a lost connection: if the first try committed, its claim did too, and those jobs come
            # back through lease expiry and rescue. Store what is missing; the worker claims for itself.
            return _HandOff.unclaimed(await self._enqueue_again(conn, jobs))

        try:
            done = await self._run(go)
        except BaseException:
            hand_over(idle, [])  # nothing to deliver: the worker offers again (and claims when woken)
            raise
        if not hand_over(idle, done.claimed) and done.claimed:
            await self._hand_back(idle, done.claimed)
        if done.woke and done.inserted:
            self._waker.notify()
        if done.jobs is not None:
            return done.jobs
        # Jobs skipped for a held unique key are looked up (and stored after all when the holder just finished) the
        # way every enqueue does it: after the commit, on its own, and once the worker has its jobs.
        inserted = done.inserted
        return await self._run_enqueue(jobs, lambda conn: self._aenqueue(conn, jobs, inserted=inserted))

    async def _enqueue_and_claim(
        self, conn: psycopg.AsyncConnection[Any], jobs: Sequence[NewJob], idle: IdleClaim
    ) -> _HandOff:
        """Insert `jobs` and claim for `idle` in one transaction. The claim may lose a lane race to another
        claimer (jobs_lane_running, as in `claim`): that rolls the whole transaction back, so it is tried again,
        and in the end the jobs are stored without a claim."""
        params = _claim_params(
            idle.worker_id,
            idle.queues,
            idle.limit,
            idle.lease,
            idle.tasks,
            idle.namespaces,
            idle.exclude_namespaces,
            None,
        )
        # Jobs for later wake every waiter (they re-read next_due), even those the idle worker covers.
        now = utcnow()
        params["covered"] = covers(idle, jobs) and all(job.run_at <= now for job in jobs)
        for _ in range(5):
            try:
                if _use_copy(jobs):
                    return await self._copy_and_claim(conn, jobs, params)
                return await self._insert_and_claim(conn, jobs, params)
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.constraint_name != "jobs_lane_running":
                    raise _duplicate_id(exc) from None
        return _HandOff.unclaimed(await self._aenqueue(conn, jobs))

    async def _insert_and_claim(
        self, conn: psycopg.AsyncConnection[Any], jobs: Sequence[NewJob], params: dict[str, Any]
    ) -> _HandOff:
        """One round trip: the statements of a pipeline up to its Sync run as one implicit transaction, which
        PostgreSQL commits at the Sync, or rolls back entirely when one of them fails (protocol docs, "Pipelining").
        So the claim sees the new rows, and the jobs and the claim commit together or not at all."""
        q = self._q
        async with conn.pipeline():
            await conn.execute(q.HANDOFF_SETUP)
            inserted = await conn.execute(q.ENQUEUE, _enqueue_params(jobs))
            claimed = await conn.execute(
                q.HANDOFF_CLAIM_ANY_TASK if params["tasks"] is None else q.HANDOFF_CLAIM, params
            )
        ids = {row[0] for row in await inserted.fetchall()}
        handed, woke = _handed_off(await claimed.fetchall())
        return _HandOff(ids, handed, woke, [j.to_job() for j in jobs] if len(ids) == len(jobs) else None)

    async def _copy_and_claim(
        self, conn: psycopg.AsyncConnection[Any], jobs: Sequence[NewJob], params: dict[str, Any]
    ) -> _HandOff:
        """A large batch: COPY cannot be pipelined and ends an implicit transaction, so this one is explicit
        (three round trips, nothing next to a batch's COPY)."""
        q = self._q
        try:
            await conn.execute(q.BEGIN_HANDOFF)
            out = await self._aenqueue(conn, jobs)
            async with conn.pipeline():
                claimed = await conn.execute(
                    q.HANDOFF_CLAIM_ANY_TASK if params["tasks"] is None else q.HANDOFF_CLAIM, params
                )
                await conn.execute(q.COMMIT)
        except Exception:
            if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                try:
                    await conn.rollback()
                except _DRIVER_ERRORS:
                    pass
            raise
        handed, woke = _handed_off(await claimed.fetchall())
        return _HandOff({j.id for j in jobs}, handed, woke, out)

    async def _hand_back(self, idle: IdleClaim, jobs: list[Job]) -> None:
        """The worker refused the jobs claimed for it (it is stopping): back to pending without counting an attempt,
        and wake other processes, which the enqueue may not have woken. Never raises: the jobs are stored."""
        try:
            await self.finish([Finish(j.lease, JobStatus.PENDING, release=True) for j in jobs])
            await self._run(lambda conn: conn.execute(self._q.NOTIFY_JOBS))
        except Exception as exc:
            logger.warning(
                "could not hand back %d job(s) refused by worker %s (%s); they return when their lease expires",
                len(jobs),
                idle.worker_id,
                exc,
            )

    async def _aenqueue(
        self, conn: psycopg.AsyncConnection[Any], jobs: Sequence[NewJob], *, inserted: set[str] | None = None
    ) -> list[Job]:
        """Store `jobs`. `inserted`: the ids a first ENQUEUE of them already stored (the hand-off's pipeline);
        only the jobs it skipped for a held unique key are left to resolve."""
        q = self._q
        if inserted is None and _use_copy(jobs):
            try:
                async with conn.cursor() as cur, cur.copy(q.ENQUEUE_COPY) as copy:
                    await copy.write(_copy_text(jobs))
            except psycopg.errors.UniqueViolation as exc:
                raise _duplicate_id(exc) from None
            return [j.to_job() for j in jobs]
        found: dict[str, Job] = {}
        todo = list(jobs)
        for _ in range(3):  # a matched unique key may finish before we read it back: insert those again
            if inserted is None:
                try:
                    cur = await conn.execute(q.ENQUEUE, _enqueue_params(todo))
                except psycopg.errors.UniqueViolation as exc:
                    raise _duplicate_id(exc) from None
                inserted = {row[0] for row in await cur.fetchall()}
            todo = _collect_inserted(todo, inserted, found)
            inserted = None
            if not todo:
                break
            cur = await conn.execute(q.ENQUEUE_EXISTING, _existing_params(todo))
            todo = _collect_existing(todo, await cur.fetchall(), found)
            if not todo:
                break
        return [found[j.id] for j in jobs]

    def enqueue_on_connection(
        self, connection: Any, jobs: Sequence[NewJob], *, require_transaction: bool = True
    ) -> list[Job]:
        if not isinstance(connection, psycopg.Connection):
            raise ValidationError(
                f"enqueue on a connection needs a psycopg (3) Connection, or an SQLAlchemy Session/Connection "
                f"on postgresql+psycopg://; got {type(connection).__name__}",
                field="connection",
            )
        _check_caller(connection, require_transaction)
        if not jobs:
            return []
        q = self._q
        found: dict[str, Job] = {}
        todo = list(jobs)
        try:
            if _use_copy(jobs):
                try:
                    with connection.cursor() as cur, cur.copy(q.ENQUEUE_COPY) as copy:
                        copy.write(_copy_text(jobs))
                except psycopg.errors.UniqueViolation as exc:
                    raise _duplicate_id(exc) from None
                return [j.to_job() for j in jobs]
            with connection.cursor() as cur:
                for _ in range(3):
                    try:
                        cur.execute(q.ENQUEUE, _enqueue_params(todo))
                    except psycopg.errors.UniqueViolation as exc:
                        raise _duplicate_id(exc) from None
                    todo = _collect_inserted(todo, {row[0] for row in cur.fetchall()}, found)
                    if not todo:
                        break
                    cur.execute(q.ENQUEUE_EXISTING, _existing_params(todo))
                    todo = _collect_existing(todo, cur.fetchall(), found)
                    if not todo:
                        break
        except psycopg.Error as exc:
            raise _caller_failed(exc) from None
        return [found[j.id] for j in jobs]

    async def aenqueue_on_connection(
        self, connection: Any, jobs: Sequence[NewJob], *, require_transaction: bool = True
    ) -> list[Job]:
        if check_sqlalchemy(connection, require_transaction):
            require_transaction = False  # checked at SQLAlchemy's level, whose transaction the driver's follows
        connection = await _unwrap_async(connection)
        if not isinstance(connection, psycopg.AsyncConnection):
            raise ValidationError(
                f"aenqueue on a connection needs a psycopg (3) AsyncConnection, or an SQLAlchemy AsyncSession/"
                f"AsyncConnection on postgresql+psycopg://; got {type(connection).__name__}",
                field="connection",
            )
        _check_caller(connection, require_transaction)
        if not jobs:
            return []
        try:
            return await self._aenqueue(connection, jobs)
        except psycopg.Error as exc:
            raise _caller_failed(exc) from None

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
        params = _claim_params(
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
                return sorted((_job(row) for row in rows), key=_claim_order)
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
                return _job(row[1:])
            # The head may have been claimed by someone else while we waited for its row lock.
            busy = await (await conn.execute(self._q.LANE_BUSY, params)).fetchone()
            if busy is not None and busy[0]:
                raise Conflict(CONFLICT_MESSAGE)
            return None

        return await self._run(go)

    async def heartbeat(self, leases: Sequence[Lease], lease: timedelta) -> list[LeaseState]:
        if not leases:
            return []
        batch = _dumps([{"id": x.job_id, "token": x.token} for x in leases])
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
            **_arms_params(queues, tasks),
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
        params = _finish_params(finishes, self._worker_commit)

        async def go(conn: psycopg.AsyncConnection[Any]) -> list[bool]:
            return await self._finish_on(conn, params, finishes)

        out = await self._run(go)
        if any(ok and f.status is JobStatus.PENDING for ok, f in zip(out, finishes, strict=True)):
            self._waker.notify()
        return out

    async def _finish_on(
        self, conn: psycopg.AsyncConnection[Any], params: dict[str, Any], finishes: Sequence[Finish]
    ) -> list[bool]:
        """FINISH, then (only when a report with an attempt was refused) RECORD_STALE for those attempts."""
        rows = await (await conn.execute(self._q.FINISH, params)).fetchall()
        applied = {int(row[0]) for row in rows}
        out = [i + 1 in applied for i in range(len(finishes))]
        stale = [f for f, ok in zip(finishes, out, strict=True) if not ok and f.attempt is not None and not f.release]
        if stale:
            await conn.execute(self._q.RECORD_STALE, {"batch": _stale_batch(stale)})
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
        except _DRIVER_ERRORS as exc:
            raise self._unavailable(exc) from None
        tx = _PgHandlerTransaction(self, conn)
        try:
            try:
                await conn.set_autocommit(False)
            except _DRIVER_ERRORS as exc:
                raise self._unavailable(exc) from None
            try:
                yield tx
            except BaseException:
                if not tx.done:
                    try:
                        await conn.rollback()
                    except _DRIVER_ERRORS:
                        pass
                raise
            if not tx.done:
                try:
                    await conn.commit()
                except _DRIVER_ERRORS as exc:
                    raise self._unavailable(exc) from None
        finally:
            try:
                if not conn.closed:
                    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                        await conn.rollback()
                    await conn.set_autocommit(True)
            except _DRIVER_ERRORS:
                pass
            await pool.putconn(conn)

    # ---- maintenance ----------------------------------------------------------------------------------------

    async def rescue(self, now: datetime | None = None, limit: int = 1000) -> list[Job]:
        params = {"now": now, "limit": max(0, limit)}

        async def go(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            return await (await conn.execute(self._q.RESCUE, params)).fetchall()

        jobs = [_job(row) for row in await self._run(go)]
        jobs.sort(key=lambda j: j.id)
        if any(j.status is JobStatus.PENDING for j in jobs):
            self._waker.notify()
        return jobs

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

    async def _one(self, query: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        async def go(conn: psycopg.AsyncConnection[Any]) -> tuple[Any, ...] | None:
            return await (await conn.execute(query, params)).fetchone()  # type: ignore[arg-type]

        return await self._run(go)

    async def _all(self, query: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        async def go(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            return await (await conn.execute(query, params)).fetchall()  # type: ignore[arg-type]

        return await self._run(go)

    async def get_job(self, job_id: str) -> Job | None:
        row = await self._one(self._q.GET_JOB, {"id": job_id})
        return None if row is None else _job(row, payload_json=row[PAYLOAD_TEXT])

    async def list_jobs(self, filter: JobFilter, limit: int = 20, offset: int = 0) -> Page[Job]:
        offset = max(0, offset)
        params = {
            "namespace": filter.namespace,
            "queue": filter.queue,
            "task": filter.task,
            "status": None if filter.status is None else JobStatus(filter.status).value,
            "user_id": filter.user_id,
            "ids": None if filter.ids is None else list(filter.ids),
            "limit": max(0, limit),
            "offset": offset,
        }

        async def go(conn: psycopg.AsyncConnection[Any]) -> Page[Job]:
            total = await (await conn.execute(self._q.COUNT_JOBS, params)).fetchone()
            rows = await (await conn.execute(self._q.LIST_JOBS, params)).fetchall()
            items = [_job(r, payload_json=r[PAYLOAD_TEXT]) for r in rows]
            return Page(items=items, total=int(total[0]) if total else 0, limit=limit, offset=offset)

        return await self._run(go)

    async def attempts(self, job_id: str) -> list[Attempt]:
        return [_attempt(r) for r in await self._all(self._q.ATTEMPTS, {"id": job_id})]

    async def stats(self, namespace: str | None = None, queue: str | None = None, task: str | None = None) -> Stats:
        rows = await self._all(self._q.STATS, {"namespace": namespace, "queue": queue, "task": task})
        counts = {row[0]: int(row[1]) for row in rows}
        scheduled = sum(int(row[2]) for row in rows)
        return Stats(
            pending=counts.get("pending", 0),
            processing=counts.get("processing", 0),
            completed=counts.get("completed", 0),
            failed=counts.get("failed", 0),
            cancelled=counts.get("cancelled", 0),
            scheduled=scheduled,
        )

    async def _status_of(self, job_id: str) -> str:
        row = await self._one(self._q.JOB_STATUS, {"id": job_id})
        if row is None:
            raise JobNotFound(job_id)
        return str(row[0])

    async def cancel(self, job_id: str) -> Job:
        row = await self._one(self._q.CANCEL, {"id": job_id})
        if row is not None:
            return _job(row)
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
        self._waker.notify()
        return _job(row)

    async def delete(self, job_id: str, *, force: bool = False) -> Job:
        row = await self._one(self._q.DELETE, {"id": job_id, "force": force})
        if row is not None:
            return _job(row)
        await self._status_of(job_id)
        raise InvalidTransition("Job cannot be deleted (must be in 'pending' or 'failed' status)")

    async def run_now(self, job_id: str) -> Job:
        row = await self._one(self._q.RUN_NOW, {"id": job_id})
        if row is None:
            status = await self._status_of(job_id)
            raise InvalidTransition(f"Job cannot be run now (must be in 'pending' status; it is {status!r})")
        self._waker.notify()
        return _job(row)

    async def delete_user_data(self, user_id: str) -> int:
        row = await self._one(self._q.DELETE_USER_DATA, {"user_id": user_id})
        self._waker.notify()  # a group lane's next job may have become claimable
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
        if settings.concurrency is not None and settings.concurrency < 0:
            raise ValidationError("queue concurrency must be ≥ 0 (or None for no limit)", field="concurrency")
        params = {
            "namespace": settings.namespace,
            "queue": settings.name,
            "paused": settings.paused,
            "concurrency": settings.concurrency,
        }
        await self._run(lambda conn: conn.execute(self._q.PUT_QUEUE_SETTINGS, params))
        self._waker.notify()  # a resumed queue or a raised limit may free jobs
        return settings

    async def list_queues(self, namespace: str | None = None) -> list[QueueInfo]:
        rows = await self._all(self._q.LIST_QUEUES, {"namespace": namespace})
        counts: dict[tuple[str, str], dict[str, int]] = {}
        settings: dict[tuple[str, str], tuple[bool, int | None]] = {}
        for ns, queue, status, n, scheduled, paused, concurrency in rows:
            c = counts.setdefault((ns, queue), {s.value: 0 for s in JobStatus} | {"scheduled": 0})
            if status is not None:
                c[status] += int(n)
                c["scheduled"] += int(scheduled)
            settings[(ns, queue)] = (bool(paused), concurrency)
        return [
            QueueInfo(namespace=k[0], name=k[1], paused=settings[k][0], counts=counts[k], concurrency=settings[k][1])
            for k in sorted(counts)
        ]

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
            (applied,) = await self._store._finish_on(conn, _finish_params([finish], "on"), [finish])
            if applied:
                await conn.commit()
            else:  # the lease was lost: the handler's writes must not outlive it (exactly-once effects)
                await conn.rollback()
        except _DRIVER_ERRORS as exc:
            raise self._store._unavailable(exc) from None
        if applied and finish.status is JobStatus.PENDING:
            self._store._waker.notify()
        if not applied and finish.attempt is not None:
            # The rollback took the try's LOST record with it; keep it, outside the handler's transaction.
            try:
                await self._store.finish([finish])
            except StoreUnavailable as exc:
                logger.warning("job %s: could not record its refused try (%s)", finish.lease.job_id, exc.message)
        return applied


class _Queries:
    """queries.py with the schema, channel and column lists filled in (once per store)."""

    def __init__(self, schema: str, channel: str) -> None:
        self.schema = f'"{schema}"'
        values = {
            "schema": self.schema,
            "job_columns": ", ".join(sqlq.JOB_COLUMNS),
            "j_job_columns": ", ".join(f"j.{c}" for c in sqlq.JOB_COLUMNS),
            "channel": "'" + channel.replace("'", "''") + "'",
        }

        def fill(text: str) -> str:
            for key, value in values.items():
                text = text.replace("{" + key + "}", value)
            return text

        for name in dir(sqlq):
            value = getattr(sqlq, name)
            if name.isupper() and isinstance(value, str):
                setattr(self, name, fill(value))

    def __getattr__(self, name: str) -> str:  # for mypy: every query is a str attribute
        raise AttributeError(name)


# ---- row and parameter helpers ------------------------------------------------------------------------------------


_STATUS = {s.value: s for s in JobStatus}
_job = row_decoder(Job, STORED_JOB_FIELDS, {"status": _STATUS}, name="decode_job")
"""A row of `{job_columns}` → Job (psycopg already gives datetimes, booleans and decoded JSON). Reads for callers
also select the payload's stored text after the job columns: pass it as `payload_json=row[PAYLOAD_TEXT]`."""
PAYLOAD_TEXT = len(STORED_JOB_FIELDS)
_attempt = row_decoder(Attempt, STORED_ATTEMPT_FIELDS, {"outcome": AttemptOutcome}, name="decode_attempt")


def _claim_order(job: Job) -> tuple[int, datetime, str]:
    return (job.priority, job.run_at, job.id)


def _claim_params(
    worker_id: str,
    queues: Sequence[str],
    limit: int,
    lease: timedelta,
    tasks: Sequence[str] | None,
    namespaces: Sequence[str] | None,
    exclude_namespaces: Sequence[str],
    synchronous_commit: str | None,
) -> dict[str, Any]:
    """CLAIM's parameters, for `claim` and for the hand-off's claim alike (`synchronous_commit` None: the
    session's own setting, so that a claim committing with an enqueue keeps the enqueue durable)."""
    return {
        "worker_id": worker_id,
        **_arms_params(queues, tasks),
        "limit": limit,
        "lease": lease,
        "namespaces": None if namespaces is None else list(namespaces),
        "exclude": list(exclude_namespaces),
        "synchronous_commit": synchronous_commit,
    }


def _arms_params(queues: Sequence[str], tasks: Sequence[str] | None) -> dict[str, Any]:
    """The claim's ranges (queries._ARMS): the wanted queues, the served tasks (None: any), and their product as two
    parallel arrays (queue × task)."""
    wanted = list(dict.fromkeys(queues))
    served = None if tasks is None else list(dict.fromkeys(tasks))
    pairs = [] if served is None else [(q, t) for q in wanted for t in served]
    return {
        "queues": wanted,
        "tasks": served,
        "arm_queues": [q for q, _ in pairs],
        "arm_tasks": [t for _, t in pairs],
    }


@dataclass
class _HandOff:
    """What an enqueue with hand-off did: the ids it stored, the jobs it claimed for the idle worker, whether it
    woke the other waiters (a NOTIFY went out), and the enqueue's answer — None while jobs skipped for a held
    unique key still have to be looked up."""

    inserted: set[str]
    claimed: list[Job]
    woke: bool
    jobs: list[Job] | None

    @classmethod
    def unclaimed(cls, jobs: list[Job]) -> _HandOff:
        """Stored without a claim (and with the trigger's NOTIFY): the worker is told "nothing" and is woken."""
        return cls({j.id for j in jobs if not j.duplicate}, [], True, jobs)


def _handed_off(rows: Sequence[Sequence[Any]]) -> tuple[list[Job], bool]:
    """HANDOFF_CLAIM's rows: (woke, job columns…), one row with NULL job columns when nothing was claimed."""
    claimed = sorted((_job(row[1:]) for row in rows if row[1] is not None), key=_claim_order)
    return claimed, bool(rows[0][0]) if rows else True


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)  # like encode_result: a handler's odd return value is kept as its text


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default)
    except ValueError as exc:
        raise ValidationError(f"value is not valid JSON: {exc}") from None


def _enqueue_params(jobs: Sequence[NewJob]) -> dict[str, Any]:
    """One JSON array of job records; each payload is spliced in as the JSON text it was validated to."""
    records = []
    for ord_, j in enumerate(jobs, 1):
        head = _dumps(
            {
                "ord": ord_,
                "id": j.id,
                "namespace": j.namespace,
                "queue": j.queue,
                "task": j.task,
                "priority": j.priority,
                "run_at": j.run_at.isoformat(),
                "max_attempts": j.max_attempts,
                "created": j.created.isoformat(),
                "user_id": j.user_id,
                "group_key": j.group_key,
                "unique_key": j.unique_key,
                "serial_key": j.serial_key,
            }
        )
        records.append(head[:-1] + ',"payload":' + j.payload_json + "}")
    return {"batch": "[" + ",".join(records) + "]"}


COPY_THRESHOLD = 64  # below this a one-statement INSERT is as fast and simpler


def _use_copy(jobs: Sequence[NewJob]) -> bool:
    return len(jobs) >= COPY_THRESHOLD and all(j.unique_key is None for j in jobs)


def _copy_text(jobs: Sequence[NewJob]) -> str:
    """The batch as COPY text (tab-separated, `\\N` for NULL), built in one string: one `write` instead of an
    awaited `write_row` per job, which dominated batch enqueue. Column order matches ENQUEUE_COPY."""
    lines: list[str] = []
    last_created: datetime | None = None
    created = ""
    for j in jobs:
        if j.created is not last_created:  # a batch shares one creation instant: format it once
            last_created = j.created
            created = j.created.isoformat()
        run_at = created if j.run_at == j.created else j.run_at.isoformat()
        lines.append(
            "\t".join(
                (
                    j.id,
                    j.namespace,  # validated names: nothing to escape
                    j.queue,
                    _copy_escape(j.task),
                    _copy_escape(j.payload_json),
                    str(j.priority),
                    run_at,
                    str(j.max_attempts),
                    created,
                    created,
                    _copy_optional(j.user_id),
                    _copy_optional(j.group_key),
                    "\\N",
                    _copy_optional(j.serial_key),
                )
            )
        )
    lines.append("")
    return "\n".join(lines)


def _copy_escape(value: str) -> str:
    """COPY text format escaping: backslash, tab, newline and carriage return become backslash sequences."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


def _copy_optional(value: str | None) -> str:
    return "\\N" if value is None else _copy_escape(value)


def _existing_params(jobs: Sequence[NewJob]) -> dict[str, Any]:
    return {"namespaces": [j.namespace for j in jobs], "unique_keys": [j.unique_key for j in jobs]}


def _collect_inserted(jobs: Sequence[NewJob], inserted: set[str], found: dict[str, Job]) -> list[NewJob]:
    """Record the inserted jobs; return the ones skipped because their unique key is held."""
    rest: list[NewJob] = []
    for j in jobs:
        if j.id in inserted:
            found[j.id] = j.to_job()
        else:
            rest.append(j)
    return rest


def _collect_existing(jobs: Sequence[NewJob], rows: Sequence[Sequence[Any]], found: dict[str, Job]) -> list[NewJob]:
    """Answer skipped jobs with the active job holding their key; return those whose holder vanished meanwhile."""
    holders = {(job.namespace, job.unique_key): job for job in (_job(row, duplicate=True) for row in rows)}
    rest: list[NewJob] = []
    for j in jobs:
        holder = holders.get((j.namespace, j.unique_key or ""))
        if holder is None:
            rest.append(j)
        else:
            found[j.id] = holder
    return rest


def _duplicate_id(exc: psycopg.errors.UniqueViolation) -> ValidationError:
    detail = exc.diag.message_detail or str(exc)
    return ValidationError(f"a job with this id already exists ({detail})", field="id")


def _finish_params(finishes: Sequence[Finish], synchronous_commit: str) -> dict[str, Any]:
    records: list[dict[str, Any]] = []
    for ord_, f in enumerate(finishes, 1):
        if f.status is JobStatus.PROCESSING or (f.release and f.status is not JobStatus.PENDING):
            raise ValidationError(
                f"a Finish must move the job to pending, completed, failed or cancelled (release: pending), "
                f"got {f.status.value!r}",
                field="status",
            )
        record: dict[str, Any] = {
            "ord": ord_,
            "id": f.lease.job_id,
            "token": f.lease.token,
            "status": f.status.value,
            "run_at": f.run_at,
            "error": f.error,
            "release": f.release,
        }
        if f.result is not None:  # absent → SQL NULL (a JSON null would be stored as the json value 'null')
            record["result"] = f.result
        a = f.attempt
        if a is not None and not f.release:
            record.update(
                a_try_number=a.try_number,
                a_outcome=AttemptOutcome(a.outcome).value,
                a_status_code=a.status_code,
                a_started=a.started_at,
                a_finished=a.finished_at,
                a_worker_id=a.worker_id,
                a_error=a.error,
                a_traceback=a.traceback,
            )
            if a.result is not None:
                record["a_result"] = a.result
        records.append(record)
    return {"batch": _dumps(records), "synchronous_commit": synchronous_commit}


def _check_caller(
    connection: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], require_transaction: bool
) -> None:
    """The rules of Store.enqueue_on_connection for a psycopg connection (sync or async: the same attributes)."""
    if connection.closed or connection.broken:
        raise CallerConnectionError(
            "the connection passed as connection= is closed; open a new one, begin a transaction on it and enqueue "
            "inside it (Conveyor cannot reopen a connection it does not own)"
        )
    status = connection.info.transaction_status
    if status == TransactionStatus.INERROR:
        raise CallerConnectionError(
            "the transaction of the connection passed as connection= has already failed (an earlier statement "
            "raised); roll it back, then redo your work and the enqueue in a new transaction"
        )
    if status == TransactionStatus.ACTIVE:
        raise CallerConnectionError(
            "the connection passed as connection= is busy with another statement (e.g. a COPY or an unread "
            "result); finish it first"
        )
    if require_transaction and (connection.autocommit or status == TransactionStatus.IDLE):
        state = "is in autocommit mode" if connection.autocommit else "has no transaction open"
        raise CallerConnectionError(
            f"the connection passed as connection= {state}, so the jobs would not commit with your work; "
            + REQUIRE_TRANSACTION_HINT
        )


def _caller_failed(exc: psycopg.Error) -> CallerConnectionError:
    """A driver error on the caller's connection: the caller's transaction is now failed or the connection gone."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return CallerConnectionError(
        f"enqueue on the connection passed as connection= failed ({type(exc).__name__}: {detail}); your "
        "transaction cannot commit now: roll it back (or reconnect, if the connection was lost) and redo your "
        "work with the enqueue"
    )


def _stale_batch(finishes: Sequence[Finish]) -> str:
    """RECORD_STALE's batch: the refused reports' attempts as the LOST records they are kept as."""
    records: list[dict[str, Any]] = []
    for ord_, f in enumerate(finishes, 1):
        assert f.attempt is not None
        a = not_applied(f.attempt)
        record: dict[str, Any] = {
            "ord": ord_,
            "id": f.lease.job_id,
            "token": f.lease.token,
            "a_try_number": a.try_number,
            "a_outcome": AttemptOutcome(a.outcome).value,
            "a_status_code": a.status_code,
            "a_started": a.started_at,
            "a_finished": a.finished_at,
            "a_worker_id": a.worker_id,
            "a_error": a.error,
            "a_traceback": a.traceback,
        }
        if a.result is not None:
            record["a_result"] = a.result
        records.append(record)
    return _dumps(records)


async def _unwrap_async(connection: Any) -> Any:
    """Reach the psycopg AsyncConnection inside an SQLAlchemy AsyncSession / AsyncConnection (same transaction)."""
    if not type(connection).__module__.startswith("sqlalchemy"):
        return connection
    if hasattr(connection, "get_raw_connection"):  # AsyncConnection
        raw = await connection.get_raw_connection()
    else:  # AsyncSession: its connection inside the current transaction
        raw = await (await connection.connection()).get_raw_connection()
    return getattr(raw, "driver_connection", raw)
