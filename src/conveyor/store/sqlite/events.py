"""Events across processes on SQLite: a table of published messages (`conveyor_events`, migration 10), polled.

SQLite has no LISTEN/NOTIFY, and the wake-up datagrams (wake.py) are sent only after the store's own commits, so a
message published inside a caller's transaction (a transactional enqueue) could not wait for that commit. A row
can: it becomes visible when the transaction that wrote it commits, and never if it rolls back.

* `publish_events` inserts one row per message in one write transaction (after the enqueue's or finish's own
  commit; on the caller's connection, inside the caller's transaction). Every PRUNE_EVERY seconds a publisher
  deletes rows older than KEEP_SECONDS, except the newest (so SQLite never hands out a seq again: a plain rowid
  takes max + 1).
* `subscribe_events` reads the highest seq when it is called (what it will not deliver) and then polls every
  POLL_SECONDS on the store's reader thread for rows above the last one it delivered. Seqs follow commit order
  (SQLite has one writer at a time), so no committed row is skipped; a subscriber that cannot read for longer than
  KEEP_SECONDS (a closed store) misses the rows pruned meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from conveyor.errors import ConveyorError
from conveyor.store.feed import EventFeed
from conveyor.store.sqlite import queries as q
from conveyor.store.sqlite.rows import clock_us, seconds_us

__all__ = ["POLL_SECONDS", "insert", "subscribe"]

log = logging.getLogger("conveyor.store.sqlite")

T = TypeVar("T")

POLL_SECONDS = 0.05
KEEP_SECONDS = 120.0
PRUNE_EVERY = 10.0


def insert(conn: sqlite3.Connection, messages: Sequence[str], prune: bool) -> None:
    now = clock_us()
    conn.executemany(q.EVENTS_INSERT, [(now, m) for m in messages])
    if prune:
        conn.execute(q.EVENTS_PRUNE, (now - seconds_us(KEEP_SECONDS),))


def _after(conn: sqlite3.Connection, *, last: int) -> list[tuple[int, str]]:
    return conn.execute(q.EVENTS_AFTER, (last,)).fetchall()


async def subscribe(
    read: Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]], ready: Callable[[], bool]
) -> EventFeed:
    """A feed polling through `read` (the store's reader thread) while `ready()` (the store is open)."""
    last: int = (await read(lambda conn: conn.execute(q.EVENTS_LAST).fetchone()))[0]

    async def close() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    feed = EventFeed(close)

    async def run() -> None:
        nonlocal last
        failing = False
        while not feed.closed:
            await asyncio.sleep(POLL_SECONDS)
            if not ready():
                continue
            try:
                rows = await read(functools.partial(_after, last=last))
            except ConveyorError as exc:
                if not failing:
                    log.warning("events of other processes not read from SQLite: %s", exc)
                failing = True
                continue
            failing = False
            for seq, message in rows:
                last = seq
                feed.deliver(message)

    task = asyncio.create_task(run(), name="conveyor-sqlite-events")
    return feed
