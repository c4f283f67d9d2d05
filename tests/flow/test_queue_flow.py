"""Issue 13 item 7 on every store: `Conveyor.aqueue_flow` shows what a queue's limits are doing now — processing
jobs per key, the rate limiter's tokens and next token (the queue's bucket, or the most limited keys of a rate_key
queue), the jobs due now and the oldest one's wait."""

from __future__ import annotations

from datetime import timedelta

from conveyor import Conveyor
from conveyor.model import NewJob


async def test_the_flow_of_a_queue_under_its_limits(store_url: str) -> None:
    app = Conveyor(store_url)
    await app.aopen()
    try:
        await app.aupdate_queue("q", rate_limit="2/m", rate_burst=2, key_concurrency=3)
        idle = await app.aqueue_flow("q")
        assert idle.rate is not None and idle.rate.tokens == 2 and idle.rate.next_in == 0
        assert (idle.processing, idle.due, idle.oldest_due_age, idle.rate_limited) == (0, 0, None, False)
        store = app.store
        await store.enqueue([NewJob.build("t", {"n": i}, queue="q", concurrency_key=f"k{i % 2}") for i in range(5)])
        got = await store.claim("w", ["q"], 10, timedelta(seconds=30), tasks=["t"])
        assert len(got) == 2
        flow = await app.aqueue_flow("q")
        assert flow.processing == 2 and flow.due == 3 and flow.rate_limited
        assert flow.rate is not None and flow.rate.tokens == 0 and 25 < flow.rate.next_in <= 30.5
        assert sorted(flow.busiest_keys) == [("k0", 1), ("k1", 1)]
        assert flow.oldest_due_age is not None and 0 <= flow.oldest_due_age < 30

        await app.aupdate_queue("q", rate_key="concurrency_key")
        keyed = await app.aqueue_flow("q")
        assert keyed.rate is None and keyed.limited_keys == 0 and not keyed.rate_limited
        more = await store.claim("w", ["q"], 10, timedelta(seconds=30), tasks=["t"])
        assert len(more) == 3  # two of k0 (its own bucket of 2), one of k1
        keyed = await app.aqueue_flow("q")
        assert keyed.limited_keys == 2 and keyed.rate_limited
        assert [b.key for b in keyed.most_limited][:1] == ["k0"] and keyed.most_limited[0].tokens == 0
        assert keyed.settings.rate_key == "concurrency_key" and keyed.processing == 5
    finally:
        await app.aclose()
