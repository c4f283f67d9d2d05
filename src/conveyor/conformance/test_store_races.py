"""Store conformance: atomicity under concurrent calls ("Atomic transitions" in store/base.py).

Several store objects opened on one URL stand in for several worker processes: each has its own connections,
so the database (not a Python lock) must keep claims exclusive, lanes serial, caps honoured and unique keys unique.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from conveyor.conformance.harness import StoreHarness
from conveyor.conformance.helpers import LEASE, complete, enqueue_one, new
from conveyor.errors import Conflict
from conveyor.model import Job, JobFilter, JobStatus, QueueSettings
from conveyor.store import Store

OBJECTS = 3  # store objects sharing the URL


@pytest.fixture
async def stores(store_harness: StoreHarness, store: Store, store_url: str) -> AsyncIterator[list[Store]]:
    others = [store_harness.open(store_url) for _ in range(OBJECTS - 1)]
    for s in others:
        await s.open()
    try:
        yield [store, *others]
    finally:
        for s in others:
            await s.close()


async def _claim_rounds(stores: list[Store], rounds: int, limit: int, queues: list[str]) -> list[Job]:
    calls = [s.claim(f"w{i}-{r}", queues, limit, LEASE) for r in range(rounds) for i, s in enumerate(stores)]
    return [job for batch in await asyncio.gather(*calls) for job in batch]


async def test_concurrent_claims_never_hand_out_a_job_twice(store: Store, stores: list[Store]) -> None:
    jobs = await store.enqueue([new("t", i) for i in range(60)])
    claimed = await _claim_rounds(stores, rounds=4, limit=7, queues=["default"])
    counts = Counter(j.id for j in claimed)
    assert max(counts.values()) == 1
    assert len(claimed) == len(jobs)  # 3 objects × 4 rounds × 7 ≥ 60
    assert all(j.try_number == 1 for j in claimed)


async def test_concurrent_claims_keep_lanes_serial(store: Store, stores: list[Store]) -> None:
    await store.enqueue([new("t", i, user_id=f"u{i % 4}") for i in range(20)])
    claimed = await _claim_rounds(stores, rounds=3, limit=10, queues=["default"])
    lanes = Counter(j.user_id for j in claimed)
    assert set(lanes) == {"u0", "u1", "u2", "u3"}
    assert set(lanes.values()) == {1}  # one job per lane while it processes
    assert {j.payload for j in claimed} == {0, 1, 2, 3}  # and each lane's oldest


async def test_concurrent_claims_honour_the_queue_cap(store: Store, stores: list[Store]) -> None:
    await store.put_queue_settings(QueueSettings("default", "capped", concurrency=3))
    await store.enqueue([new("t", i, queue="capped") for i in range(20)])
    claimed = await _claim_rounds(stores, rounds=3, limit=5, queues=["capped"])
    assert len(claimed) == 3
    assert (await store.stats(queue="capped")).processing == 3


async def test_concurrent_enqueues_of_one_unique_key_store_one_job(stores: list[Store]) -> None:
    results = await asyncio.gather(*[enqueue_one(s, unique_key="only-once") for s in stores for _ in range(3)])
    originals = [j for j in results if not j.duplicate]
    assert len(originals) == 1
    assert {j.id for j in results} == {originals[0].id}
    assert (await stores[0].list_jobs(JobFilter())).total == 1


async def test_concurrent_claim_user_lets_exactly_one_run(store: Store, stores: list[Store]) -> None:
    await store.enqueue([new("t", i, user_id="u1") for i in range(3)])

    async def run(s: Store, n: int) -> Job | str | None:
        try:
            return await s.claim_user("default", "u1", f"runner-{n}", timedelta(seconds=30))
        except Conflict:
            return "conflict"

    results = await asyncio.gather(*[run(s, n) for n, s in enumerate(stores * 2)])
    winners = [r for r in results if isinstance(r, Job)]
    assert len(winners) == 1 and winners[0].payload == 0
    assert all(r == "conflict" or r is None or isinstance(r, Job) for r in results)


async def test_concurrent_finish_of_one_try_applies_once(store: Store, stores: list[Store]) -> None:
    await enqueue_one(store)
    (job,) = await store.claim("w", ["default"], 1, LEASE)
    results = await asyncio.gather(*[complete(s, job, result=n) for n, s in enumerate(stores)])
    assert sorted(results) == [False] * (OBJECTS - 1) + [True]
    stored = await store.get_job(job.id)
    assert stored is not None and stored.status is JobStatus.COMPLETED
    assert len(await store.attempts(job.id)) == 1


async def test_rescue_racing_a_finish_leaves_one_outcome(store: Store, stores: list[Store]) -> None:
    await enqueue_one(store, max_attempts=5)
    (job,) = await store.claim("w", ["default"], 1, timedelta(milliseconds=1))
    await asyncio.sleep(0.01)
    finished, rescued = await asyncio.gather(complete(stores[1], job), stores[2].rescue())
    stored = await store.get_job(job.id)
    assert stored is not None
    if finished:
        assert stored.status is JobStatus.COMPLETED and rescued == []
    else:
        assert stored.status is JobStatus.PENDING and [j.id for j in rescued] == [job.id]
    assert len(await store.attempts(job.id)) == 1
