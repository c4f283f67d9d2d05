"""Dedicated threads owning SQLite connections, driven from asyncio.

Why: sqlite3 calls block (disk I/O, and lock waits up to busy_timeout when another process writes). Running them on
the event loop would stall every coroutine of the process, so each connection lives on its own thread and callers
await an asyncio future that the thread resolves with `call_soon_threadsafe`. This is leaner than
`run_in_executor` (no concurrent.futures wrapper) and keeps one connection per thread, as sqlite3 prefers.

The writer thread also does **group commit**: write operations that queued up while the previous transaction ran
share the next `BEGIN IMMEDIATE … COMMIT`, each inside its own SAVEPOINT so that one operation's error (a Conflict,
an InvalidTransition) undoes only its own changes. Under load (a worker's claim, its batched finish and a
heartbeat arriving together) that saves a commit per operation; with a single caller it changes nothing. Results
are delivered only after the COMMIT succeeded.

Each thread owns its connection's life: it connects lazily, retries while the database is busy (another process
holds the write lock beyond busy_timeout), turns driver errors into Conveyor errors, and drops a broken connection
so that a later call reconnects by itself.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from conveyor.errors import ConveyorError, StoreUnavailable

T = TypeVar("T")

Connect = Callable[[], sqlite3.Connection]
MAX_GROUP = 64  # write operations sharing one transaction at most


class _Item(NamedTuple):
    fn: Callable[[sqlite3.Connection], Any]
    fut: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    after_commit: Callable[[Any], None] | None
    plain: bool  # run outside any transaction (the writer's migrations manage their own)
    on_orphan: Callable[[Any], None] | None  # called on the loop with a result nobody awaits any more


def is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds the lock longer than busy_timeout."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    text = str(exc)
    return "database is locked" in text or "database is busy" in text or "database table is locked" in text


class _Busy(Exception):
    """Internal: the group hit SQLITE_BUSY; roll back and try the whole group again."""


class ConnectionThread:
    """One thread, one connection, a FIFO of calls run in submission order.

    `transactional=True` (the writer): every call runs inside BEGIN IMMEDIATE … COMMIT, grouped as described in
    the module docstring. Otherwise calls run as they are (the reader)."""

    def __init__(
        self,
        name: str,
        connect: Connect,
        describe: str,
        busy_retry_seconds: float,
        *,
        transactional: bool,
        after_group: Callable[[], None] | None = None,
    ) -> None:
        self._connect = connect
        self._after_group = after_group
        self._describe = describe
        self._busy_retry_seconds = busy_retry_seconds
        self._transactional = transactional
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._conn: sqlite3.Connection | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(
        self,
        fn: Callable[[sqlite3.Connection], T],
        after_commit: Callable[[T], None] | None = None,
        *,
        plain: bool = False,
        on_orphan: Callable[[T], None] | None = None,
    ) -> asyncio.Future[T]:
        """Queue fn(connection); the future resolves with its result (after the commit, for the writer).
        `after_commit(result)` runs on the thread right after a successful commit (it may ask for a wake-up, which
        `after_group` sends once the whole group is through). `plain` runs fn outside any transaction, alone.
        `on_orphan(result)` runs on the caller's loop when the caller was cancelled while fn ran (a claim nobody
        will process gives its jobs back)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Item(fn, fut, loop, after_commit, plain or not self._transactional, on_orphan))
        return fut

    async def stop(self) -> None:
        """Finish queued calls, close the connection, end the thread."""
        self._queue.put(None)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    # ---- the thread -------------------------------------------------------------------------------------------

    def _run(self) -> None:
        held: _Item | None = None  # a plain item met while gathering a group, run right after it
        while True:
            item = held if held is not None else self._queue.get()
            held = None
            if item is None:
                self._close()
                return
            if item.plain:
                if not item.fut.cancelled():  # the caller gave up before we started: do not act for nobody
                    self._deliver(item, *self._call_plain(item.fn))
                continue
            group = [item]
            stop = False
            while len(group) < MAX_GROUP:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                if more.plain:
                    held = more
                    break
                group.append(more)
            group = [i for i in group if not i.fut.cancelled()]
            if group:
                outcomes = self._call_group(group)
                for member, (ok, value) in zip(group, outcomes, strict=True):
                    if ok and member.after_commit is not None:
                        try:
                            member.after_commit(value)
                        except Exception:  # a wake-up must never lose a committed result
                            pass
                self._group_done()
                # Deliver last: a woken caller competes with this thread for the GIL, and would hold up the
                # wake-ups above (system calls that hand the GIL over) and the next group.
                for member, (ok, value) in zip(group, outcomes, strict=True):
                    self._deliver(member, ok, value)
            if stop:
                if held is not None and not held.fut.cancelled():
                    self._deliver(held, *self._call_plain(held.fn))
                self._close()
                return

    def _group_done(self) -> None:
        """Run `after_group` once per committed group: the wake-ups that the members' `after_commit`s asked for go
        out once, however many members there were."""
        if self._after_group is not None:
            try:
                self._after_group()
            except Exception:  # a wake-up must never stop the writer
                pass

    def _connection(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            conn = self._conn = self._connect()
        return conn

    def _call_plain(self, fn: Callable[[sqlite3.Connection], Any]) -> tuple[bool, Any]:
        deadline: float | None = None
        delay = 0.005
        while True:
            try:
                return True, fn(self._connection())
            except sqlite3.OperationalError as exc:
                if is_busy(exc):
                    deadline, delay, retry = self._busy_wait(deadline, delay)
                    if retry:
                        continue
                    return False, self._locked_error(exc)
                self._close()  # the next call reconnects
                return False, self._unavailable(exc)
            except BaseException as exc:
                return False, self._translate(exc)

    def _call_group(self, group: list[_Item]) -> list[tuple[bool, Any]]:
        deadline: float | None = None
        delay = 0.005
        while True:
            try:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    outcomes = [self._call_member(conn, member.fn, len(group) > 1) for member in group]
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return outcomes
            except (_Busy, sqlite3.OperationalError) as exc:
                cause = exc.__cause__ if isinstance(exc, _Busy) else exc
                assert cause is not None
                if is_busy(cause):
                    deadline, delay, retry = self._busy_wait(deadline, delay)
                    if retry:
                        continue
                    error: BaseException = self._locked_error(cause)
                else:
                    self._close()
                    error = self._unavailable(cause)
                return [(False, error)] * len(group)
            except BaseException as exc:
                if isinstance(exc, sqlite3.Error) and not isinstance(exc, sqlite3.IntegrityError):
                    self._close()
                return [(False, self._translate(exc))] * len(group)

    def _call_member(
        self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], Any], savepoint: bool
    ) -> tuple[bool, Any]:
        """One operation of the group. Its own failure is contained (savepoint) unless the whole group must go:
        busy or a broken connection."""
        if savepoint:
            conn.execute("SAVEPOINT conveyor_op")
        try:
            value = fn(conn)
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                raise _Busy() from exc
            raise
        except BaseException as exc:
            if not savepoint:
                raise
            conn.execute("ROLLBACK TO conveyor_op")
            conn.execute("RELEASE conveyor_op")
            return False, self._translate(exc)
        if savepoint:
            conn.execute("RELEASE conveyor_op")
        return True, value

    # ---- errors -----------------------------------------------------------------------------------------------

    def _busy_wait(self, deadline: float | None, delay: float) -> tuple[float, float, bool]:
        now = time.monotonic()
        if deadline is None:
            deadline = now + self._busy_retry_seconds
        if now >= deadline:
            return deadline, delay, False
        time.sleep(delay)
        return deadline, min(delay * 2, 0.25), True

    def _locked_error(self, exc: BaseException) -> StoreUnavailable:
        error = StoreUnavailable(
            f"SQLite database {self._describe} stayed locked by another connection for more than "
            f"{self._busy_retry_seconds:g}s beyond busy_timeout; retry later: {exc}"
        )
        error.__cause__ = exc
        return error

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        error = StoreUnavailable(f"SQLite database {self._describe} is unavailable: {exc}")
        error.__cause__ = exc
        return error

    def _translate(self, exc: BaseException) -> BaseException:
        """Conveyor errors and programming errors pass through; driver errors become Conveyor errors."""
        if isinstance(exc, ConveyorError) or not isinstance(exc, sqlite3.Error):
            return exc
        if isinstance(exc, sqlite3.IntegrityError):
            error: ConveyorError = ConveyorError(f"SQLite database {self._describe} refused a write: {exc}")
        else:
            error = StoreUnavailable(f"SQLite database {self._describe} cannot be used: {exc}")
        error.__cause__ = exc
        return error

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            try:
                conn.close()
            except sqlite3.Error:
                pass

    @staticmethod
    def _deliver(item: _Item, ok: bool, value: Any) -> None:
        try:
            item.loop.call_soon_threadsafe(_resolve, item.fut, ok, value, item.on_orphan)
        except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
            pass


def _resolve(fut: asyncio.Future[Any], ok: bool, value: Any, on_orphan: Callable[[Any], None] | None) -> None:
    if fut.done():
        if ok and on_orphan is not None and fut.cancelled():
            on_orphan(value)
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)
