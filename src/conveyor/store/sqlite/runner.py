"""A dedicated thread owning one SQLite connection, driven from asyncio.

Why: sqlite3 calls block (disk I/O, and lock waits up to busy_timeout when another process writes). Running them on
the event loop would stall every coroutine of the process, so each connection lives on its own thread and callers
await an asyncio future that the thread resolves with `call_soon_threadsafe`. This is leaner than
`run_in_executor` (no concurrent.futures wrapper) and keeps one connection per thread, as sqlite3 prefers.

The thread also owns the connection's life: it connects lazily on the first call, retries briefly while the
database is busy, turns driver errors into Conveyor errors, and drops a broken connection so that a later call
reconnects by itself.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from conveyor.errors import ConveyorError, StoreUnavailable

T = TypeVar("T")

Connect = Callable[[], sqlite3.Connection]
_Item = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


def is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds the lock longer than busy_timeout."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    text = str(exc)
    return "database is locked" in text or "database is busy" in text or "database table is locked" in text


class ConnectionThread:
    """One thread, one connection, a FIFO of calls. Calls run one at a time in submission order."""

    def __init__(self, name: str, connect: Connect, describe: str, busy_retry_seconds: float) -> None:
        self._name = name
        self._connect = connect
        self._describe = describe
        self._busy_retry_seconds = busy_retry_seconds
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._conn: sqlite3.Connection | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put((fn, fut, loop))
        return fut

    async def stop(self) -> None:
        """Finish queued calls, close the connection, end the thread."""
        self._queue.put(None)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    def stop_nowait(self) -> None:
        self._queue.put(None)

    # ---- the thread -------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._close()
                return
            fn, fut, loop = item
            if fut.cancelled():  # the caller gave up before we started: do not act for nobody
                continue
            try:
                result = self._call(fn)
            except BaseException as exc:
                _deliver(loop, fut, None, exc)
            else:
                _deliver(loop, fut, result, None)

    def _call(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        deadline: float | None = None
        delay = 0.005
        while True:
            try:
                conn = self._conn
                if conn is None:
                    conn = self._conn = self._connect()
                return fn(conn)
            except ConveyorError:
                raise
            except sqlite3.OperationalError as exc:
                if is_busy(exc):
                    now = time.monotonic()
                    if deadline is None:
                        deadline = now + self._busy_retry_seconds
                    if now < deadline:
                        time.sleep(delay)
                        delay = min(delay * 2, 0.25)
                        continue
                    raise StoreUnavailable(
                        f"SQLite database {self._describe} stayed locked by another connection for more than "
                        f"{self._busy_retry_seconds:g}s beyond busy_timeout; retry later: {exc}"
                    ) from exc
                self._close()  # the next call reconnects
                raise StoreUnavailable(f"SQLite database {self._describe} is unavailable: {exc}") from exc
            except sqlite3.IntegrityError as exc:
                raise ConveyorError(f"SQLite database {self._describe} refused a write: {exc}") from exc
            except sqlite3.DatabaseError as exc:  # corrupt file, not a database, ...
                self._close()
                raise StoreUnavailable(f"SQLite database {self._describe} cannot be used: {exc}") from exc

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


def _deliver(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    try:
        loop.call_soon_threadsafe(_resolve, fut, result, exc)
    except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
        pass


def _resolve(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
