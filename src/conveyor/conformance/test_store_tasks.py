"""Store conformance: a claim takes only the tasks it serves (store/base.py "Served tasks"; PocketBase's rule).

A worker passes the task names it registered; a job of any other task stays pending and burns no attempt, and the
claim is otherwise unchanged: the order of the served jobs, serial lanes (a lane whose head is of an unserved task
is skipped, never overtaken), pauses and caps. Workers record their task names in their registration.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from conveyor.conformance.helpers import (
    Taker,
    ago,
    claim,
    claim_one,
    complete,
    enqueue_many,
    enqueue_one,
    eventually,
    ids,
    offer,
)
from conveyor.model import JobStatus, QueueSettings, WorkerInfo, utcnow
from conveyor.store import Store


async def test_a_claim_takes_only_the_tasks_it_serves(store: Store) -> None:
    other = await enqueue_one(store, "other")
    mine = await enqueue_one(store, "mine")
    assert ids(await claim(store, tasks=["mine"])) == [mine.id]
    assert await claim(store, tasks=["mine"]) == []
    assert await claim(store, tasks=[]) == []  # serving nothing takes nothing
    stored = await store.get_job(other.id)
    assert stored is not None and (stored.status, stored.attempts, stored.try_number) == (JobStatus.PENDING, 0, 0)
    assert ids(await claim(store, tasks=["other", "nobody"])) == [other.id]


async def test_claim_order_over_several_served_tasks_is_the_usual_order(store: Store) -> None:
    a1 = await enqueue_one(store, "a", run_at=ago(30))
    b1 = await enqueue_one(store, "b", run_at=ago(20))
    await enqueue_one(store, "skip", run_at=ago(25))
    a2 = await enqueue_one(store, "a", run_at=ago(10))
    urgent = await enqueue_one(store, "b", priority=-1)
    got = await claim(store, tasks=["a", "b"], limit=10)
    assert ids(got) == [urgent.id, a1.id, b1.id, a2.id]


async def test_a_backlog_of_unserved_jobs_in_front_does_not_hide_served_ones(store: Store) -> None:
    await enqueue_many(store, 500, run_at=ago(60))  # task "task": nobody here serves it
    served = [await enqueue_one(store, "served", {"n": i}) for i in range(3)]
    assert ids(await claim(store, tasks=["served"], limit=2)) == [served[0].id, served[1].id]
    assert ids(await claim(store, tasks=["served"], limit=10)) == [served[2].id]
    assert (await store.stats()).pending == 500


async def test_a_lane_whose_head_is_not_served_is_skipped_not_overtaken(store: Store) -> None:
    head = await enqueue_one(store, "other", user_id="u1")
    behind = await enqueue_one(store, "mine", user_id="u1")
    free = await enqueue_one(store, "mine")
    assert ids(await claim(store, tasks=["mine"], limit=10)) == [free.id]
    got = await claim_one(store, tasks=["other"])
    assert got.id == head.id and await complete(store, got)
    assert ids(await claim(store, tasks=["mine"], limit=10)) == [behind.id]


async def test_pauses_and_caps_hold_with_a_task_filter(store: Store) -> None:
    await store.put_queue_settings(QueueSettings("default", "capped", concurrency=1))
    await store.put_queue_settings(QueueSettings("default", "paused", paused=True))
    c1 = await enqueue_one(store, "a", queue="capped")
    await enqueue_one(store, "b", queue="capped")
    await enqueue_one(store, "a", queue="paused")
    got = await claim(store, queues=["capped", "paused"], tasks=["a", "b"], limit=10)
    assert ids(got) == [c1.id]  # one by the cap, none from the paused queue
    assert await claim(store, queues=["capped", "paused"], tasks=["b"], limit=10) == []  # the cap counts every task


async def test_a_scheduled_job_of_a_served_task_becomes_claimable_when_due(store: Store) -> None:
    soon = await enqueue_one(store, "mine", delay=0.3)
    await enqueue_one(store, "other")
    assert await claim(store, tasks=["mine"]) == []

    async def due() -> list[str]:
        return ids(await claim(store, tasks=["mine"]))

    assert await eventually(due, what="the delayed job to become due") == [soon.id]


async def test_a_handoff_takes_only_the_tasks_its_worker_serves(store: Store) -> None:
    if not store.supports_handoff:
        pytest.skip(f"{store.scheme} has no hand-off")
    taker = Taker()
    offer(store, taker, limit=5, tasks=("mine",))
    other = await enqueue_one(store, "other")
    stored = await store.get_job(other.id)
    assert stored is not None and (stored.status, stored.attempts) == (JobStatus.PENDING, 0)
    mine = await enqueue_one(store, "mine")
    assert ids(taker.jobs) == [mine.id]


async def test_workers_record_the_tasks_they_serve(store: Store) -> None:
    now = utcnow()
    info = WorkerInfo(
        id="w-tasks",
        hostname="h",
        pid=1,
        queues=("default",),
        concurrency=2,
        started_at=now,
        heartbeat_at=now,
        expires_at=now + timedelta(minutes=1),
        tasks=("send_email", "conveyor:webhook"),
    )
    await store.register_worker(info)
    (listed,) = [w for w in await store.list_workers() if w.id == "w-tasks"]
    assert tuple(listed.tasks) == ("send_email", "conveyor:webhook")
    plain = WorkerInfo("w-none", "h", 2, ("default",), 1, now, now, now + timedelta(minutes=1))
    await store.register_worker(plain)
    (listed,) = [w for w in await store.list_workers() if w.id == "w-none"]
    assert tuple(listed.tasks) == ()


async def test_next_due_counts_only_the_tasks_served(store: Store) -> None:
    """A worker's timer must not fire for a job it will not claim (its claim would find nothing, again and again)."""
    await enqueue_one(store, "other", delay=5)
    await enqueue_one(store, "other")  # due now, but not ours
    await enqueue_one(store, "mine", delay=60)
    due = await store.next_due(["default"], tasks=["mine"])
    assert due is not None and 50 < due <= 61
    assert await store.next_due(["default"], tasks=["nobody"]) is None
    assert await store.next_due(["default"], tasks=[]) is None
    anything = await store.next_due(["default"])
    assert anything is not None and anything <= 0
