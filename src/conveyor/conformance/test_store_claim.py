"""Store conformance: claim — order, limit, due times, queues, namespaces, pauses, concurrency caps, serial lanes
and GS2 Run's claim_user / has_pending_job (store/base.py: "Claim order", "Serial lanes", "Paused queues")."""

from __future__ import annotations

from datetime import timedelta

import pytest

from conveyor.conformance.helpers import (
    ago,
    claim,
    claim_one,
    complete,
    enqueue_many,
    enqueue_one,
    eventually,
    fail,
    ids,
    later,
    near,
    new,
    retry,
)
from conveyor.errors import Conflict
from conveyor.model import Finish, JobStatus, QueueSettings, utcnow
from conveyor.store import Store

# ---- what a claim does -------------------------------------------------------------------------------------------


async def test_claim_sets_processing_fields(store: Store) -> None:
    job = await enqueue_one(store)
    before = utcnow()
    (got,) = await claim(store, worker_id="w-7", lease=timedelta(seconds=90))
    assert got.id == job.id
    assert got.status is JobStatus.PROCESSING
    assert (got.attempts, got.try_number) == (1, 1)
    assert got.worker_id == "w-7"
    assert near(got.started_at, before)
    assert near(got.lease_expires_at, before + timedelta(seconds=90))
    assert near(got.updated, before)
    assert got.cancel_requested is False
    stored = await store.get_job(job.id)
    assert stored is not None
    assert (stored.status, stored.attempts, stored.try_number, stored.worker_id) == (
        JobStatus.PROCESSING,
        1,
        1,
        "w-7",
    )


async def test_a_claimed_job_is_not_claimed_again(store: Store) -> None:
    await enqueue_one(store)
    assert len(await claim(store)) == 1
    assert await claim(store, worker_id="other") == []


async def test_claim_on_an_empty_store_returns_nothing(store: Store) -> None:
    assert await claim(store) == []


async def test_claim_respects_limit(store: Store) -> None:
    jobs = await enqueue_many(store, 7)
    first = await claim(store, limit=3)
    second = await claim(store, limit=3)
    third = await claim(store, limit=3)
    assert (len(first), len(second), len(third)) == (3, 3, 1)
    assert ids(first + second + third) == ids(jobs)


# ---- order -------------------------------------------------------------------------------------------------------


async def test_claim_order_is_priority_then_run_at_then_id(store: Store) -> None:
    t0 = ago(100)
    specs = [
        new("t", "p0-late", priority=0, run_at=t0 + timedelta(seconds=20)),
        new("t", "p0-early", priority=0, run_at=t0 + timedelta(seconds=10)),
        new("t", "p-5", priority=-5, run_at=t0 + timedelta(seconds=50)),
        new("t", "p9", priority=9, run_at=t0),
        new("t", "p0-same-1", priority=0, run_at=t0 + timedelta(seconds=30)),
        new("t", "p0-same-2", priority=0, run_at=t0 + timedelta(seconds=30)),
    ]
    await store.enqueue(specs)
    got = await claim(store, limit=10)
    assert [j.payload for j in got] == ["p-5", "p0-early", "p0-late", "p0-same-1", "p0-same-2", "p9"]


async def test_claim_order_one_at_a_time_matches_batch_order(store: Store) -> None:
    await store.enqueue([new("t", i, priority=(i * 7) % 5 - 2, run_at=ago(i % 3)) for i in range(12)])
    one_by_one = [(await claim_one(store)).payload for _ in range(12)]
    expected = sorted(range(12), key=lambda i: ((i * 7) % 5 - 2, -(i % 3), i))
    assert one_by_one == expected


async def test_ids_break_ties_in_creation_order(store: Store) -> None:
    same = ago(5)
    jobs = await store.enqueue([new("t", i, run_at=same) for i in range(10)])
    assert ids(await claim(store, limit=10)) == ids(jobs)


# ---- due times ---------------------------------------------------------------------------------------------------


async def test_future_jobs_are_skipped_but_later_due_ones_are_claimed(store: Store) -> None:
    await enqueue_one(store, "t", "future", priority=-10, run_at=later(3600))
    due = await enqueue_one(store, "t", "due", priority=10)
    assert ids(await claim(store)) == [due.id]


async def test_delayed_job_becomes_due(store: Store) -> None:
    job = await enqueue_one(store, delay=0.3)
    assert await claim(store) == []
    got = await eventually(lambda: claim(store), timeout=10, what="the delayed job to become due")
    assert ids(got) == [job.id]


# ---- queues and namespaces ---------------------------------------------------------------------------------------


async def test_claim_only_from_the_given_queues(store: Store) -> None:
    a = await enqueue_one(store, queue="a")
    b = await enqueue_one(store, queue="b")
    await enqueue_one(store, queue="c")
    got = await claim(store, queues=["a", "b"])
    assert set(ids(got)) == {a.id, b.id}
    assert await claim(store, queues=["nope"]) == []
    assert await claim(store, queues=[]) == []


async def test_claim_order_holds_across_queues(store: Store) -> None:
    x = await enqueue_one(store, "t", "x", queue="a", priority=2)
    y = await enqueue_one(store, "t", "y", queue="b", priority=1)
    z = await enqueue_one(store, "t", "z", queue="a", priority=3)
    assert ids(await claim(store, queues=["a", "b"])) == [y.id, x.id, z.id]


async def test_namespaces_none_claims_from_every_namespace(store: Store) -> None:
    jobs = [await enqueue_one(store, namespace=ns) for ns in ("default", "n1", "n2")]
    assert set(ids(await claim(store))) == set(ids(jobs))


async def test_claim_from_listed_namespaces_only(store: Store) -> None:
    await enqueue_one(store, namespace="n1")
    n2 = await enqueue_one(store, namespace="n2")
    await enqueue_one(store)
    assert ids(await claim(store, namespaces=["n2"])) == [n2.id]
    assert await claim(store, namespaces=["missing"]) == []
    assert await claim(store, namespaces=[]) == []


async def test_excluded_namespaces_are_skipped(store: Store) -> None:
    await enqueue_one(store, namespace="manual")
    d = await enqueue_one(store)
    n1 = await enqueue_one(store, namespace="n1")
    assert set(ids(await claim(store, exclude_namespaces=["manual"]))) == {d.id, n1.id}
    assert await claim(store, exclude_namespaces=["manual"]) == []
    assert len(await claim(store, namespaces=["manual"])) == 1


async def test_exclude_applies_to_an_explicit_namespace_list_too(store: Store) -> None:
    await enqueue_one(store, namespace="n1")
    n2 = await enqueue_one(store, namespace="n2")
    assert ids(await claim(store, namespaces=["n1", "n2"], exclude_namespaces=["n1"])) == [n2.id]


# ---- paused queues -----------------------------------------------------------------------------------------------


async def test_paused_queue_is_not_claimed_from_until_resumed(store: Store) -> None:
    job = await enqueue_one(store, queue="q")
    other = await enqueue_one(store, queue="r")
    await store.put_queue_settings(QueueSettings("default", "q", paused=True))
    assert ids(await claim(store, queues=["q", "r"])) == [other.id]
    await store.put_queue_settings(QueueSettings("default", "q", paused=False))
    assert ids(await claim(store, queues=["q", "r"])) == [job.id]


async def test_pause_is_per_namespace(store: Store) -> None:
    await enqueue_one(store, queue="q", namespace="a")
    b = await enqueue_one(store, queue="q", namespace="b")
    await store.put_queue_settings(QueueSettings("a", "q", paused=True))
    assert ids(await claim(store, queues=["q"])) == [b.id]


async def test_pausing_does_not_touch_processing_jobs(store: Store) -> None:
    await enqueue_one(store, queue="q")
    job = await claim_one(store, queues=["q"])
    await store.put_queue_settings(QueueSettings("default", "q", paused=True))
    assert await complete(store, job)


async def test_claim_user_ignores_pauses(store: Store) -> None:
    job = await enqueue_one(store, queue="q", user_id="u1")
    await store.put_queue_settings(QueueSettings("default", "q", paused=True))
    assert await claim(store, queues=["q"]) == []
    got = await store.claim_user("default", "u1", "runner", timedelta(seconds=30))
    assert got is not None and got.id == job.id


# ---- queue concurrency -------------------------------------------------------------------------------------------


async def test_queue_concurrency_caps_processing_jobs_across_claims(store: Store) -> None:
    await store.put_queue_settings(QueueSettings("default", "q", concurrency=2))
    await enqueue_many(store, 5, queue="q")
    first = await claim(store, queues=["q"], worker_id="w1")
    assert len(first) == 2
    assert await claim(store, queues=["q"], worker_id="w2") == []
    assert await complete(store, first[0])
    assert len(await claim(store, queues=["q"], worker_id="w2")) == 1
    assert await claim(store, queues=["q"], worker_id="w3") == []


async def test_queue_concurrency_does_not_limit_other_queues(store: Store) -> None:
    await store.put_queue_settings(QueueSettings("default", "q", concurrency=1))
    await enqueue_many(store, 3, queue="q")
    await enqueue_many(store, 3, queue="free")
    got = await claim(store, queues=["q", "free"])
    assert sorted(j.queue for j in got) == ["free", "free", "free", "q"]


async def test_queue_concurrency_is_per_namespace(store: Store) -> None:
    await store.put_queue_settings(QueueSettings("a", "q", concurrency=1))
    await enqueue_many(store, 2, queue="q", namespace="a")
    await enqueue_many(store, 2, queue="q", namespace="b")
    got = await claim(store, queues=["q"])
    assert sorted(j.namespace for j in got) == ["a", "b", "b"]


async def test_raising_queue_concurrency_frees_more_jobs(store: Store) -> None:
    await store.put_queue_settings(QueueSettings("default", "q", concurrency=1))
    await enqueue_many(store, 4, queue="q")
    assert len(await claim(store, queues=["q"])) == 1
    await store.put_queue_settings(QueueSettings("default", "q", concurrency=3))
    assert len(await claim(store, queues=["q"])) == 2
    await store.put_queue_settings(QueueSettings("default", "q", concurrency=None))
    assert len(await claim(store, queues=["q"])) == 1


# ---- serial lanes ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lane", [{"user_id": "u1"}, {"group_key": "g1"}])
async def test_lane_runs_one_at_a_time_in_fifo_order(store: Store, lane: dict[str, str]) -> None:
    jobs = await store.enqueue([new("t", i, **lane) for i in range(3)])
    for expected in jobs:
        got = await claim(store, limit=10)
        assert ids(got) == [expected.id]
        assert await claim(store, limit=10) == []  # blocked while one processes
        assert await complete(store, got[0])
    assert await claim(store) == []


async def test_at_most_one_job_per_lane_per_claim(store: Store) -> None:
    await store.enqueue([new("t", f"u1-{i}", user_id="u1") for i in range(3)])
    await store.enqueue([new("t", f"u2-{i}", user_id="u2") for i in range(3)])
    await store.enqueue([new("t", f"g-{i}", group_key="g") for i in range(3)])
    free = await store.enqueue([new("t", f"free-{i}") for i in range(3)])
    got = await claim(store, limit=100)
    assert sorted(str(j.payload) for j in got) == sorted(["u1-0", "u2-0", "g-0", *[str(j.payload) for j in free]])


async def test_blocked_lanes_do_not_use_up_the_limit(store: Store) -> None:
    await store.enqueue([new("t", i, user_id="u1", priority=-1) for i in range(3)])
    free = await enqueue_one(store, "t", "free", priority=5)
    first = await claim(store, limit=1)
    assert first[0].payload == 0
    assert ids(await claim(store, limit=1)) == [free.id]


async def test_lane_fifo_holds_even_when_a_later_job_is_in_another_claimed_queue(store: Store) -> None:
    head = await enqueue_one(store, "t", "head", user_id="u1", queue="slow")
    await enqueue_one(store, "t", "second", user_id="u1", queue="fast")
    # The lane's head lives in a queue this worker does not serve: the rest of the lane waits for it.
    assert await claim(store, queues=["fast"]) == []
    assert ids(await claim(store, queues=["slow", "fast"])) == [head.id]


async def test_lane_head_is_lowest_priority_then_id(store: Store) -> None:
    low = await enqueue_one(store, "t", "first-enqueued", user_id="u1", priority=5)
    urgent = await enqueue_one(store, "t", "urgent", user_id="u1", priority=-5)
    got = await claim_one(store)
    assert got.id == urgent.id
    assert await complete(store, got)
    assert (await claim_one(store)).id == low.id


async def test_lane_head_ignores_run_at(store: Store) -> None:
    """FIFO by (priority, id): a later-enqueued job with an earlier run_at does not overtake the head."""
    first = await enqueue_one(store, "t", "first", user_id="u1", run_at=ago(1))
    await enqueue_one(store, "t", "second", user_id="u1", run_at=ago(60))
    assert ids(await claim(store)) == [first.id]


async def test_delayed_head_holds_back_its_lane(store: Store) -> None:
    await enqueue_one(store, "t", "head", user_id="u1", run_at=later(3600))
    await enqueue_one(store, "t", "due", user_id="u1")
    other = await enqueue_one(store, "t", "other-user", user_id="u2")
    assert ids(await claim(store)) == [other.id]


async def test_backing_off_head_holds_back_its_lane(store: Store) -> None:
    head = await enqueue_one(store, "t", "head", group_key="g")
    second = await enqueue_one(store, "t", "second", group_key="g")
    got = await claim_one(store)
    assert got.id == head.id
    assert await retry(store, got, run_at=later(3600))
    assert await claim(store) == []  # the retrying head is still the lane's head
    await store.run_now(head.id)
    again = await claim_one(store)
    assert again.id == head.id and again.try_number == 2
    assert await complete(store, again)
    assert (await claim_one(store)).id == second.id


async def test_a_failed_head_frees_its_lane(store: Store) -> None:
    await enqueue_one(store, "t", "head", user_id="u1")
    second = await enqueue_one(store, "t", "second", user_id="u1")
    assert await fail(store, await claim_one(store))
    assert (await claim_one(store)).id == second.id


async def test_cancelled_and_deleted_heads_free_their_lane(store: Store) -> None:
    a = await enqueue_one(store, "t", 0, user_id="u1")
    b = await enqueue_one(store, "t", 1, user_id="u1")
    c = await enqueue_one(store, "t", 2, user_id="u1")
    await store.cancel(a.id)
    await store.delete(b.id)
    assert (await claim_one(store)).id == c.id


async def test_group_key_wins_over_user_id(store: Store) -> None:
    grouped = await enqueue_one(store, "t", "grouped", user_id="u1", group_key="g")
    user = await enqueue_one(store, "t", "user", user_id="u1")
    assert set(ids(await claim(store))) == {grouped.id, user.id}  # two different lanes


async def test_same_key_in_different_namespaces_is_different_lanes(store: Store) -> None:
    a = await enqueue_one(store, user_id="u1", namespace="a")
    b = await enqueue_one(store, user_id="u1", namespace="b")
    await enqueue_one(store, user_id="u1", namespace="a")
    assert set(ids(await claim(store))) == {a.id, b.id}


async def test_user_lane_and_group_lane_with_equal_names_differ(store: Store) -> None:
    u = await enqueue_one(store, user_id="x")
    g = await enqueue_one(store, group_key="x")
    assert set(ids(await claim(store))) == {u.id, g.id}


async def test_released_lane_job_keeps_its_place(store: Store) -> None:
    first = await enqueue_one(store, "t", 0, user_id="u1")
    await enqueue_one(store, "t", 1, user_id="u1")
    got = await claim_one(store)
    (ok,) = await store.finish([Finish(got.lease, JobStatus.PENDING, release=True)])
    assert ok
    assert (await claim_one(store)).id == first.id


async def test_lane_respects_paused_head_queue(store: Store) -> None:
    await enqueue_one(store, user_id="u1", queue="paused")
    await enqueue_one(store, user_id="u1", queue="open")
    await store.put_queue_settings(QueueSettings("default", "paused", paused=True))
    assert await claim(store, queues=["paused", "open"]) == []


# ---- claim_user and has_pending_job (GS2 Run) ----------------------------------------------------------------------


async def test_claim_user_claims_the_head_of_the_users_lane(store: Store) -> None:
    first = await enqueue_one(store, "t", 0, user_id="u1", namespace="ns")
    await enqueue_one(store, "t", 1, user_id="u1", namespace="ns")
    await enqueue_one(store, "t", "other", user_id="u2", namespace="ns")
    got = await store.claim_user("ns", "u1", "runner", timedelta(seconds=30))
    assert got is not None and got.id == first.id
    assert got.status is JobStatus.PROCESSING
    assert (got.attempts, got.try_number, got.worker_id) == (1, 1, "runner")
    assert got.lease_expires_at is not None and got.lease_expires_at > utcnow()


async def test_claim_user_conflicts_while_a_job_of_the_lane_processes(store: Store) -> None:
    await enqueue_one(store, user_id="u1")
    await enqueue_one(store, user_id="u1")
    running = await store.claim_user("default", "u1", "r1", timedelta(seconds=30))
    assert running is not None
    with pytest.raises(Conflict):
        await store.claim_user("default", "u1", "r2", timedelta(seconds=30))
    assert await complete(store, running)
    assert await store.claim_user("default", "u1", "r2", timedelta(seconds=30)) is not None


async def test_claim_user_conflicts_with_a_worker_claimed_job_too(store: Store) -> None:
    await enqueue_one(store, user_id="u1")
    await claim_one(store)
    with pytest.raises(Conflict):
        await store.claim_user("default", "u1", "r", timedelta(seconds=30))


async def test_claim_user_returns_none_when_the_lane_is_empty(store: Store) -> None:
    assert await store.claim_user("default", "nobody", "r", timedelta(seconds=30)) is None
    await enqueue_one(store, user_id="u1", namespace="other")
    assert await store.claim_user("default", "u1", "r", timedelta(seconds=30)) is None


async def test_claim_user_returns_none_when_the_head_is_not_due(store: Store) -> None:
    await enqueue_one(store, user_id="u1", run_at=later(3600))
    await enqueue_one(store, user_id="u1")
    assert await store.claim_user("default", "u1", "r", timedelta(seconds=30)) is None


async def test_claim_user_ignores_group_lanes(store: Store) -> None:
    await enqueue_one(store, user_id="u1", group_key="g")
    assert await store.claim_user("default", "u1", "r", timedelta(seconds=30)) is None


async def test_claim_user_works_in_namespaces_excluded_from_workers(store: Store) -> None:
    job = await enqueue_one(store, user_id="u1", namespace="manual")
    assert await claim(store, exclude_namespaces=["manual"]) == []
    got = await store.claim_user("manual", "u1", "r", timedelta(seconds=30))
    assert got is not None and got.id == job.id


async def test_has_pending_job(store: Store) -> None:
    """GS2 Run's `isLastJob` is "no pending job of the user remains": due or scheduled, the lane's jobs count."""
    assert await store.has_pending_job("default", "u1") is False
    job = await enqueue_one(store, user_id="u1")
    assert await store.has_pending_job("default", "u1") is True
    assert await store.has_pending_job("other", "u1") is False
    assert await store.has_pending_job("default", "u2") is False
    got = await store.claim_user("default", "u1", "r", timedelta(seconds=30))
    assert got is not None and got.id == job.id
    assert await store.has_pending_job("default", "u1") is False  # processing is not pending
    scheduled = await enqueue_one(store, user_id="u1", run_at=later(3600))
    assert await store.has_pending_job("default", "u1") is True  # a scheduled job still remains
    await store.delete(scheduled.id)
    assert await store.has_pending_job("default", "u1") is False
    await enqueue_one(store, user_id="u1", group_key="g")
    assert await store.has_pending_job("default", "u1") is False  # a group lane is not the user's queue
