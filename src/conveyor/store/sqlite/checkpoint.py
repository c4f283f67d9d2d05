"""WAL checkpoints for the SQLite store, off the writer thread.

Why: in WAL mode SQLite copies the log back into the database file (a checkpoint) when a commit makes the log
pass `wal_autocheckpoint` pages (1,000 by default), and it does so inside that commit, fsync included. On the
writer thread that is a 10–20 ms stall every few hundred jobs: it was the whole p99 of `conveyor bench`'s latency
phase on SQLite (14–15 ms; about 2 ms without it). So the writer's own threshold is raised to a safety net
(WRITER_AUTOCHECKPOINT) and a thread of its own checkpoints every INTERVAL seconds in PASSIVE mode, which copies
what it can without waiting for, or blocking, readers and writers (SQLite never calls the busy handler in that
mode). If this thread ever falls behind or dies, the writer's safety net still bounds the log.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable

log = logging.getLogger("conveyor.store.sqlite")

INTERVAL = 0.5  # seconds between background checkpoints
WRITER_AUTOCHECKPOINT = 10_000  # pages (about 40 MB): the writer checkpoints itself only past this


class Checkpointer:
    """One background thread that runs `PRAGMA wal_checkpoint(PASSIVE)` on its own connection until stopped."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], describe: str, interval: float = INTERVAL) -> None:
        self._connect = connect
        self._describe = describe
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conveyor-sqlite-checkpoint", daemon=True)
        self.runs = 0
        """Checkpoints completed (for tests and diagnostics)."""
        self.last: tuple[int, int, int] | None = None
        """The last checkpoint's (busy, frames in the log, frames checkpointed), as SQLite reports them."""

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to finish and wait for it (a checkpoint under way completes first)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        failures = 0
        while not self._stop.wait(self._interval):
            try:
                if conn is None:
                    conn = self._connect()
                row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                self.last = (int(row[0]), int(row[1]), int(row[2]))
                self.runs += 1
                failures = 0
            except sqlite3.Error as exc:
                # The file may be gone or locked for a moment; the writer's safety net covers the log meanwhile.
                failures += 1
                if failures == 1:
                    log.debug("background checkpoint of %s failed (%s); will retry", self._describe, exc)
                if conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        conn.close()
                    conn = None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
