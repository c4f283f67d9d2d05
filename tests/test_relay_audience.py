"""Events go to the store only while some process listens (conveyor.relay, "Only when someone listens"): with no
listener a worker or an enqueuing process sends nothing — the cost of encoding and publishing every job's events
is not paid for nobody — and once a listener announces itself, senders find it and send. Real stores; the raw
feed of the store is read directly, as another process's relay would."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from conveyor import Conveyor
from conveyor.relay import AUDIENCE_CHECK, LISTENERS_KEY, decode_message
from tests.conftest import backend


async def _messages(feed: object, wait: float) -> list[str]:
    try:
        return await asyncio.wait_for(feed.get(), wait)  # type: ignore[attr-defined]
    except TimeoutError:
        return []


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "redis"])
async def test_nothing_is_sent_until_a_listener_announces_itself(kind: str, tmp_path: Path) -> None:
    module = backend(kind)
    url = module.fresh_url(tmp_path)
    app = Conveyor(url)
    try:
        await app.aopen()
        feed = await app.store.subscribe_events()  # a raw subscriber that has not announced itself
        try:
            await app.aenqueue("t", {"n": 1})
            assert await _messages(feed, 1.5) == [], "sent although nobody announced that it listens"

            await app.store.kv_set(LISTENERS_KEY, "another-process", ttl=30)
            await asyncio.sleep(AUDIENCE_CHECK + 0.2)  # the sender's "nobody listens" has expired by now
            job = await app.aenqueue("t", {"n": 2})
            got = await _messages(feed, 10)
            events = [e for message in got for e in decode_message(message)[2]]
            assert [(e.type, e.job.id) for e in events] == [("push", job.id)]
        finally:
            await feed.aclose()
    finally:
        await app.aclose()
        await module.cleanup(url)
