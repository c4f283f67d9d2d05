"""Store conformance: `restore_jobs` puts jobs back exactly as they were, in any state but processing, with their
attempt records, all or nothing (issue 11 item 8: a user-data dump → clean → import round trip restores everything).
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from conveyor.conformance.helpers import claim, claim_one, complete, enqueue_one, fail, ids, new, retry
from conveyor.errors import ValidationError
from conveyor.model import Attempt, Job, JobFilter, JobStatus, RawJSON, utcnow
from conveyor.store import Store


async def _history(store: Store) -> tuple[list[Job], dict[str, list[Attempt]]]:
    """Jobs of user `u` in every state but processing, with attempts, lanes, a unique key and exact payload text."""
    done = await enqueue_one(store, "t", RawJSON('{"item":   "ring"}'), user_id="u", queue="a")
    got = await claim_one(store, queues=["a"])
    await complete(store, got, {"granted": "ring"})
    dead = await enqueue_one(store, "t", {"x": 1}, user_id="u", queue="b", max_attempts=1)
    got = await claim_one(store, queues=["b"])
    await fail(store, got, "boom")
    waiting = await enqueue_one(store, "t", {"x": 2}, user_id="u", queue="c", max_attempts=5, unique_key="k1")
    got = await claim_one(store, queues=["c"])
    await retry(store, got, utcnow() + timedelta(hours=1))
    later = await enqueue_one(store, "t", {"x": 3}, user_id="u", queue="c", delay=3600, priority=-3)
    stopped = await enqueue_one(store, "t", None, user_id="u", queue="d")
    await store.cancel(stopped.id)
    lane = [await enqueue_one(store, "t", {"n": i}, user_id="u", queue="e", group_key="g") for i in range(2)]
    made = [done, dead, waiting, later, stopped, *lane]
    jobs = [j for j in [await store.get_job(m.id) for m in made] if j is not None]
    return jobs, {j.id: await store.attempts(j.id) for j in jobs}


def _same(a: Job, b: Job) -> None:
    assert dataclasses.replace(a, payload_json=None) == dataclasses.replace(b, payload_json=None), (a, b)
    assert a.payload_json == b.payload_json


async def test_restore_puts_back_every_state_exactly(store: Store) -> None:
    jobs, attempts = await _history(store)
    assert await store.delete_user_data("u") == len(jobs)
    restored = await store.restore_jobs(jobs, [a for j in jobs for a in attempts[j.id]])
    assert ids(restored) == ids(jobs)
    for before in jobs:
        after = await store.get_job(before.id)
        assert after is not None
        _same(after, before)
        assert await store.attempts(before.id) == attempts[before.id]
    # every index agrees: lists, counts, the claim order (lanes), unique keys, pruning
    listed = await store.list_jobs(JobFilter(user_id="u"), 100)
    assert sorted(ids(listed.items)) == sorted(ids(jobs))
    stats = await store.stats()
    assert (stats.completed, stats.failed, stats.cancelled, stats.pending) == (1, 1, 1, 4)
    assert [j.id for j in (await store.list_jobs(JobFilter(status=JobStatus.FAILED), 10)).items] == [jobs[1].id]
    lane = jobs[5:]
    assert ids(await claim(store, queues=["e", "c"])) == [lane[0].id]  # the lane's head; c's jobs are not due
    dup = await store.enqueue([new("t", queue="c", unique_key="k1")])
    assert dup[0].duplicate and dup[0].id == jobs[2].id
    assert await store.prune(utcnow() + timedelta(days=1), utcnow() + timedelta(days=1)) == 3


async def test_restore_is_all_or_nothing_and_refuses_a_taken_id(store: Store) -> None:
    jobs, attempts = await _history(store)
    taken = jobs[0]
    await store.delete(jobs[1].id, force=True)
    with pytest.raises(ValidationError) as info:
        await store.restore_jobs([jobs[1], taken], attempts[jobs[1].id])
    assert info.value.field == "id" and taken.id in info.value.message
    assert await store.get_job(jobs[1].id) is None
    assert await store.attempts(jobs[1].id) == []


async def test_restore_refuses_processing_jobs_foreign_attempts_and_held_unique_keys(store: Store) -> None:
    running = await enqueue_one(store, "t")
    got = await claim_one(store)
    await store.delete(running.id, force=True)
    with pytest.raises(ValidationError):
        await store.restore_jobs([got])
    assert await store.get_job(running.id) is None

    jobs, attempts = await _history(store)
    with pytest.raises(ValidationError):  # an attempt whose job is not restored with it
        await store.restore_jobs([], attempts[jobs[0].id])
    waiting = jobs[2]
    await store.delete(waiting.id, force=True)
    holder = await enqueue_one(store, "t", queue="c", unique_key="k1")
    with pytest.raises(ValidationError) as info:
        await store.restore_jobs([waiting], attempts[waiting.id])
    assert info.value.field == "unique_key" and holder.id in info.value.message
    assert await store.get_job(waiting.id) is None
    assert await store.restore_jobs([]) == []
