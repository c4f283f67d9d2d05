"""The SQLite store: Conveyor's embedded default (SPEC §5).

How it is put together, and why:

* **Threads, not the event loop.** One writer thread owns the only writing connection of this store and one reader
  thread owns a read-only connection (`runner.ConnectionThread`). Every public method hands a small function to one
  of them and awaits an asyncio future, so neither disk I/O nor a lock wait ever blocks the event loop. WAL mode
  lets the reader see committed data while the writer writes.
* **Every write is one `BEGIN IMMEDIATE` transaction.** Taking the write lock up front means a transaction never
  has to upgrade a stale read snapshot (which fails in WAL mode), and several processes on one file simply queue
  on the lock (busy_timeout, then a bounded retry, then StoreUnavailable).
* **Claims** read one ordered index range per (namespace, queue, task) that the worker serves — planned from the
  registry `conveyor_queue_tasks`, skipping paused queues and namespaces with auto_run off in the same write
  transaction — merged and limited in one statement (`queries.CLAIM_CANDIDATES`), then start them under fresh
  random fencing tokens. Jobs of tasks the worker does not serve are never read. Serial lanes cost nothing at claim
  time because triggers keep only each lane's claimable head `eligible` (see migrations.py).
* **Finishes** of many jobs and their attempt rows go in one transaction (the worker batches completions).
* **Few sqlite3 steps per call.** Rows travel as JSON (one `json_group_array` value for a whole claim) and batches
  go in through `json_each`, because every sqlite3 step releases the GIL and winning it back from a busy event loop
  is what a thread-based store pays for (see queries.py).
* **Times** are stored as integer microseconds since the epoch, taken from this process's clock, and converted to
  aware UTC datetimes only at the boundary (exactly: no float rounding).
* **Wake-ups** (wake.py, docs/sqlite.md): after a commit that made jobs claimable (enqueue, requeue, run_now, a
  retry or release, rescue, a queue resumed) the writer thread wakes the waiters of this process (a LocalWaker
  shared by every SQLiteStore of the process on the file) and sends one datagram to each other process that waits
  on the file (Unix datagram sockets in `<db>-wake/`), once per group commit. Where that is unavailable, waiters
  in other processes poll (`wait_for_jobs` times out), as does a waiter after `enqueue_on_connection`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl, quote, unquote

from conveyor.codec import STORED_ATTEMPT_FIELDS, STORED_JOB_FIELDS, field_index, row_decoder
from conveyor.errors import (
    REQUIRE_TRANSACTION_HINT,
    CallerConnectionError,
    Conflict,
    ConveyorError,
    InvalidTransition,
    JobNotFound,
    NamespaceExists,
    NamespaceNotFound,
    RevisionConflict,
    StoreUnavailable,
    ValidationError,
)
from conveyor.model import (
    DEFAULT_NAMESPACE,
    DEFAULT_NAMESPACE_SETTINGS,
    JSON,
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
    new_lease_tokens,
    not_applied,
    utcnow,
)
from conveyor.store.base import DEFAULT_SPACE, Store, refuse_default
from conveyor.store.sqlite import queries as q
from conveyor.store.sqlite.checkpoint import WRITER_AUTOCHECKPOINT, Checkpointer
from conveyor.store.sqlite.migrations import MIGRATIONS, apply_migrations
from conveyor.store.sqlite.runner import ConnectionThread
from conveyor.store.sqlite.wake import hub_for, remove_wake_directory
from conveyor.store.urls import choice, number, take_options

__all__ = ["SQLiteStore", "parse_sqlite_url"]

log = logging.getLogger("conveyor.store.sqlite")

T = TypeVar("T")

CONFLICT_MESSAGE = "Job queue execution conflict. Retry required."

OPTIONS = {
    "busy_timeout": number(float),
    "busy_retry": number(float),
    "synchronous": choice("OFF", "NORMAL", "FULL", "EXTRA"),
    "cache_size_kib": number(int, minimum=0, above=True),
}
"""The SQLite store's options (URL query parameters or keyword arguments; docs/sqlite.md "Options")."""


def parse_sqlite_url(url: str) -> tuple[str, list[tuple[str, str]]]:
    """`sqlite:///relative.db` (relative to the current directory) or `sqlite:////abs/path.db`, with optional
    `?busy_timeout=…` style options. Returns the absolute path and the options as given (read by `take_options`:
    an empty or repeated one is refused, not dropped)."""
    scheme, _, rest = url.partition(":")
    if scheme.lower() != "sqlite" or not rest.startswith("///"):
        raise ValidationError(
            f"SQLite store URL must look like sqlite:///relative/path.db or sqlite:////absolute/path.db, got {url!r}",
            field="url",
        )
    raw_path, _, query = rest[3:].partition("?")
    path = unquote(raw_path)
    if not path or path == ":memory:" or path.startswith("file:"):
        raise ValidationError(
            f"SQLite store URL {url!r} names no file; give a path (sqlite:///conveyor.db). "
            "For an in-memory store use memory://",
            field="url",
        )
    return os.path.abspath(path), parse_qsl(query, keep_blank_values=True)


# ---- conversions at the boundary --------------------------------------------------------------------------------

_STATUS = {s.value: s for s in JobStatus}
_OUTCOME = {o.value: o for o in AttemptOutcome}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def _now() -> int:
    """This process's clock in integer microseconds (the store's clock)."""
    return time.time_ns() // 1000


# Below this (year 2191) a float of seconds is within half a microsecond of the truth, so fromtimestamp (twice as
# fast as datetime arithmetic) rounds back to the exact microsecond; beyond it we do exact integer arithmetic.
_FAST_US_LIMIT = 7_000_000_000_000_000
_fromtimestamp = datetime.fromtimestamp


def _dt(us: int) -> datetime:
    if -_FAST_US_LIMIT < us < _FAST_US_LIMIT:
        return _fromtimestamp(us / 1_000_000, UTC)
    return _EPOCH + timedelta(microseconds=us)


def _ts(value: datetime) -> int:
    return (value - _EPOCH) // _ONE_US


def _ots(value: datetime | None) -> int | None:
    return None if value is None else (value - _EPOCH) // _ONE_US


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _dumps(value: JSON) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


_job = row_decoder(Job, STORED_JOB_FIELDS, {"status": _STATUS, "time": _dt, "bool": bool}, name="decode_job")
"""A decoded q.JOB_JSON array → Job (payload and result arrive already decoded)."""

# Where q.JOB_JSON puts the fields that a claim changes (`_started`).
_STATUS_AT, _ATTEMPTS_AT, _TRY_AT, _UPDATED_AT, _STARTED_AT, _EXPIRES_AT, _WORKER_AT, _CANCEL_AT, _TOKEN_AT = (
    field_index(STORED_JOB_FIELDS, name)
    for name in (
        "status",
        "attempts",
        "try_number",
        "updated",
        "started_at",
        "lease_expires_at",
        "worker_id",
        "cancel_requested",
        "lease_token",
    )
)


def _started(r: list[Any], now: int, worker_id: str, expires: int, token: str) -> Job:
    """A candidate as q.CLAIM leaves it (the same changes, applied in Python instead of read back)."""
    r[_STATUS_AT] = "processing"
    r[_ATTEMPTS_AT] += 1
    r[_TRY_AT] += 1
    r[_UPDATED_AT] = r[_STARTED_AT] = now
    r[_EXPIRES_AT] = expires
    r[_WORKER_AT] = worker_id
    r[_CANCEL_AT] = 0
    r[_TOKEN_AT] = token
    return _job(r)


def _job_row(row: Sequence[Any], duplicate: bool = False) -> Job:
    """A fetched row whose first column is q.JOB_JSON → Job; a second column is the payload's stored text."""
    return _job(json.loads(row[0]), duplicate=duplicate, payload_json=row[1] if len(row) > 1 else None)


def _jobs_aggregate(row: Sequence[Any] | None) -> list[Job]:
    """A fetched json_group_array(q.JOB_JSON) → Jobs."""
    if row is None or row[0] is None:
        return []
    return [_job(r) for r in json.loads(row[0])]


def _claim_order(job: Job) -> tuple[int, datetime, str]:
    return (job.priority, job.run_at, job.id)


_attempt = row_decoder(
    Attempt,
    STORED_ATTEMPT_FIELDS,
    {"outcome": _OUTCOME, "time": _dt, "json": json.loads},
    name="decode_attempt",
)
"""A row of q.SELECT_ATTEMPTS → Attempt (the result is JSON text)."""


def _attempt_params(a: Attempt, token: str) -> tuple[Any, ...]:
    """A record for INSERT_ATTEMPTS, stored under the claim's token."""
    return (
        a.job_id,
        a.try_number,
        a.outcome.value,
        a.status_code,
        _ts(a.started_at),
        _ts(a.finished_at),
        a.worker_id,
        None if a.result is None else _dumps(a.result),
        a.error,
        a.traceback,
        token,
    )


def _worker_doc(info: WorkerInfo) -> str:
    return json.dumps(
        {
            "id": info.id,
            "hostname": info.hostname,
            "pid": info.pid,
            "queues": list(info.queues),
            "concurrency": info.concurrency,
            "started_at": info.started_at.isoformat(),
            "heartbeat_at": info.heartbeat_at.isoformat(),
            "expires_at": info.expires_at.isoformat(),
            "running": list(info.running),
            "version": info.version,
            "tasks": list(info.tasks),
        }
    )


def _worker_from_doc(doc: str) -> WorkerInfo:
    d = json.loads(doc)
    return WorkerInfo(
        id=d["id"],
        hostname=d["hostname"],
        pid=d["pid"],
        queues=tuple(d["queues"]),
        concurrency=d["concurrency"],
        started_at=datetime.fromisoformat(d["started_at"]),
        heartbeat_at=datetime.fromisoformat(d["heartbeat_at"]),
        expires_at=datetime.fromisoformat(d["expires_at"]),
        running=tuple(d.get("running", ())),
        version=d.get("version", ""),
        tasks=tuple(d.get("tasks", ())),
    )


def _namespace_doc(ns: Namespace) -> str:
    return json.dumps(ns.to_dict(), ensure_ascii=False)


def _namespace_from_doc(doc: str) -> Namespace:
    return Namespace.from_dict(json.loads(doc))


def _filter_params(flt: JobFilter) -> tuple[list[str], dict[str, Any]]:
    names: list[str] = []
    params: dict[str, Any] = {}
    for name in ("namespace", "queue", "task", "user_id"):
        value = getattr(flt, name)
        if value is not None:
            names.append(name)
            params[name] = value
    if flt.status is not None:
        names.append("status")
        params["status"] = JobStatus(flt.status).value
    if flt.ids is not None:
        names.append("ids")
        params["ids"] = json.dumps(list(flt.ids))
    return names, params


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
                out.append(_job_row(row, duplicate=True))
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
                _ts(new.run_at),
                new.max_attempts,
                _ts(new.created),
                new.user_id,
                new.group_key,
                new.unique_key,
            ]
        )
        ranges.add((new.namespace, new.queue, new.task))
        out.append(job)
    if rows:
        try:
            conn.execute(q.INSERT_JOBS, (_dumps(rows),))
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


class SQLiteStore(Store):
    """Jobs in one SQLite file (WAL). Safe for several processes on one machine; see the module docstring.

    Options (keyword arguments or URL query parameters): `busy_timeout` seconds SQLite waits for another
    connection's lock (default 5), `busy_retry` further seconds of retrying before StoreUnavailable (default 10),
    `synchronous` (NORMAL by default: durable across process crashes, may lose the last commits on power loss),
    `cache_size_kib` (page cache per connection, default 16384).
    """

    scheme = "sqlite"
    # enqueue_on_connection works, but transactional handlers are PostgreSQL-only (the app checks this flag for
    # those), so this stays False.
    supports_transactions = False

    def __init__(self, url: str = "sqlite:///conveyor.db", *, lazy: bool = False, **options: Any) -> None:
        self.url = url
        self.lazy = lazy
        path, url_options = parse_sqlite_url(url)
        self.path = path
        values, _ = take_options("SQLite", url_options, OPTIONS)
        values.update(take_options("SQLite", options, OPTIONS)[0])  # keyword arguments win over the URL
        self.busy_timeout: float = values.get("busy_timeout", 5.0)
        self.busy_retry: float = values.get("busy_retry", 10.0)
        self.synchronous: str = values.get("synchronous", "NORMAL")
        self.cache_size_kib: int = values.get("cache_size_kib", 16384)
        # One hub per database file in this process: stores on one file share its LocalWaker and its socket.
        self._hub = hub_for(os.path.realpath(path))
        self._wake_due = False  # a committed write asked for a wake-up; writer thread only (see _flush_wake)
        self._listening_pid: int | None = None  # the process in which this store listens (see wait_for_jobs)
        self._lock = threading.Lock()
        self._writer: ConnectionThread | None = None
        self._checkpointer: Checkpointer | None = None
        self._reader: ConnectionThread | None = None
        self._ready = False
        self._registered_ranges: set[tuple[str, str, str]] = set()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.url!r})"

    # ---- connections --------------------------------------------------------------------------------------------

    _mode_noted: ClassVar[set[str]] = set()

    @classmethod
    def _create_private(cls, path: str) -> None:
        """Create a new database file readable by its owner only (0600). SQLite gives its -wal and -shm files the
        database file's permissions, and the wake-up directory beside it follows them too, so job payloads,
        results and the server's auth settings are not readable by other local users. An existing file is left
        as it is (its owner chose), with a note in the log when others may read it."""
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            if path not in cls._mode_noted:
                cls._mode_noted.add(path)
                try:
                    mode = os.stat(path).st_mode & 0o777
                except OSError:
                    return
                if mode & 0o077:
                    log.warning(
                        "SQLite database %s is readable by other users (mode %o); Conveyor creates new databases "
                        "0600 but leaves existing ones as they are: chmod 600 it (and its -wal and -shm files) if "
                        "that is not intended",
                        path,
                        mode,
                    )
            return
        except OSError:
            return  # sqlite3.connect reports why the file cannot be opened
        os.close(fd)

    def _connect(self, *, read_only: bool) -> sqlite3.Connection:
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            raise StoreUnavailable(
                f"cannot open SQLite database {self.path}: the directory {directory} does not exist; create it "
                "first (Conveyor creates the file, not its directory)"
            )
        self._create_private(self.path)
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=256,
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            if not read_only:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreUnavailable(
                        f"SQLite database {self.path} cannot use WAL mode (got {mode!r}); Conveyor needs a local "
                        "file system that supports shared memory"
                    )
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute(f"PRAGMA cache_size = {-abs(self.cache_size_kib)}")
            conn.execute("PRAGMA temp_store = MEMORY")
            if not read_only:  # checkpoints are the Checkpointer's job; the writer's own only past a safety net
                conn.execute(f"PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT}")
            if read_only:
                conn.execute("PRAGMA query_only = 1")
        except BaseException:
            conn.close()
            raise
        return conn

    def _threads(self) -> tuple[ConnectionThread, ConnectionThread]:
        with self._lock:
            if self._writer is None or not self._writer.alive:
                self._writer = ConnectionThread(
                    "conveyor-sqlite-writer",
                    lambda: self._connect(read_only=False),
                    self.path,
                    self.busy_retry,
                    transactional=True,
                    after_group=self._flush_wake,
                )
            if self._checkpointer is None or not self._checkpointer.alive:
                # A query_only connection may checkpoint (it moves no data of its own) and can write nothing else.
                self._checkpointer = Checkpointer(lambda: self._connect(read_only=True), self.path)
                self._checkpointer.start()
            if self._reader is None or not self._reader.alive:
                self._reader = ConnectionThread(
                    "conveyor-sqlite-reader",
                    lambda: self._connect(read_only=True),
                    self.path,
                    self.busy_retry,
                    transactional=False,
                )
            return self._writer, self._reader

    async def _ensure_ready(self) -> tuple[ConnectionThread, ConnectionThread]:
        writer, reader = self._writer, self._reader
        if self._ready and writer is not None and reader is not None:
            return writer, reader
        writer, reader = self._threads()
        await writer.submit(self._migrate_on, plain=True)
        self._ready = True
        return writer, reader

    def _migrate_on(self, conn: sqlite3.Connection) -> list[str]:
        now = utcnow()
        seed = _namespace_doc(replace(DEFAULT_NAMESPACE_SETTINGS, created=now, updated=now))
        applied = apply_migrations(
            conn,
            seeds=[(q.INSERT_NAMESPACE_IF_ABSENT, (DEFAULT_NAMESPACE, seed))],
            where=f"SQLite database {self.path}",
        )
        if applied:
            log.info("SQLite database %s migrated: %s", self.path, ", ".join(applied))
        return applied

    async def _write(self, fn: Callable[[sqlite3.Connection], T], wake: Callable[[T], bool] | None = None) -> T:
        """Run fn inside a BEGIN IMMEDIATE transaction on the writer thread (possibly shared with other queued
        writes, see runner.py); wake waiters here and in other processes after the commit when `wake(result)` says
        so."""
        writer, _ = await self._ensure_ready()
        if wake is None:
            return await writer.submit(fn)

        def after_commit(result: T) -> None:
            if wake(result):
                self._wake_due = True

        return await writer.submit(fn, after_commit)

    def _wake_later(self, _: object = None) -> None:
        """An `after_commit`: ask for a wake-up once the group is through (writer thread)."""
        self._wake_due = True

    def _flush_wake(self) -> None:
        """The writer's `after_group`, after the commit: the members of the group that asked for a wake-up share
        one, so a group of enqueues costs each other process one datagram, not one per enqueue."""
        if self._wake_due:
            self._wake_due = False
            self._hub.notify()

    def _release_orphans(self, claimed: list[Job] | Job | None) -> None:
        """A claim finished after its caller was cancelled: hand the jobs straight back (not counted), so they do not
        sit processing until their lease expires and cost an attempt. Runs on the caller's loop; fire and forget."""
        jobs = [claimed] if isinstance(claimed, Job) else list(claimed or ())
        writer = self._writer
        if not jobs or writer is None:
            return
        releases = [Finish(job.lease, JobStatus.PENDING, release=True) for job in jobs]

        def run(conn: sqlite3.Connection) -> None:
            now = _now()
            for f in releases:
                conn.execute(q.RELEASE, (now, None, None, f.lease.job_id, f.lease.token))

        fut = writer.submit(run, self._wake_later)
        fut.add_done_callback(_swallow)

    async def _read(self, fn: Callable[[sqlite3.Connection], T], snapshot: bool = False) -> T:
        """Run fn on the reader thread; `snapshot` wraps several statements in one read transaction."""
        _, reader = await self._ensure_ready()
        if not snapshot:
            return await reader.submit(fn)

        def run(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

        return await reader.submit(run)

    # ---- lifecycle ------------------------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            await self._ensure_ready()
        except StoreUnavailable as exc:
            if not self.lazy:
                raise
            log.warning("SQLite store not available yet (will retry on use): %s", exc.message)

    async def close(self) -> None:
        with self._lock:
            threads = [t for t in (self._writer, self._reader) if t is not None]
            self._writer = self._reader = None
            checkpointer, self._checkpointer = self._checkpointer, None
            self._ready = False
        for thread in threads:
            await thread.stop()
        if checkpointer is not None:
            await asyncio.to_thread(checkpointer.stop)
        self._registered_ranges.clear()  # the file may change while closed: trust nothing cached about it
        with self._lock:
            listened, self._listening_pid = self._listening_pid == os.getpid(), None
        if listened:
            self._hub.unlisten()
        self._hub.local.notify()

    async def migrate(self) -> list[str]:
        """On the writer thread when the store is open; otherwise on a connection of its own, closed afterwards (a
        thread of its own too, so busy retries and error mapping are the writer's)."""
        with self._lock:
            writer = self._writer if self._writer is not None and self._writer.alive else None
        if writer is not None:
            return await writer.submit(self._migrate_on, plain=True)
        once = ConnectionThread(
            "conveyor-sqlite-migrate",
            lambda: self._connect(read_only=False),
            self.path,
            self.busy_retry,
            transactional=True,
        )
        try:
            return await once.submit(self._migrate_on, plain=True)
        finally:
            await once.stop()

    def known_migrations(self) -> list[str]:
        return [m.label for m in MIGRATIONS]

    @classmethod
    def isolated_url(cls, base_url: str, label: str, workdir: Path) -> str:
        """`sqlite:///<workdir>/<label>.db`, with the base URL's options (busy_timeout, synchronous…)."""
        _, _, query = base_url.partition("?")
        path = quote(str((workdir / f"{label}.db").resolve()))
        return f"sqlite:///{path}" + (f"?{query}" if query else "")

    async def drop(self, *, allow_default: bool = False) -> None:
        """Close, then delete the database file with its -wal, -shm and -journal files and its wake-up directory.
        Refused for the default file (`conveyor.db`) unless allow_default. A file that also holds tables of the
        application's own (transactional enqueue shares the application's file) is kept: only Conveyor's tables
        are dropped from it, in one transaction."""
        name = os.path.basename(self.path)
        refuse_default("the SQLite database", DEFAULT_SPACE if name == f"{DEFAULT_SPACE}.db" else name, allow_default)
        await self.close()
        await asyncio.to_thread(_drop_files, self.path, self.busy_timeout)

    async def ping(self) -> None:
        await self._read(lambda conn: conn.execute("SELECT COUNT(*) FROM conveyor_schema_migrations").fetchall())

    # ---- enqueue --------------------------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        if not jobs:
            return []
        registered = self._registered_ranges  # read and grown only on the writer thread

        def after_commit(out: list[Job]) -> None:
            registered.update((job.namespace, job.queue, job.task) for job in out)
            if _any_new(out):
                self._wake_due = True

        writer, _ = await self._ensure_ready()
        return await writer.submit(lambda conn: insert_jobs(conn, jobs, registered), after_commit)

    def enqueue_on_connection(
        self, connection: Any, jobs: Sequence[NewJob], *, require_transaction: bool = True
    ) -> list[Job]:
        """Insert through the caller's sqlite3 connection, inside its transaction; the caller commits.

        The connection must be inside a transaction (Store.enqueue_on_connection's rules): with the default
        isolation, one opens at the caller's first INSERT/UPDATE/DELETE (or an explicit `BEGIN`). With
        `require_transaction=False` an idle connection gets a transaction of ours (`BEGIN`, as sqlite3 would
        before an INSERT), which the caller's next commit commits; a connection in autocommit mode
        (isolation_level=None / autocommit=True) gets a savepoint instead, released at once, since its owner
        expects each call to stand alone. No worker is woken, here or elsewhere (we cannot know when the caller
        commits, and a wake-up before the commit would find nothing): they find the jobs when they poll."""
        if not isinstance(connection, sqlite3.Connection):
            raise ValidationError(
                f"SQLiteStore.enqueue_on_connection needs a sqlite3.Connection (or a SQLAlchemy connection on "
                f"SQLite), got {type(connection).__name__}",
                field="connection",
            )
        try:
            in_transaction = connection.in_transaction
            self._check_same_database(connection)
        except sqlite3.ProgrammingError:
            raise CallerConnectionError(
                "the sqlite3 connection passed as connection= is closed; open a new one and enqueue inside its "
                "transaction"
            ) from None
        autocommit = getattr(connection, "autocommit", None)  # Python 3.12+: True / False / LEGACY
        explicit_autocommit = autocommit is True or (
            autocommit in (None, getattr(sqlite3, "LEGACY_TRANSACTION_CONTROL", -1))
            and connection.isolation_level is None
        )
        if require_transaction and not in_transaction:
            state = "is in autocommit mode" if explicit_autocommit else "has no transaction open"
            raise CallerConnectionError(
                f"the sqlite3 connection passed as connection= {state}, so the jobs would not commit with your "
                "work; " + REQUIRE_TRANSACTION_HINT
            )
        if not jobs:
            return []
        try:
            if in_transaction:
                return insert_jobs(connection, jobs)
            if explicit_autocommit:
                connection.execute("SAVEPOINT conveyor_enqueue")
                try:
                    out = insert_jobs(connection, jobs)
                except BaseException:
                    connection.execute("ROLLBACK TO conveyor_enqueue")
                    connection.execute("RELEASE conveyor_enqueue")
                    raise
                connection.execute("RELEASE conveyor_enqueue")
                return out
            connection.execute(f"BEGIN {connection.isolation_level or ''}".strip())
            try:
                return insert_jobs(connection, jobs)
            except BaseException:
                connection.rollback()  # the transaction was ours; nothing of the caller's was in it
                raise
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                raise ConveyorError(
                    f"the Conveyor schema is missing from {self.path}: run `conveyor migrate` or open the store "
                    "once before enqueuing on your own connection"
                ) from exc
            raise CallerConnectionError(
                f"enqueue on the sqlite3 connection passed as connection= failed ({exc}); roll your transaction "
                "back and redo your work with the enqueue (a locked database: retry it shortly)"
            ) from None
        except sqlite3.ProgrammingError as exc:
            raise CallerConnectionError(
                f"the sqlite3 connection passed as connection= cannot be used ({exc}); open a new one"
            ) from None

    def _check_same_database(self, connection: sqlite3.Connection) -> None:
        main = next((row[2] for row in connection.execute(q.DATABASE_LIST) if row[1] == "main"), "")
        if not main or os.path.realpath(main) != os.path.realpath(self.path):
            raise ValidationError(
                f"the connection is to {main or 'an in-memory database'!r}, but this Conveyor store uses "
                f"{self.path!r}; enqueue on a connection to the same file",
                field="connection",
            )

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
        queues_json = json.dumps(list(dict.fromkeys(queues)))
        tasks_json = None if tasks is None else _dumps(list(dict.fromkeys(tasks)))
        wanted = None if namespaces is None else set(namespaces)
        excluded = set(exclude_namespaces)
        lease_us = _us(lease.total_seconds())

        def run(conn: sqlite3.Connection) -> list[Job]:
            now = _now()
            # Ranges grouped by how many jobs each may give: `limit`, or less in a queue with a concurrency cap.
            groups: dict[int, list[list[str]]] = {}
            rooms: dict[tuple[str, str], int] = {}
            (plan,) = conn.execute(q.SELECT_CLAIM_ARMS, (queues_json, tasks_json)).fetchone()
            for ns, queue, task, cap in json.loads(plan):
                if ns in excluded or (wanted is not None and ns not in wanted):
                    continue
                room = limit
                if cap is not None:
                    if (ns, queue) not in rooms:
                        busy = conn.execute(q.COUNT_PROCESSING_IN_QUEUE, (ns, queue)).fetchone()[0]
                        rooms[(ns, queue)] = cap - busy
                    room = min(limit, rooms[(ns, queue)])
                    if room <= 0:
                        continue
                groups.setdefault(room, []).append([ns, queue, task])
            if not groups:
                return []
            found: list[tuple[int, list[Any]]] = []
            for room, ranges in groups.items():
                rowids, rows = conn.execute(q.CLAIM_CANDIDATES, (_dumps(ranges), now, room, limit)).fetchone()
                if rowids != "[]":
                    found.extend(zip(json.loads(rowids), json.loads(rows), strict=True))
            if rooms:  # merge in claim order, honouring each capped queue's room across all its ranges
                found.sort(key=lambda c: (c[1][6], c[1][7], c[1][0]))
                taken: list[tuple[int, list[Any]]] = []
                for rid, r in found:
                    key = (r[1], r[2])
                    if key in rooms:
                        if rooms[key] <= 0:
                            continue
                        rooms[key] -= 1
                    taken.append((rid, r))
                found = taken
            found = found[:limit]
            if not found:
                return []
            expires = now + lease_us
            tokens = new_lease_tokens(len(found))
            pairs = [[rid, token] for (rid, _), token in zip(found, tokens, strict=True)]
            started = conn.execute(q.CLAIM, (now, worker_id, expires, _dumps(pairs))).rowcount
            if started != len(found):  # cannot happen inside one write transaction; read back to be safe
                rowids = json.dumps([rid for rid, _ in found])
                return sorted(
                    _jobs_aggregate(conn.execute(q.SELECT_JOBS_BY_ROWID, (rowids,)).fetchone()), key=_claim_order
                )
            jobs = [_started(r, now, worker_id, expires, t) for (_, r), t in zip(found, tokens, strict=True)]
            jobs.sort(key=_claim_order)
            return jobs

        writer, _ = await self._ensure_ready()
        return await writer.submit(run, on_orphan=self._release_orphans)

    async def claim_user(self, namespace: str, user_id: str, worker_id: str, lease: timedelta) -> Job | None:
        key = f"u:{user_id}"
        lease_us = _us(lease.total_seconds())

        def run(conn: sqlite3.Connection) -> Job | None:
            if conn.execute(q.SELECT_LANE_PROCESSING, (namespace, key)).fetchone() is not None:
                raise Conflict(CONFLICT_MESSAGE)
            now = _now()
            token = new_lease_tokens(1)[0]
            rows = conn.execute(q.CLAIM_LANE_HEAD, (now, worker_id, now + lease_us, namespace, key, token)).fetchall()
            return _job_row(rows[0]) if rows else None

        writer, _ = await self._ensure_ready()
        return await writer.submit(run, on_orphan=self._release_orphans)

    async def heartbeat(self, leases: Sequence[Lease], lease: timedelta) -> list[LeaseState]:
        if not leases:
            return []
        lease_us = _us(lease.total_seconds())
        wanted = _dumps([[held.job_id, held.token] for held in leases])

        def run(conn: sqlite3.Connection) -> list[LeaseState]:
            now = _now()
            (found,) = conn.execute(q.HELD_LEASES, (wanted,)).fetchone()
            held = {(job_id, token): bool(cancel) for job_id, token, cancel in json.loads(found)}
            if held:
                conn.execute(q.HEARTBEAT, (now + lease_us, now, _dumps([job_id for job_id, _ in held])))
            out: list[LeaseState] = []
            for lease_ in leases:
                cancel = held.get((lease_.job_id, lease_.token))
                out.append(
                    LeaseState(lease_, held=False)
                    if cancel is None
                    else LeaseState(lease_, held=True, cancel_requested=cancel)
                )
            return out

        return await self._write(run)

    async def finish(self, finishes: Sequence[Finish]) -> list[bool]:
        for f in finishes:
            if f.status is JobStatus.PROCESSING or (f.release and f.status is not JobStatus.PENDING):
                raise ValidationError(
                    f"a Finish must move the job to pending, completed, failed or cancelled (release: pending), "
                    f"got {f.status.value!r}",
                    field="status",
                )
        if not finishes:
            return []

        def apply(conn: sqlite3.Connection, now: int, group: Sequence[tuple[int, Finish]], out: list[bool]) -> bool:
            """Apply finishes of distinct jobs: releases one by one (rare), the rest as one FINISH_MANY statement
            for the leases that still hold, plus one INSERT_ATTEMPTS (and the LOST records of stale reports).
            Returns whether local waiters should wake (a job became due again)."""
            woke = False
            others: list[tuple[int, Finish]] = []
            for i, f in group:
                if f.release:
                    lease = f.lease
                    cur = conn.execute(q.RELEASE, (now, _ots(f.run_at), f.error, lease.job_id, lease.token))
                    out[i] = cur.rowcount == 1
                    woke = woke or out[i]
                else:
                    others.append((i, f))
            if not others:
                return woke
            wanted = _dumps([[f.lease.job_id, f.lease.token] for _, f in others])
            (found,) = conn.execute(q.HELD_LEASES, (wanted,)).fetchone()
            live = {job_id for job_id, _, _ in json.loads(found)}
            batch: list[list[Any]] = []
            attempts: list[tuple[Any, ...]] = []
            stale: list[tuple[Any, ...]] = []
            for i, f in others:
                if f.lease.job_id not in live:
                    if f.attempt is not None:
                        stale.append(_attempt_params(not_applied(f.attempt), f.lease.token))
                    continue
                out[i] = True
                status = f.status
                completed = status is JobStatus.COMPLETED
                run_at = None
                if status is JobStatus.PENDING:
                    run_at = now if f.run_at is None else _ts(f.run_at)
                    woke = woke or run_at <= now
                batch.append(
                    [
                        f.lease.job_id,
                        f.lease.token,
                        status.value,
                        None if completed else f.error,
                        _dumps(f.result) if completed else None,
                        run_at,
                    ]
                )
                if f.attempt is not None:
                    attempts.append(_attempt_params(f.attempt, f.lease.token))
            if batch:
                conn.execute(q.FINISH_MANY, (now, _dumps(batch)))
            if attempts:
                conn.execute(q.INSERT_ATTEMPTS, (_dumps(attempts),))
            if stale:
                conn.execute(q.INSERT_STALE_ATTEMPTS, (_dumps(stale),))
            return woke

        def run(conn: sqlite3.Connection) -> tuple[list[bool], bool]:
            now = _now()
            out = [False] * len(finishes)
            indexed = list(enumerate(finishes))
            if len({f.lease.job_id for f in finishes}) == len(finishes):
                return out, apply(conn, now, indexed, out)
            # Several reports on one job (a stale one and a live one, a repeat): apply them strictly in order,
            # so each sees the state the previous one left.
            woke = False
            for item in indexed:
                woke = apply(conn, now, [item], out) or woke
            return out, woke

        result, _ = await self._write(run, _second)
        return result

    async def wait_for_jobs(self, timeout: float) -> None:
        """Wait for a wake-up from this process or another one (wake.py), or the timeout.

        The first wait of this store in this process starts listening for other processes. Senders look for new
        listeners only every few milliseconds, so for a moment after the socket is bound an enqueue elsewhere may
        not be announced to it: waits in that moment end by `hub.horizon`, and the caller's next claim finds such
        jobs (a spurious return, allowed by the contract)."""
        timeout = max(0.0, timeout)
        hub = self._hub
        pid = os.getpid()
        if self._listening_pid != pid:
            with self._lock:  # waiters on two threads' loops: listen once
                first, self._listening_pid = self._listening_pid != pid, pid
            if first:
                hub.listen()
        early = hub.horizon - time.monotonic()
        if early > 0:
            timeout = min(timeout, early)
        await hub.local.wait(timeout)

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
        queues_json = json.dumps(list(dict.fromkeys(queues)))
        tasks_json = None if tasks is None else _dumps(list(dict.fromkeys(tasks)))
        wanted = None if namespaces is None else set(namespaces)
        excluded = set(exclude_namespaces)

        def run(conn: sqlite3.Connection) -> float | None:
            best: int | None = None
            full: dict[tuple[str, str], bool] = {}
            (plan,) = conn.execute(q.SELECT_CLAIM_ARMS, (queues_json, tasks_json)).fetchone()  # claim's own plan
            for ns, queue, task, cap in json.loads(plan):
                if ns in excluded or (wanted is not None and ns not in wanted):
                    continue
                if cap is not None:
                    if (ns, queue) not in full:
                        busy = conn.execute(q.COUNT_PROCESSING_IN_QUEUE, (ns, queue)).fetchone()[0]
                        full[(ns, queue)] = busy >= cap
                    if full[(ns, queue)]:
                        continue
                (first,) = conn.execute(q.NEXT_DUE_IN_RANGE, (ns, queue, task)).fetchone()
                if first is not None and (best is None or first < best):
                    best = first
            return None if best is None else (best - _now()) / 1e6

        return await self._read(run, snapshot=True)

    async def mark_timed_out(self, lease: Lease) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            return conn.execute(q.MARK_TIMED_OUT, (_now(), lease.job_id, lease.token)).rowcount == 1

        return await self._write(run)

    # ---- maintenance ----------------------------------------------------------------------------------------

    async def rescue(self, now: datetime | None = None, limit: int = 1000) -> list[Job]:
        def run(conn: sqlite3.Connection) -> list[Job]:
            at = _now() if now is None else _ts(now)
            out: list[Job] = []
            attempts: list[tuple[Any, ...]] = []
            for job_id, try_number, worker_id, started_at, token in conn.execute(
                q.SELECT_EXPIRED, (at, max(0, limit))
            ).fetchall():
                error = f"lease expired: worker {worker_id} stopped heartbeating"
                attempts.append(
                    (
                        job_id,
                        try_number,
                        AttemptOutcome.LOST.value,
                        LOST_STATUS_CODE,
                        at if started_at is None else started_at,
                        at,
                        worker_id,
                        None,
                        error,
                        None,
                        token or f"try-{try_number}",  # a claim made before fencing tokens existed
                    )
                )
                rows = conn.execute(q.RESCUE, (at, error, job_id, token)).fetchall()
                out.extend(_job_row(r) for r in rows)
            if attempts:
                conn.execute(q.INSERT_ATTEMPTS, (_dumps(attempts),))
            return out

        return await self._write(run, _any_pending)

    async def prune(
        self, completed_before: datetime, failed_before: datetime, limit: int = 10_000, *, namespace: str | None = None
    ) -> int:
        """Deletes in chunks of PRUNE_CHUNK jobs, one short transaction each, so that claims and finishes of
        running workers slip in between instead of waiting for one long delete."""
        deleted = 0
        for status, before in (
            (JobStatus.COMPLETED, completed_before),
            (JobStatus.FAILED, failed_before),
            (JobStatus.CANCELLED, failed_before),
        ):
            while deleted < limit:
                chunk = min(PRUNE_CHUNK, limit - deleted)
                n = await self._write(_pruner(status.value, _ts(before), chunk, namespace))
                deleted += n
                if n < chunk:
                    break
        return deleted

    # ---- inspection and management --------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        rows = await self._read(lambda conn: conn.execute(q.SELECT_JOB, (job_id,)).fetchall())
        return _job_row(rows[0]) if rows else None

    async def list_jobs(self, filter: JobFilter, limit: int = 20, offset: int = 0) -> Page[Job]:
        names, params = _filter_params(filter)
        where = q.where_clause(names)
        offset = max(0, offset)
        limit_ = max(0, limit)

        def run(conn: sqlite3.Connection) -> tuple[int, list[Any]]:
            total = conn.execute(q.COUNT_JOBS.format(where=where), params).fetchone()[0]
            page_params = {**params, "limit": limit_, "offset": offset}
            return total, conn.execute(q.LIST_JOBS.format(where=where), page_params).fetchall()

        total, rows = await self._read(run, snapshot=True)
        return Page(items=[_job_row(r) for r in rows], total=total, limit=limit, offset=offset)

    async def attempts(self, job_id: str) -> list[Attempt]:
        rows = await self._read(lambda conn: conn.execute(q.SELECT_ATTEMPTS, (job_id,)).fetchall())
        return [_attempt(r) for r in rows]

    async def stats(self, namespace: str | None = None, queue: str | None = None, task: str | None = None) -> Stats:
        names, params = _filter_params(JobFilter(namespace=namespace, queue=queue, task=task))
        sql = q.STATS.format(where=q.where_clause(names))
        scheduled_sql = q.COUNT_SCHEDULED.format(where=q.where_clause([*names, "scheduled"]))

        def run(conn: sqlite3.Connection) -> tuple[list[Any], int]:
            rows = conn.execute(sql, params).fetchall()
            return rows, conn.execute(scheduled_sql, {**params, "now": _now()}).fetchone()[0]

        rows, scheduled = await self._read(run, snapshot=True)
        counts = {status: n for status, n in rows}
        return Stats(
            pending=counts.get("pending", 0),
            processing=counts.get("processing", 0),
            completed=counts.get("completed", 0),
            failed=counts.get("failed", 0),
            cancelled=counts.get("cancelled", 0),
            scheduled=scheduled,
        )

    @staticmethod
    def _get(conn: sqlite3.Connection, job_id: str) -> Job:
        rows = conn.execute(q.SELECT_JOB, (job_id,)).fetchall()
        if not rows:
            raise JobNotFound(job_id)
        return _job_row(rows[0])

    async def cancel(self, job_id: str) -> Job:
        def run(conn: sqlite3.Connection) -> Job:
            job = self._get(conn, job_id)
            now = _now()
            if job.status is JobStatus.PENDING:
                return _job_row(conn.execute(q.CANCEL_PENDING, (now, job_id)).fetchall()[0])
            if job.status is JobStatus.PROCESSING:
                return _job_row(conn.execute(q.REQUEST_CANCEL, (now, job_id)).fetchall()[0])
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
            return _job_row(conn.execute(q.REQUEUE, (_now(), job_id)).fetchall()[0])

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
            return _job_row(conn.execute(q.RUN_NOW, (_now(), job_id)).fetchall()[0])

        return await self._write(run, _always)

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
            if conn.execute(q.INSERT_NAMESPACE_IF_ABSENT, (stored.name, _namespace_doc(stored))).rowcount == 0:
                raise NamespaceExists(stored.name)
            return stored

        return await self._write(run)

    async def put_namespace(self, namespace: Namespace, *, expected_revision: int | None = None) -> Namespace:
        def run(conn: sqlite3.Connection) -> Namespace:
            row = conn.execute(q.SELECT_NAMESPACE, (namespace.name,)).fetchone()
            old = None if row is None else _namespace_from_doc(row[0])
            if expected_revision is not None:
                if old is None:
                    raise NamespaceNotFound(namespace.name)
                if old.revision != expected_revision:
                    raise RevisionConflict(namespace.name, expected_revision, old.revision)
            stored = replace(namespace, extra=dict(namespace.extra))
            if old is not None:
                stored = replace(stored, created=old.created, updated=utcnow(), revision=old.revision + 1)
            conn.execute(q.UPSERT_NAMESPACE, (stored.name, _namespace_doc(stored)))
            return stored

        return await self._write(run)

    async def get_namespace(self, name: str) -> Namespace | None:
        rows = await self._read(lambda conn: conn.execute(q.SELECT_NAMESPACE, (name,)).fetchall())
        if rows:
            return _namespace_from_doc(rows[0][0])
        return DEFAULT_NAMESPACE_SETTINGS if name == DEFAULT_NAMESPACE else None

    async def list_namespaces(self) -> list[Namespace]:
        rows = await self._read(lambda conn: conn.execute(q.LIST_NAMESPACES).fetchall())
        found = {ns.name: ns for ns in (_namespace_from_doc(r[0]) for r in rows)}
        found.setdefault(DEFAULT_NAMESPACE, DEFAULT_NAMESPACE_SETTINGS)
        return [found[name] for name in sorted(found)]

    async def delete_namespace(self, name: str) -> bool:
        if name == DEFAULT_NAMESPACE:
            raise ValidationError("the namespace 'default' always exists and cannot be deleted", field="name")

        def run(conn: sqlite3.Connection) -> bool:
            conn.execute(q.DELETE_ATTEMPTS_OF_NAMESPACE, (name,))
            jobs = conn.execute(q.DELETE_JOBS_OF_NAMESPACE, (name,)).rowcount
            conn.execute(q.RESET_QUEUES_OF_NAMESPACE, (name,))
            return conn.execute(q.DELETE_NAMESPACE, (name,)).rowcount > 0 or jobs > 0

        return await self._write(run)

    # ---- queues ----------------------------------------------------------------------------------------------

    async def put_queue_settings(self, settings: QueueSettings) -> QueueSettings:
        if settings.concurrency is not None and settings.concurrency < 0:
            raise ValidationError("queue concurrency must be ≥ 0 (or None for no limit)", field="concurrency")

        def run(conn: sqlite3.Connection) -> QueueSettings:
            conn.execute(
                q.UPSERT_QUEUE_SETTINGS,
                (settings.namespace, settings.name, int(settings.paused), settings.concurrency),
            )
            return settings

        return await self._write(run, _always)  # a resumed queue or a raised limit may free jobs

    async def list_queues(self, namespace: str | None = None) -> list[QueueInfo]:
        names = [] if namespace is None else ["namespace"]
        where = q.where_clause(names)
        scheduled_where = q.where_clause([*names, "scheduled"])

        def run(conn: sqlite3.Connection) -> tuple[list[Any], list[Any], list[Any]]:
            params = {"namespace": namespace, "now": _now()}
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
        settings: dict[tuple[str, str], tuple[bool, int | None]] = {}
        for ns, name, paused, concurrency, configured in setting_rows:
            settings[(ns, name)] = (bool(paused), concurrency)
            if configured:
                counts.setdefault((ns, name), _zero_counts())
        return [
            QueueInfo(
                namespace=key[0],
                name=key[1],
                paused=settings.get(key, (False, None))[0],
                counts=counts[key],
                concurrency=settings.get(key, (False, None))[1],
            )
            for key in sorted(counts)
        ]

    # ---- workers ---------------------------------------------------------------------------------------------

    async def register_worker(self, info: WorkerInfo) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(q.DELETE_EXPIRED_WORKERS, (_now(),))
            conn.execute(q.UPSERT_WORKER, (info.id, _worker_doc(info), _ts(info.started_at), _ts(info.expires_at)))

        await self._write(run)

    async def unregister_worker(self, worker_id: str) -> None:
        await self._write(lambda conn: conn.execute(q.DELETE_WORKER, (worker_id,)).rowcount)

    async def list_workers(self) -> list[WorkerInfo]:
        rows = await self._read(lambda conn: conn.execute(q.LIST_WORKERS, (_now(),)).fetchall())
        return [_worker_from_doc(r[0]) for r in rows]

    # ---- leader election ---------------------------------------------------------------------------------------

    async def elect(self, name: str, candidate: str, ttl: float) -> Leadership:
        def run(conn: sqlite3.Connection) -> Leadership:
            now = _now()
            conn.execute(q.ELECT, (name, candidate, now + _us(ttl), now))
            holder, term, expires = conn.execute(q.SELECT_LEADER, (name,)).fetchone()
            return Leadership(name, holder, term, (expires - now) / 1e6, held=holder == candidate and expires > now)

        return await self._write(run)

    async def resign(self, name: str, candidate: str) -> None:
        await self._write(lambda conn: conn.execute(q.RESIGN, (name, candidate, _now())).rowcount)

    async def leaders(self) -> list[Leadership]:
        def run(conn: sqlite3.Connection) -> list[Leadership]:
            now = _now()
            rows = conn.execute(q.LIST_LEADERS, (now,)).fetchall()
            return [Leadership(n, h, t, (e - now) / 1e6) for n, h, t, e in rows]

        return await self._read(run)

    # ---- key-value -------------------------------------------------------------------------------------------

    async def kv_get(self, key: str) -> str | None:
        rows = await self._read(lambda conn: conn.execute(q.KV_GET, (key, _now())).fetchall())
        return rows[0][0] if rows else None

    async def kv_set(self, key: str, value: str, *, ttl: float | None = None, only_if_absent: bool = False) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            now = _now()
            expires = None if ttl is None else now + _us(ttl)
            if only_if_absent:
                return conn.execute(q.KV_SET_IF_ABSENT, (key, value, expires, now)).rowcount > 0
            conn.execute(q.KV_SET, (key, value, expires))
            return True

        return await self._write(run)

    async def kv_setdefault(self, key: str, value: str, *, ttl: float | None = None) -> tuple[str, bool]:
        def run(conn: sqlite3.Connection) -> tuple[str, bool]:
            now = _now()
            expires = None if ttl is None else now + _us(ttl)
            if conn.execute(q.KV_SET_IF_ABSENT, (key, value, expires, now)).rowcount > 0:
                return value, True
            return str(conn.execute(q.KV_VALUE, (key,)).fetchone()[0]), False  # live: it refused the insert

        return await self._write(run)

    async def kv_delete(self, key: str) -> None:
        await self._write(lambda conn: conn.execute(q.KV_DELETE, (key,)).rowcount)


PRUNE_CHUNK = 500


def _drop_files(path: str, busy_timeout: float) -> None:
    """`drop()` off the event loop: Conveyor's tables only, from a file shared with the application; otherwise the
    file with its -wal, -shm and -journal files and its wake directory."""
    if os.path.exists(path) and _drop_tables_if_shared(path, busy_timeout):
        return
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass
    remove_wake_directory(os.path.realpath(path))


def _drop_tables_if_shared(path: str, busy_timeout: float) -> bool:
    """When the file holds tables that are not Conveyor's (the application's own), drop Conveyor's tables from it
    in one transaction and answer True (the file stays); otherwise change nothing and answer False."""
    try:
        conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"cannot open SQLite database {path} to drop it: {exc}") from exc
    try:
        if not conn.execute(q.FOREIGN_TABLES).fetchall():
            return False
        conn.execute("BEGIN IMMEDIATE")
        for (table,) in conn.execute(q.CONVEYOR_TABLES).fetchall():
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        conn.execute("COMMIT")
        return True
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc) or "malformed" in str(exc):
            return False  # not a database at all: nothing of anyone's to keep
        raise StoreUnavailable(f"cannot drop Conveyor's tables from SQLite database {path}: {exc}") from exc
    finally:
        conn.close()


def _pruner(status: str, before: int, chunk: int, namespace: str | None) -> Callable[[sqlite3.Connection], int]:
    """One prune transaction: up to `chunk` jobs of `status` finished before `before` (in `namespace` when
    given), with their attempts."""

    def run(conn: sqlite3.Connection) -> int:
        ids = [r[0] for r in conn.execute(q.SELECT_PRUNABLE, (status, before, chunk, namespace)).fetchall()]
        if ids:
            doomed = json.dumps(ids)
            conn.execute(q.DELETE_ATTEMPTS_OF, (doomed,))
            conn.execute(q.DELETE_JOBS, (doomed,))
        return len(ids)

    return run


def _zero_counts() -> dict[str, int]:
    counts = {status.value: 0 for status in JobStatus}
    counts["scheduled"] = 0
    return counts


def _any_new(jobs: list[Job]) -> bool:
    return any(not job.duplicate for job in jobs)


def _any_pending(jobs: list[Job]) -> bool:
    return any(job.status is JobStatus.PENDING for job in jobs)


def _second(result: tuple[Any, bool]) -> bool:
    return result[1]


def _always(_: object) -> bool:
    return True


def _swallow(fut: asyncio.Future[Any]) -> None:
    """Retrieve a fire-and-forget future's outcome; a failed hand-back is logged, the lease expiry covers it."""
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("could not hand back jobs of a cancelled claim: %s", fut.exception())
