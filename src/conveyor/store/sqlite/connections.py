"""The SQLite store's connections: one writer thread owning the only writing connection, one reader thread with a
read-only one (runner.ConnectionThread), each call handed to one of them as a function; every write one `BEGIN
IMMEDIATE` transaction, and the wake-ups owed after its commit (see the store's module doc)."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar, TypeVar

from conveyor.errors import (
    StoreUnavailable,
)
from conveyor.model import (
    DEFAULT_NAMESPACE,
    DEFAULT_NAMESPACE_SETTINGS,
    Finish,
    Job,
    JobStatus,
    utcnow,
)
from conveyor.store.base import Store
from conveyor.store.sqlite import queries as q
from conveyor.store.sqlite.checkpoint import WRITER_AUTOCHECKPOINT, Checkpointer
from conveyor.store.sqlite.migrations import apply_migrations
from conveyor.store.sqlite.rows import clock_us, namespace_doc
from conveyor.store.sqlite.runner import ConnectionThread
from conveyor.store.sqlite.wake import WakeHub

__all__ = ["SQLiteConnections"]

log = logging.getLogger("conveyor.store.sqlite")

T = TypeVar("T")


class SQLiteConnections(Store):
    """The SQLite store's base: its two connection threads (writer, reader), how a call runs on one of them, and the
    wake-ups a committed write owes. The store (store.py) sets these attributes in its constructor."""

    url: str
    path: str
    busy_timeout: float
    busy_retry: float
    synchronous: str
    cache_size_kib: int
    _hub: WakeHub
    _wake_due: bool
    _lock: threading.Lock
    _writer: ConnectionThread | None
    _checkpointer: Checkpointer | None
    _reader: ConnectionThread | None
    _ready: bool

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
        seed = namespace_doc(replace(DEFAULT_NAMESPACE_SETTINGS, created=now, updated=now))
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
            now = clock_us()
            for f in releases:
                conn.execute(q.RELEASE, (now, None, None, f.lease.job_id, f.lease.token))

        fut = writer.submit(run, self._wake_later)
        fut.add_done_callback(_log_failed_hand_back)

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


def _log_failed_hand_back(fut: asyncio.Future[Any]) -> None:
    """Retrieve a fire-and-forget future's outcome; a failed hand-back is logged, the lease expiry covers it."""
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("could not hand back jobs of a cancelled claim: %s", fut.exception())
