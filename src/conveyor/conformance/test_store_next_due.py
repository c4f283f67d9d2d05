"""Store.next_due: how long until the earliest job a claim with the same arguments could take (issue 9, item 5),
and Store.mark_timed_out: "timed out, still running" (item 4). Every store answers by its own clock, so times are
compared with a little slack."""

from __future__ import annotations

import asyncio

from conveyor.conformance.helpers import LEASE, claim, claim_one, complete, enqueue_one, later, retry
from conveyor.model import Namespace, QueueSettings
from conveyor.store import Store

SLACK = 0.5


async def test_no_pending_jobs_means_nothing_is_due(store: Store) -> None:
    assert await store.next_due(["default"]) is None
    job = await enqueue_one(store)
    await complete(store, await claim_one(store))
    assert job.id and await store.next_due(["default"]) is None


async def test_answers_the_earliest_future_run_at_in_seconds(store: Store) -> None:
    await enqueue_one(store, run_at=later(30))
    await enqueue_one(store, run_at=later(10))
    await enqueue_one(store, run_at=later(20), priority=-5)  # priority does not matter for when
    due = await store.next_due(["default"])
    assert due is not None and abs(due - 10) < SLACK, due


async def test_a_due_job_answers_zero_or_less(store: Store) -> None:
    await enqueue_one(store, run_at=later(10))
    await enqueue_one(store)
    due = await store.next_due(["default"])
    assert due is not None and due <= 0.01, due


async def test_earliest_across_priorities_and_queues(store: Store) -> None:
    for priority in (5, -3, 0, 7, 1):  # several distinct priorities: each is looked at
        await enqueue_one(store, run_at=later(40 + priority), priority=priority)
    await enqueue_one(store, run_at=later(25), priority=9)
    await enqueue_one(store, run_at=later(5), queue="other")
    due = await store.next_due(["default"])
    assert due is not None and abs(due - 25) < SLACK, due
    both = await store.next_due(["default", "other"])
    assert both is not None and abs(both - 5) < SLACK, both
    assert await store.next_due(["third"]) is None


async def test_scope_is_the_claims_scope(store: Store) -> None:
    await store.put_namespace(Namespace("elsewhere"))
    await enqueue_one(store, run_at=later(5), namespace="elsewhere")
    await enqueue_one(store, run_at=later(15))
    anywhere = await store.next_due(["default"])
    assert anywhere is not None and abs(anywhere - 5) < SLACK
    only_default = await store.next_due(["default"], namespaces=["default"])
    assert only_default is not None and abs(only_default - 15) < SLACK
    excluded = await store.next_due(["default"], exclude_namespaces=["elsewhere"])
    assert excluded is not None and abs(excluded - 15) < SLACK


async def test_paused_and_full_queues_do_not_count(store: Store) -> None:
    await enqueue_one(store, run_at=later(5), queue="paused")
    await store.put_queue_settings(QueueSettings("default", "paused", paused=True))
    assert await store.next_due(["paused"]) is None
    await store.put_queue_settings(QueueSettings("default", "capped", concurrency=1))
    await enqueue_one(store, queue="capped")
    await enqueue_one(store, queue="capped", run_at=later(5))
    (running,) = await claim(store, ["capped"])
    assert await store.next_due(["capped"]) is None  # at its cap: nothing could be claimed
    await complete(store, running)
    room = await store.next_due(["capped"])
    assert room is not None and abs(room - 5) < SLACK


async def test_only_a_lanes_head_counts_and_only_while_its_lane_is_idle(store: Store) -> None:
    head = await enqueue_one(store, user_id="u1")
    await enqueue_one(store, user_id="u1", run_at=later(-5))  # due, but behind its head: never claimable first
    await enqueue_one(store, run_at=later(30))
    (running,) = await claim(store)
    assert running.id == head.id
    due = await store.next_due(["default"])  # the lane is busy: only the plain job counts
    assert due is not None and abs(due - 30) < SLACK, due
    await complete(store, running)
    after = await store.next_due(["default"])
    assert after is not None and after <= 0.01, after  # the next of the lane is due now


async def test_a_retry_counts_from_its_new_run_at(store: Store) -> None:
    await enqueue_one(store)
    job = await claim_one(store)
    assert await store.next_due(["default"]) is None
    assert await retry(store, job, later(3))
    due = await store.next_due(["default"])
    assert due is not None and abs(due - 3) < SLACK


async def test_next_due_is_measured_by_the_stores_clock(store: Store) -> None:
    await enqueue_one(store, run_at=later(1.0))
    first = await store.next_due(["default"])
    await asyncio.sleep(0.3)
    second = await store.next_due(["default"])
    assert first is not None and second is not None
    assert 0.1 < first - second < 0.6, (first, second)


# ---- mark_timed_out ------------------------------------------------------------------------------------------------


async def test_mark_timed_out_flags_the_running_try_and_changes_nothing_else(store: Store) -> None:
    await enqueue_one(store)
    job = await claim_one(store)
    assert not job.overrunning
    assert await store.mark_timed_out(job.lease)
    marked = await store.get_job(job.id)
    assert marked is not None and marked.overrunning and marked.timed_out_at is not None
    assert (marked.status, marked.try_number, marked.worker_id) == (job.status, job.try_number, job.worker_id)
    (state,) = await store.heartbeat([job.lease], LEASE)
    assert state.held
    assert await complete(store, job)  # the worker reports it as usual, under the same lease
    done = await store.get_job(job.id)
    assert done is not None and not done.overrunning


async def test_mark_timed_out_is_fenced_and_a_new_try_is_not_overrunning(store: Store) -> None:
    await enqueue_one(store, max_attempts=3)
    first = await claim_one(store)
    assert await retry(store, first, later(-1))
    assert not await store.mark_timed_out(first.lease)  # that try is over
    second = await claim_one(store)
    assert await store.mark_timed_out(second.lease)
    assert await retry(store, second, later(-1))
    third = await claim_one(store)
    seen = await store.get_job(third.id)
    assert seen is not None and not seen.overrunning  # the mark belonged to an earlier try
