"""Store conformance: events across processes (store/base.py `publish_events` / `subscribe_events`).

A feed opened by `subscribe_events` receives, in order, every message published on the store's space after the
subscribe call returned — through this store object or another one on the same URL (another process, for every
store but memory) — and nothing after `aclose()`. Messages are opaque texts up to EVENT_MESSAGE_MAX_BYTES.
"""

from __future__ import annotations

import asyncio

from conveyor.conformance.harness import StoreHarness
from conveyor.store import Store
from conveyor.store.feed import EVENT_MESSAGE_MAX_BYTES, EventFeed

WAIT = 20.0


async def _collect(feed: EventFeed, count: int) -> list[str]:
    got: list[str] = []
    while len(got) < count:
        got.extend(await asyncio.wait_for(feed.get(), WAIT))
    return got


async def test_published_messages_reach_every_feed_in_order(store: Store) -> None:
    first = await store.subscribe_events()
    second = await store.subscribe_events()
    try:
        await store.publish_events(["a", "b"])
        await store.publish_events(["c"])
        assert await _collect(first, 3) == ["a", "b", "c"]
        assert await _collect(second, 3) == ["a", "b", "c"]
    finally:
        await first.aclose()
        await second.aclose()


async def test_messages_cross_store_objects(store_harness: StoreHarness, store: Store, store_url: str) -> None:
    other = store_harness.open(store_url)
    await other.open()
    feed = await store.subscribe_events()
    try:
        big = "x" * (EVENT_MESSAGE_MAX_BYTES - 10) + "é" * 5  # the limit counts UTF-8 bytes
        await other.publish_events(['{"n":1}', big])
        assert await _collect(feed, 2) == ['{"n":1}', big]
    finally:
        await feed.aclose()
        await other.close()


async def test_a_closed_feed_gets_nothing_and_others_keep_going(store: Store) -> None:
    closed = await store.subscribe_events()
    open_ = await store.subscribe_events()
    try:
        await closed.aclose()
        await store.publish_events(["after"])
        assert await _collect(open_, 1) == ["after"]
        assert await asyncio.wait_for(closed.get(), WAIT) == []
    finally:
        await open_.aclose()


async def test_publishing_with_no_subscriber_is_fine(store: Store) -> None:
    await store.publish_events(["nobody"])
    await store.publish_events([])
    feed = await store.subscribe_events()
    try:
        await store.publish_events(["later"])
        assert await _collect(feed, 1) == ["later"]  # not "nobody": only what was published after subscribing
    finally:
        await feed.aclose()
