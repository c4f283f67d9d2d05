"""Events across processes, the store's side: a subscription's feed of published messages (`Store.subscribe_events`).

A message is a text the core encodes (conveyor.relay: a batch of events with the publisher's id); the store only
carries it to every subscriber of its space, in every process. Delivery is at most once per subscription: a store
outage, or a reconnect of the subscription's connection, loses the messages published meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable

__all__ = ["EVENT_MESSAGE_MAX_BYTES", "EventFeed", "split_messages"]

EVENT_MESSAGE_MAX_BYTES = 7000
"""The longest message a store must carry (UTF-8 bytes): PostgreSQL's NOTIFY payload limit is 8000 bytes."""

MAX_BACKLOG = 100_000
"""A subscriber that does not read keeps at most this many messages (the oldest are dropped)."""


class EventFeed:
    """Messages for one subscriber, filled by the store (from any thread: `deliver`) and read on the loop that
    subscribed (`get`, or `async for`). `aclose()` ends the subscription (its connection, its task)."""

    def __init__(self, on_close: Callable[[], Awaitable[None]] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._messages: deque[str] = deque(maxlen=MAX_BACKLOG)
        self._ready = asyncio.Event()
        self._on_close = on_close
        self.closed = False

    def deliver(self, message: str) -> None:
        """Queue one message (thread-safe)."""
        if self.closed:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._put(message)
        else:
            with contextlib.suppress(RuntimeError):  # the subscriber's loop is closed: nobody reads any more
                self._loop.call_soon_threadsafe(self._put, message)

    def _put(self, message: str) -> None:
        self._messages.append(message)
        self._ready.set()

    async def get(self) -> list[str]:
        """Wait for messages and return all that are queued, oldest first ([] once closed)."""
        while not self._messages and not self.closed:
            self._ready.clear()
            await self._ready.wait()
        out = list(self._messages)
        self._messages.clear()
        return out

    def __aiter__(self) -> EventFeed:
        return self

    async def __anext__(self) -> list[str]:
        messages = await self.get()
        if not messages and self.closed:
            raise StopAsyncIteration
        return messages

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._ready.set()
        if self._on_close is not None:
            await self._on_close()


def split_messages(items: list[str], *, opening: str, closing: str, limit: int = EVENT_MESSAGE_MAX_BYTES) -> list[str]:
    """Join JSON items into messages `opening + item,item,... + closing` of at most `limit` UTF-8 bytes each (an
    item too long for one message alone is dropped: events are small, so it never happens in practice)."""
    out: list[str] = []
    frame = len(opening.encode()) + len(closing.encode())
    current: list[str] = []
    size = frame
    for item in items:
        n = len(item.encode()) + 1
        if frame + n > limit:
            continue
        if current and size + n > limit:
            out.append(opening + ",".join(current) + closing)
            current, size = [], frame
        current.append(item)
        size += n
    if current:
        out.append(opening + ",".join(current) + closing)
    return out
