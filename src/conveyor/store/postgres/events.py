"""Events across processes on PostgreSQL: NOTIFY on the schema's events channel, LISTEN on a connection of each
feed's own.

* `publish_events` sends one NOTIFY per message in one statement (`queries.PUBLISH_EVENTS`); on the caller's
  connection (a transactional enqueue) the same statement runs inside the caller's transaction, so PostgreSQL sends
  the messages at its commit and drops them on a rollback.
* `subscribe_events` opens a dedicated autocommit connection, runs LISTEN and returns only then, so every message
  committed after it returns reaches the feed. The connection reconnects by itself (messages sent while it is down
  are lost: at most once) and pings after a quiet spell so that a dead link is noticed.
* Payloads are at most 8000 bytes in PostgreSQL; the core sends at most EVENT_MESSAGE_MAX_BYTES per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from conveyor.errors import StoreUnavailable
from conveyor.store.feed import EventFeed

__all__ = ["subscribe"]

logger = logging.getLogger("conveyor.store.postgres")

QUIET_PING = 15.0


async def subscribe(
    conninfo: str,
    connect_kwargs: Callable[[], dict[str, Any]],
    channel: str,
    ping: str,
    unavailable: Callable[[BaseException], StoreUnavailable],
) -> EventFeed:
    """A feed LISTENing on `channel`; returns once the first LISTEN is in place (StoreUnavailable if it cannot)."""
    listen = sql.SQL("LISTEN {}").format(sql.Identifier(channel))

    async def connect() -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(conninfo, **connect_kwargs())
        try:
            await conn.execute(listen)
        except BaseException:
            await conn.close()
            raise
        return conn

    try:
        first = await connect()
    except (psycopg.Error, OSError) as exc:
        raise unavailable(exc) from None

    async def close() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    feed = EventFeed(close)

    async def run() -> None:
        conn: psycopg.AsyncConnection[Any] | None = first
        delay = 0.1
        try:
            while not feed.closed:
                try:
                    if conn is None:
                        conn = await connect()
                        logger.warning("events LISTEN connection to PostgreSQL restored")
                        delay = 0.1
                    while True:
                        async for notify in conn.notifies(timeout=QUIET_PING):
                            feed.deliver(notify.payload)
                        await conn.execute(ping)  # type: ignore[arg-type]  # a quiet spell: is the link alive?
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            await conn.close()
                        conn = None
                    if feed.closed:
                        break
                    logger.warning("events LISTEN connection to PostgreSQL lost (%s); reconnecting", exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    task = asyncio.create_task(run(), name=f"conveyor-events-{channel}")
    return feed


def publish_params(messages: Sequence[str]) -> tuple[list[str]]:
    return (list(messages),)
