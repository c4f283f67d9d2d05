"""Store conformance: hand-off to an idle worker of the same process (store/base.py: "Hand-off").

Every store must take these tests. A store with `supports_handoff` claims for an offered IdleClaim inside the
enqueue, by the rules of `claim`, and delivers the jobs before the enqueue returns; a store without it must leave
the offer alone and the jobs pending for an ordinary claim. Either way no job is claimed twice or stranded.
"""

from __future__ import annotations

import asyncio

from conveyor.conformance.helpers import LEASE, Taker, claim_one, enqueue_one, eventually, later, new, offer
from conveyor.model import Job, JobStatus, QueueSettings
from conveyor.store import Store


async def status_of(store: Store, job: Job) -> JobStatus:
    found = await store.get_job(job.id)
    assert found is not None
    return found.status


async def test_an_idle_worker_gets_the_job_before_the_enqueue_returns(store: Store) -> None:
    taker = Taker()
    offer(store, taker)
    job = await enqueue_one(store)
    if not store.supports_handoff:
        assert taker.deliveries == []
        assert await status_of(store, job) is JobStatus.PENDING
        return
    (handed,) = taker.jobs
    assert handed.id == job.id
    assert handed.status is JobStatus.PROCESSING
    assert handed.worker_id == "idle-worker"
    assert (handed.attempts, handed.try_number) == (1, 1)
    assert handed.lease_expires_at is not None
    stored = await store.get_job(job.id)
    assert stored is not None and stored.status is JobStatus.PROCESSING and stored.worker_id == "idle-worker"
    assert await store.claim("other", ["default"], 10, LEASE) == []  # claimed once, not twice


async def test_an_offer_is_taken_by_one_enqueue_only(store: Store) -> None:
    taker = Taker()
    offer(store, taker)
    first = await enqueue_one(store)
    second = await enqueue_one(store)
    if store.supports_handoff:
        assert [j.id for j in taker.jobs] == [first.id]
        assert await status_of(store, second) is JobStatus.PENDING
    else:
        assert taker.deliveries == []
    claimed = await store.claim("other", ["default"], 10, LEASE)
    assert {j.id for j in claimed} | {j.id for j in taker.jobs} == {first.id, second.id}


async def test_a_withdrawn_offer_is_not_used(store: Store) -> None:
    taker = Taker()
    store.withdraw_idle(offer(store, taker))
    job = await enqueue_one(store)
    assert taker.deliveries == []
    assert await status_of(store, job) is JobStatus.PENDING


async def test_the_handoff_claims_by_the_claim_order_not_the_newest_job(store: Store) -> None:
    older = await enqueue_one(store, priority=5)
    taker = Taker()
    offer(store, taker, limit=1)
    urgent = await enqueue_one(store, priority=0)
    if store.supports_handoff:
        assert [j.id for j in taker.jobs] == [urgent.id]
        taker2 = Taker()
        offer(store, taker2, limit=1)
        await enqueue_one(store, priority=9)
        assert [j.id for j in taker2.jobs] == [older.id]  # priority 5 goes before 9, as in claim
    else:
        assert taker.deliveries == []


async def test_the_handoff_claims_up_to_the_offered_limit(store: Store) -> None:
    taker = Taker()
    offer(store, taker, limit=3)
    jobs = await store.enqueue([new() for _ in range(5)])
    if store.supports_handoff:
        assert [j.id for j in taker.jobs] == [j.id for j in jobs[:3]]
    left = await store.claim("other", ["default"], 10, LEASE)
    assert len(left) + len(taker.jobs) == 5


async def test_an_offer_for_other_queues_or_namespaces_is_left_for_a_later_enqueue(store: Store) -> None:
    taker = Taker()
    offer(store, taker, queues=["mail"], namespaces=["default"])
    elsewhere = await enqueue_one(store, queue="default")
    other_ns = await enqueue_one(store, queue="mail", namespace="other")
    assert taker.deliveries == []
    assert await status_of(store, elsewhere) is JobStatus.PENDING
    assert await status_of(store, other_ns) is JobStatus.PENDING
    mail = await enqueue_one(store, queue="mail")
    if store.supports_handoff:
        assert [j.id for j in taker.jobs] == [mail.id]


async def test_a_scheduled_job_is_not_handed_off_and_the_offer_stays(store: Store) -> None:
    taker = Taker()
    offer(store, taker)
    scheduled = await enqueue_one(store, run_at=later(3600))
    assert taker.deliveries == []
    assert await status_of(store, scheduled) is JobStatus.PENDING
    due = await enqueue_one(store)
    if store.supports_handoff:
        assert [j.id for j in taker.jobs] == [due.id]


async def test_a_busy_lane_or_a_paused_queue_hands_off_nothing(store: Store) -> None:
    first = await enqueue_one(store, user_id="u1")
    assert (await claim_one(store)).id == first.id
    taker = Taker()
    offer(store, taker)
    behind = await enqueue_one(store, user_id="u1")
    assert taker.jobs == []  # the lane's head is processing
    assert await status_of(store, behind) is JobStatus.PENDING
    await store.put_queue_settings(QueueSettings("default", "paused-q", paused=True))
    taker2 = Taker()
    offer(store, taker2, queues=["paused-q"])
    paused = await enqueue_one(store, queue="paused-q")
    assert taker2.jobs == []
    assert await status_of(store, paused) is JobStatus.PENDING


async def test_a_refused_handoff_puts_the_jobs_back_without_counting_an_attempt(store: Store) -> None:
    taker = Taker(accept=False)
    offer(store, taker)
    job = await enqueue_one(store)
    if store.supports_handoff:
        assert [j.id for j in taker.jobs] == [job.id]

    async def back() -> bool:
        found = await store.get_job(job.id)
        return found is not None and found.status is JobStatus.PENDING and found.attempts == 0

    await eventually(back)
    assert [j.id for j in await store.claim("other", ["default"], 10, LEASE)] == [job.id]


async def test_an_offer_made_on_another_event_loop_is_ignored(store: Store) -> None:
    other_loop = asyncio.new_event_loop()
    try:
        taker = Taker()
        offer(store, taker, loop=other_loop)
        job = await enqueue_one(store)
        assert taker.deliveries == []
        assert await status_of(store, job) is JobStatus.PENDING
    finally:
        other_loop.close()


async def test_the_offer_that_serves_the_job_is_taken(store: Store) -> None:
    mail, reports = Taker(), Taker()
    offer(store, mail, queues=["mail"], worker_id="mail-worker")
    offer(store, reports, queues=["reports"], worker_id="reports-worker")
    job = await enqueue_one(store, queue="reports")
    assert mail.deliveries == []
    if store.supports_handoff:
        assert [j.id for j in reports.jobs] == [job.id]
        assert reports.jobs[0].worker_id == "reports-worker"
