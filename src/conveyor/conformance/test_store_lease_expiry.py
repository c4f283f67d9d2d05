"""Store.next_lease_expiry: how long until the earliest lease of a processing job runs out (issue 9: recovery within
1.5 leases). The elected rescuer arms a timer to it, so a killed worker's jobs are given back when their lease
expires rather than at the rescuer's next periodic tick. Every store answers by its own clock (the clock `rescue`
compares leases with), so times are compared with a little slack."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from conveyor.conformance.helpers import claim, claim_one, complete, enqueue_many, enqueue_one, later
from conveyor.model import Finish, JobStatus
from conveyor.store import Store

SLACK = 0.5


async def test_no_processing_job_means_no_expiry(store: Store) -> None:
    assert await store.next_lease_expiry() is None
    await enqueue_one(store)  # pending: holds no lease
    await enqueue_one(store, run_at=later(5))
    assert await store.next_lease_expiry() is None
    await complete(store, await claim_one(store))
    assert await store.next_lease_expiry() is None


async def test_answers_the_earliest_lease_in_seconds_from_now(store: Store) -> None:
    await enqueue_many(store, 3)
    a, b, c = await claim(store, limit=1, lease=timedelta(seconds=30)) + await claim(
        store, limit=2, lease=timedelta(seconds=12)
    )
    left = await store.next_lease_expiry()
    assert left is not None and abs(left - 12) < SLACK, left
    # A heartbeat moves it: the earliest is now the 30 s lease.
    await store.heartbeat([b.lease, c.lease], timedelta(seconds=60))
    left = await store.next_lease_expiry()
    assert left is not None and abs(left - 30) < SLACK, left
    # A finished job holds no lease any more.
    assert await complete(store, a)
    left = await store.next_lease_expiry()
    assert left is not None and abs(left - 60) < SLACK, left


async def test_an_expired_lease_answers_zero_or_less_until_rescued(store: Store) -> None:
    await enqueue_many(store, 2)
    await claim_one(store, lease=timedelta(seconds=3600))
    expiring = await claim_one(store, lease=timedelta(milliseconds=50))
    await asyncio.sleep(0.2)
    left = await store.next_lease_expiry()
    assert left is not None and left <= 0, left  # expired: rescue takes it now
    rescued = await store.rescue(now=later(0.5))
    assert [j.id for j in rescued] == [expiring.id]
    left = await store.next_lease_expiry()
    assert left is not None and abs(left - 3600) < SLACK, left


async def test_released_and_cancelled_jobs_hold_no_lease(store: Store) -> None:
    await enqueue_many(store, 2)
    released, cancelled = await claim(store, limit=2)
    assert await store.finish([Finish(lease=released.lease, status=JobStatus.PENDING, release=True)]) == [True]
    await store.cancel(cancelled.id)  # a cancel of a running job is a request: its lease still runs
    left = await store.next_lease_expiry()
    assert left is not None and left > 1, left
    await store.rescue(now=later(3600))
    assert await store.next_lease_expiry() is None
