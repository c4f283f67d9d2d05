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

Modules: url.py (URL, options), connections.py (threads, `_write`/`_read`), admin.py (inspection and
management, namespaces, queues, workers, election, key-value), rows.py (conversions), insert.py,
files.py (deleting a space), queries.py (every SQL statement), migrations.py, runner.py, wake.py, checkpoint.py;
this module holds the lifecycle, enqueue, the worker's calls and maintenance.
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
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from conveyor.errors import (
    REQUIRE_TRANSACTION_HINT,
    CallerConnectionError,
    Conflict,
    ConveyorError,
    StoreUnavailable,
    ValidationError,
)
from conveyor.model import (
    LOST_STATUS_CODE,
    AttemptOutcome,
    Finish,
    Job,
    JobStatus,
    Lease,
    LeaseState,
    NewJob,
    RateLimit,
    new_lease_tokens,
    not_applied,
    rate_advance,
    rate_allowance,
    rate_from_columns,
    rate_key_value,
)
from conveyor.store.base import DEFAULT_SPACE, refuse_default
from conveyor.store.feed import EventFeed
from conveyor.store.sqlite import events as sqlite_events
from conveyor.store.sqlite import queries as q
from conveyor.store.sqlite.admin import SQLiteAdmin
from conveyor.store.sqlite.checkpoint import Checkpointer
from conveyor.store.sqlite.files import drop_files
from conveyor.store.sqlite.insert import insert_jobs
from conveyor.store.sqlite.migrations import MIGRATIONS
from conveyor.store.sqlite.rows import (
    CONCURRENCY_KEY_AT,
    GROUP_KEY_AT,
    PAYLOAD_AT,
    USER_ID_AT,
    attempt_params,
    claim_order,
    clock_us,
    dumps,
    job_from_row,
    jobs_from_aggregate,
    rate_key_path,
    seconds_us,
    started_job,
    to_us,
    to_us_or_none,
)
from conveyor.store.sqlite.runner import ConnectionThread
from conveyor.store.sqlite.url import OPTIONS, parse_sqlite_url
from conveyor.store.sqlite.wake import hub_for
from conveyor.store.urls import take_options

__all__ = ["CONFLICT_MESSAGE", "SQLiteStore", "parse_sqlite_url"]

log = logging.getLogger("conveyor.store.sqlite")

T = TypeVar("T")

CONFLICT_MESSAGE = "Job queue execution conflict. Retry required."

RATE_KEY_EXPIRY = 16
"""Keys whose rate bucket is full again are deleted by one claim in this many (picked by the clock's microseconds,
so every process takes its share); the others only read the keys that still hold state (tat > now)."""


class SQLiteStore(SQLiteAdmin):
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
        self._events_pruned = 0.0  # monotonic time of the last prune of conveyor_events (publish_events)
        self._registered_ranges: set[tuple[str, str, str]] = set()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.url!r})"

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
        await asyncio.to_thread(drop_files, self.path, self.busy_timeout)

    async def ping(self) -> None:
        await self._read(lambda conn: conn.execute("SELECT COUNT(*) FROM conveyor_schema_migrations").fetchall())

    # ---- events across processes (store/sqlite/events.py) ----------------------------------------------------

    async def publish_events(self, messages: Sequence[str]) -> None:
        if not messages:
            return
        now = time.monotonic()
        prune = now - self._events_pruned >= sqlite_events.PRUNE_EVERY
        if prune:
            self._events_pruned = now
        await self._write(lambda conn: sqlite_events.insert(conn, messages, prune))

    async def subscribe_events(self) -> EventFeed:
        return await sqlite_events.subscribe(self._read, lambda: self._ready)

    def publish_events_on_connection(self, connection: Any, messages: Sequence[str]) -> None:
        if not messages:
            return
        if not isinstance(connection, sqlite3.Connection):
            raise ValidationError(
                f"SQLiteStore.publish_events_on_connection needs a sqlite3.Connection, got {type(connection).__name__}",
                field="connection",
            )
        try:
            sqlite_events.insert(connection, messages, prune=False)
        except sqlite3.Error as exc:
            raise CallerConnectionError(f"publishing events on the caller's sqlite3 connection failed: {exc}") from None

    # ---- enqueue --------------------------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        if not jobs:
            return []
        registered = self._registered_ranges  # read and grown only on the writer thread

        def after_commit(out: list[Job]) -> None:
            registered.update((job.namespace, job.queue, job.task) for job in out)
            if _any_new(out) or any(job.unique_replace for job in jobs):  # a replaced run_at may be sooner
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
        tasks_json = None if tasks is None else dumps(list(dict.fromkeys(tasks)))
        wanted = None if namespaces is None else set(namespaces)
        excluded = set(exclude_namespaces)
        lease_us = seconds_us(lease.total_seconds())

        def run(conn: sqlite3.Connection) -> list[Job]:
            now = clock_us()
            # Ranges grouped by how many jobs each may give: `limit`, or less in a queue with a concurrency cap.
            groups: dict[int, list[list[str]]] = {}
            rooms: dict[tuple[str, str], int] = {}
            rated: dict[tuple[str, str], tuple[RateLimit, int | None]] = {}
            keyed: dict[tuple[str, str], tuple[int | None, dict[str, int]]] = {}  # limit per key, processing per key
            # rate_key queues: rate, rate_key, stored tat per key (keys not listed: full buckets), taken per key
            rate_keyed: dict[tuple[str, str], tuple[RateLimit, str, dict[str, int], dict[str, int]]] = {}
            keyed_ranges: dict[tuple[str, str], list[list[str]]] = {}
            (plan,) = conn.execute(q.SELECT_CLAIM_ARMS, (queues_json, tasks_json)).fetchone()
            for ns, queue, task, cap, rate_limit, rate_period, rate_burst, tat, key_cap, rate_key in json.loads(plan):
                if ns in excluded or (wanted is not None and ns not in wanted):
                    continue
                room = limit
                rate = rate_from_columns(rate_limit, rate_period, rate_burst)
                if rate is not None and rate_key is not None:  # a bucket per key: read apart, below
                    if (ns, queue) not in rate_keyed:
                        if now % RATE_KEY_EXPIRY == 0:  # 1 claim in 16 (by the clock's µs): amortized, still bounded
                            conn.execute(q.EXPIRE_RATE_KEYS, (ns, queue, now))
                        tats = dict(conn.execute(q.SELECT_RATE_KEYS, (ns, queue, now)).fetchall())
                        rate_keyed[(ns, queue)] = (rate, rate_key, tats, {})
                    rate = None
                if cap is not None or rate is not None:
                    if (ns, queue) not in rooms:
                        free = limit
                        if cap is not None:
                            busy = conn.execute(q.COUNT_PROCESSING_IN_QUEUE, (ns, queue)).fetchone()[0]
                            free = cap - busy
                        if rate is not None:
                            free = min(free, rate_allowance(rate, tat, now)[0])
                            rated[(ns, queue)] = (rate, tat)
                        rooms[(ns, queue)] = free
                    room = min(limit, rooms[(ns, queue)])
                    if room <= 0:
                        continue
                if key_cap is not None or (ns, queue) in rate_keyed:  # read apart, passing over blocked keys
                    if (ns, queue) not in keyed:
                        busy_keys = [] if key_cap is None else conn.execute(q.COUNT_PROCESSING_PER_KEY, (ns, queue))
                        keyed[(ns, queue)] = (key_cap, dict(busy_keys))
                    keyed_ranges.setdefault((ns, queue), []).append([ns, queue, task])
                    continue
                groups.setdefault(room, []).append([ns, queue, task])
            if not groups and not keyed_ranges:
                return []
            found: list[tuple[int, list[Any]]] = []
            for room, ranges in groups.items():
                rowids, rows = conn.execute(q.CLAIM_CANDIDATES, (dumps(ranges), now, room, limit)).fetchone()
                if rowids != "[]":
                    found.extend(zip(json.loads(rowids), json.loads(rows), strict=True))
            for pair_key, ranges in keyed_ranges.items():
                key_cap, busy = keyed[pair_key]
                full = dumps([] if key_cap is None else [k for k, n in busy.items() if n >= key_cap])
                room = min(limit, rooms.get(pair_key, limit))
                rate_key, path, dry = None, None, "[]"
                if pair_key in rate_keyed:
                    rate, rate_key, tats, _ = rate_keyed[pair_key]
                    path = rate_key_path(rate_key)
                    dry = dumps([k for k, t in tats.items() if rate_allowance(rate, t, now)[0] <= 0])
                if full == "[]" and dry == "[]":  # no key is blocked: the plain scan (the merge below still counts)
                    rowids, rows = conn.execute(q.CLAIM_CANDIDATES, (dumps(ranges), now, room, limit)).fetchone()
                else:
                    params = (dumps(ranges), now, room, limit, full, rate_key, path, dry)
                    rowids, rows = conn.execute(q.CLAIM_CANDIDATES_KEYED, params).fetchone()
                if rowids != "[]":
                    found.extend(zip(json.loads(rowids), json.loads(rows), strict=True))
            if rooms or keyed or rate_keyed:  # merge in claim order, honouring each capped queue's room and the keys
                found.sort(key=lambda c: (c[1][6], c[1][7], c[1][0]))
                taken: list[tuple[int, list[Any]]] = []
                for rid, r in found:
                    key = (r[1], r[2])
                    if key in rooms and rooms[key] <= 0:
                        continue
                    ck = r[CONCURRENCY_KEY_AT]
                    if key in rate_keyed:
                        rate, rate_key, tats, spent = rate_keyed[key]
                        rk = rate_key_value(rate_key, r[USER_ID_AT], r[GROUP_KEY_AT], ck, r[PAYLOAD_AT])
                        if rate_allowance(rate, tats.get(rk), now)[0] <= spent.get(rk, 0):
                            continue
                    if ck is not None and key in keyed and keyed[key][0] is not None:
                        key_cap, busy = keyed[key]
                        if busy.get(ck, 0) >= (key_cap or 0):
                            continue
                        busy[ck] = busy.get(ck, 0) + 1
                    if key in rate_keyed:
                        spent[rk] = spent.get(rk, 0) + 1
                    if key in rooms:
                        rooms[key] -= 1
                    taken.append((rid, r))
                found = taken
            found = found[:limit]
            if not found:
                return []
            if rate_keyed:  # advance each key's limiter by what this claim starts of it
                for pair_key, (rate, rate_key, tats, _) in rate_keyed.items():
                    started_of: dict[str, int] = {}
                    for _, r in found:
                        if (r[1], r[2]) == pair_key:
                            ck = r[CONCURRENCY_KEY_AT]
                            rk = rate_key_value(rate_key, r[USER_ID_AT], r[GROUP_KEY_AT], ck, r[PAYLOAD_AT])
                            started_of[rk] = started_of.get(rk, 0) + 1
                    advanced = [[rk, rate_advance(rate, tats.get(rk), now, n)] for rk, n in started_of.items()]
                    conn.execute(q.ADVANCE_RATE_KEYS, (*pair_key, dumps(advanced)))
            if rated:  # advance each rate-limited queue's limiter by what this claim starts from it
                started_in: dict[tuple[str, str], int] = {}
                for _, r in found:
                    started_in[(r[1], r[2])] = started_in.get((r[1], r[2]), 0) + 1
                for key, (rate, tat) in rated.items():
                    if key in started_in:
                        conn.execute(q.ADVANCE_RATE, (rate_advance(rate, tat, now, started_in[key]), *key))
            expires = now + lease_us
            tokens = new_lease_tokens(len(found))
            pairs = [[rid, token] for (rid, _), token in zip(found, tokens, strict=True)]
            started = conn.execute(q.CLAIM, (now, worker_id, expires, dumps(pairs))).rowcount
            if started != len(found):  # cannot happen inside one write transaction; read back to be safe
                rowids = json.dumps([rid for rid, _ in found])
                return sorted(
                    jobs_from_aggregate(conn.execute(q.SELECT_JOBS_BY_ROWID, (rowids,)).fetchone()), key=claim_order
                )
            jobs = [started_job(r, now, worker_id, expires, t) for (_, r), t in zip(found, tokens, strict=True)]
            jobs.sort(key=claim_order)
            return jobs

        writer, _ = await self._ensure_ready()
        return await writer.submit(run, on_orphan=self._release_orphans)

    async def claim_user(self, namespace: str, user_id: str, worker_id: str, lease: timedelta) -> Job | None:
        key = f"u:{user_id}"
        lease_us = seconds_us(lease.total_seconds())

        def run(conn: sqlite3.Connection) -> Job | None:
            if conn.execute(q.SELECT_LANE_PROCESSING, (namespace, key)).fetchone() is not None:
                raise Conflict(CONFLICT_MESSAGE)
            now = clock_us()
            token = new_lease_tokens(1)[0]
            rows = conn.execute(q.CLAIM_LANE_HEAD, (now, worker_id, now + lease_us, namespace, key, token)).fetchall()
            return job_from_row(rows[0]) if rows else None

        writer, _ = await self._ensure_ready()
        return await writer.submit(run, on_orphan=self._release_orphans)

    async def heartbeat(self, leases: Sequence[Lease], lease: timedelta) -> list[LeaseState]:
        if not leases:
            return []
        lease_us = seconds_us(lease.total_seconds())
        wanted = dumps([[held.job_id, held.token] for held in leases])

        def run(conn: sqlite3.Connection) -> list[LeaseState]:
            now = clock_us()
            (found,) = conn.execute(q.HELD_LEASES, (wanted,)).fetchone()
            held = {(job_id, token): bool(cancel) for job_id, token, cancel in json.loads(found)}
            if held:
                conn.execute(q.HEARTBEAT, (now + lease_us, now, dumps([job_id for job_id, _ in held])))
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
            if f.status is JobStatus.PROCESSING or ((f.release or f.snooze) and f.status is not JobStatus.PENDING):
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
                    cur = conn.execute(q.RELEASE, (now, to_us_or_none(f.run_at), f.error, lease.job_id, lease.token))
                    out[i] = cur.rowcount == 1
                    woke = woke or out[i]
                else:
                    others.append((i, f))
            if not others:
                return woke
            wanted = dumps([[f.lease.job_id, f.lease.token] for _, f in others])
            (found,) = conn.execute(q.HELD_LEASES, (wanted,)).fetchone()
            live = {job_id for job_id, _, _ in json.loads(found)}
            batch: list[list[Any]] = []
            attempts: list[tuple[Any, ...]] = []
            stale: list[tuple[Any, ...]] = []
            for i, f in others:
                if f.lease.job_id not in live:
                    if f.attempt is not None:
                        stale.append(attempt_params(not_applied(f.attempt), f.lease.token))
                    continue
                out[i] = True
                status = f.status
                completed = status is JobStatus.COMPLETED
                run_at = None
                if status is JobStatus.PENDING:
                    run_at = now if f.run_at is None else to_us(f.run_at)
                    woke = woke or run_at <= now
                batch.append(
                    [
                        f.lease.job_id,
                        f.lease.token,
                        status.value,
                        None if completed else f.error,
                        dumps(f.result) if completed else None,
                        run_at,
                        1 if f.snooze else 0,
                    ]
                )
                if f.attempt is not None:
                    attempts.append(attempt_params(f.attempt, f.lease.token))
            if batch:
                conn.execute(q.FINISH_MANY, (now, dumps(batch)))
            if attempts:
                conn.execute(q.INSERT_ATTEMPTS, (dumps(attempts),))
            if stale:
                conn.execute(q.INSERT_STALE_ATTEMPTS, (dumps(stale),))
            return woke

        def run(conn: sqlite3.Connection) -> tuple[list[bool], bool]:
            now = clock_us()
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
        tasks_json = None if tasks is None else dumps(list(dict.fromkeys(tasks)))
        wanted = None if namespaces is None else set(namespaces)
        excluded = set(exclude_namespaces)

        def run(conn: sqlite3.Connection) -> float | None:
            best: int | None = None
            full: dict[tuple[str, str], bool] = {}
            (plan,) = conn.execute(q.SELECT_CLAIM_ARMS, (queues_json, tasks_json)).fetchone()  # claim's own plan
            now = clock_us()
            full_keys: dict[tuple[str, str], str] = {}
            for ns, queue, task, cap, rate_limit, rate_period, rate_burst, tat, key_cap, rate_key in json.loads(plan):
                if ns in excluded or (wanted is not None and ns not in wanted):
                    continue
                if cap is not None:
                    if (ns, queue) not in full:
                        busy = conn.execute(q.COUNT_PROCESSING_IN_QUEUE, (ns, queue)).fetchone()[0]
                        full[(ns, queue)] = busy >= cap
                    if full[(ns, queue)]:
                        continue
                rate = rate_from_columns(rate_limit, rate_period, rate_burst)
                dry: dict[str, int] = {}  # rate keys out of tokens -> µs until their next one
                if rate is not None and rate_key is not None:
                    for k, t in conn.execute(q.SELECT_RATE_KEYS, (ns, queue, now)).fetchall():
                        wait = rate_allowance(rate, t, now)[1]
                        if wait > 0:
                            dry[k] = wait
                if key_cap is None and not dry:
                    (first,) = conn.execute(q.NEXT_DUE_IN_RANGE, (ns, queue, task)).fetchone()
                else:  # jobs of keys at their limit or out of rate tokens do not count
                    if (ns, queue) not in full_keys:
                        busy_keys = [] if key_cap is None else conn.execute(q.COUNT_PROCESSING_PER_KEY, (ns, queue))
                        at_limit = [k for k, n in busy_keys if key_cap is not None and n >= key_cap]
                        full_keys[(ns, queue)] = dumps(at_limit)
                    path = None if rate_key is None else rate_key_path(rate_key)
                    dry_key = rate_key if dry else None
                    params = (ns, queue, task, full_keys[(ns, queue)], dry_key, path, dumps(list(dry)))
                    (first,) = conn.execute(q.NEXT_DUE_IN_RANGE_KEYED, params).fetchone()
                    if dry:  # the jobs of dry keys: no sooner than the first of those keys' next tokens (a bound)
                        (any_first,) = conn.execute(q.NEXT_DUE_IN_RANGE, (ns, queue, task)).fetchone()
                        if any_first is not None:
                            held = max(any_first, now + min(dry.values()))
                            first = held if first is None else min(first, held)
                if rate_key is not None:
                    rate = None  # applied per key above
                if first is not None and rate is not None:  # no sooner than the queue's next rate token
                    first = max(first, now + rate_allowance(rate, tat, now)[1])
                if first is not None and (best is None or first < best):
                    best = first
            return None if best is None else (best - now) / 1e6

        return await self._read(run, snapshot=True)

    async def mark_timed_out(self, lease: Lease) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            return conn.execute(q.MARK_TIMED_OUT, (clock_us(), lease.job_id, lease.token)).rowcount == 1

        return await self._write(run)

    # ---- maintenance ----------------------------------------------------------------------------------------

    async def rescue(self, now: datetime | None = None, limit: int = 1000) -> list[Job]:
        def run(conn: sqlite3.Connection) -> list[Job]:
            at = clock_us() if now is None else to_us(now)
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
                out.extend(job_from_row(r) for r in rows)
            if attempts:
                conn.execute(q.INSERT_ATTEMPTS, (dumps(attempts),))
            return out

        return await self._write(run, _any_pending)

    async def next_lease_expiry(self) -> float | None:
        def run(conn: sqlite3.Connection) -> float | None:
            (first,) = conn.execute(q.NEXT_LEASE_EXPIRY).fetchone()
            return None if first is None else (first - clock_us()) / 1e6

        return await self._read(run, snapshot=True)

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
                n = await self._write(_pruner(status.value, to_us(before), chunk, namespace))
                deleted += n
                if n < chunk:
                    break
        return deleted


PRUNE_CHUNK = 500


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


def _any_new(jobs: list[Job]) -> bool:
    return any(not job.duplicate for job in jobs)


def _any_pending(jobs: list[Job]) -> bool:
    return any(job.status is JobStatus.PENDING for job in jobs)


def _second(result: tuple[Any, bool]) -> bool:
    return result[1]
