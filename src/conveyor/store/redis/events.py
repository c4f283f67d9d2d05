"""Events across processes on Redis: PUBLISH on the prefix's channel `P:events` (keys.py), a pub/sub subscription
per feed.

* `publish_events` PUBLISHes each message, in order, in one pipeline (one round trip). It runs after the enqueue's
  or finish's script has returned, so a subscriber that receives a push or run event finds the job stored.
* `subscribe_events` returns once Redis confirmed the SUBSCRIBE, so every message published after it returns
  reaches the feed. On a lost connection the feed subscribes again on a new one (messages published meanwhile are
  lost: pub/sub is at most once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from conveyor.errors import StoreUnavailable
from conveyor.store.feed import EventFeed

__all__ = ["subscribe"]

log = logging.getLogger("conveyor.store.redis")

CONFIRM_TIMEOUT = 10.0


async def _subscribed(client: aioredis.Redis, channel: str) -> Any:
    """A PubSub whose SUBSCRIBE Redis has confirmed."""
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(channel)
        deadline = asyncio.get_running_loop().time() + CONFIRM_TIMEOUT
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError(f"Redis did not confirm SUBSCRIBE {channel} in {CONFIRM_TIMEOUT:g} s")
            message = await pubsub.get_message(timeout=min(left, 1.0))
            if message is not None and message.get("type") == "subscribe":
                return pubsub
    except BaseException:
        with contextlib.suppress(Exception):
            await pubsub.aclose()
        raise


async def subscribe(
    client: Callable[[], aioredis.Redis],
    channel: str,
    errors: tuple[type[BaseException], ...],
    unavailable: Callable[[], StoreUnavailable],
) -> EventFeed:
    try:
        first = await _subscribed(client(), channel)
    except errors as exc:
        raise unavailable() from exc

    async def close() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    feed = EventFeed(close)

    async def run() -> None:
        pubsub: Any = first
        delay = 0.1
        try:
            while not feed.closed:
                try:
                    if pubsub is None:
                        pubsub = await _subscribed(client(), channel)
                        log.warning("events subscription to Redis restored")
                        delay = 0.1
                    while True:
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                        if message is not None and message.get("type") == "message":
                            data = message["data"]
                            feed.deliver(data if isinstance(data, str) else bytes(data).decode())
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if pubsub is not None:
                        with contextlib.suppress(Exception):
                            await pubsub.aclose()
                        pubsub = None
                    if feed.closed:
                        break
                    log.warning("events subscription to Redis lost (%s); subscribing again", exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            if pubsub is not None:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    task = asyncio.create_task(run(), name=f"conveyor-events-{channel}")
    return feed
