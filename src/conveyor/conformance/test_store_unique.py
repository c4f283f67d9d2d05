"""Store conformance: unique jobs with a period and states (issue 13 item 3; store/base.py "Unique jobs").

A job built with `unique=` carries a hash of what it is unique by (with its period's bucket, from the job's
creation time, which these tests choose through `now=`), the statuses in which it keeps others out, and what a
duplicate may replace on it. The store checks and inserts in one atomic step: another job of the namespace with the
same hash, in one of *its* states, makes the enqueue a duplicate (the holder comes back with duplicate=True)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor.conformance.harness import StoreHarness
from conveyor.conformance.helpers import claim, complete, enqueue_one, fail, new, same_instant
from conveyor.errors import ValidationError
from conveyor.model import Job, JobFilter, JobStatus, UniqueOptions, utcnow
from conveyor.store import Store

# A period boundary well in the past: 2026-01-01T00:00Z is a multiple of a minute, an hour and a day since 1970.
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def stores(store_harness: StoreHarness, store: Store, store_url: str) -> AsyncIterator[list[Store]]:
    """Four store objects on one space: four processes' worth of connections racing each other."""
    others = [store_harness.open(store_url) for _ in range(3)]
    for s in others:
        await s.open()
    try:
        yield [store, *others]
    finally:
        for s in others:
            await s.close()


async def put(store: Store, payload: Any = None, *, at: datetime | None = None, **options: Any) -> Job:
    options.setdefault("unique", {})
    (job,) = await store.enqueue([new("t", payload, now=at or T0, **options)])
    return job


async def total(store: Store) -> int:
    return (await store.list_jobs(JobFilter())).total


async def test_a_duplicate_returns_the_holder_and_stores_nothing(store: Store) -> None:
    first = await put(store, {"v": 1})
    again = await put(store, {"v": 1}, at=T0 + timedelta(days=300))  # no period: as long as the holder is kept
    other = await put(store, {"v": 2})
    assert not first.duplicate and not other.duplicate
    assert again.duplicate and again.id == first.id and again.payload == {"v": 1}
    assert await total(store) == 2


async def test_period_boundaries_follow_the_jobs_creation_time(store: Store) -> None:
    rule: UniqueOptions = {"period": 60}
    first = await put(store, 1, at=T0 + timedelta(seconds=1), unique=rule)
    assert (await put(store, 1, at=T0, unique=rule)).id == first.id  # same minute, earlier instant
    assert (await put(store, 1, at=T0 + timedelta(seconds=59.999), unique=rule)).duplicate
    nxt = await put(store, 1, at=T0 + timedelta(seconds=60), unique=rule)  # the next minute starts a new period
    assert not nxt.duplicate
    assert (await put(store, 1, at=T0 + timedelta(seconds=119), unique=rule)).id == nxt.id
    before = await put(store, 1, at=T0 - timedelta(microseconds=1), unique=rule)  # the minute before
    assert not before.duplicate
    assert await total(store) == 3


async def test_periods_of_different_length_do_not_meet(store: Store) -> None:
    a = await put(store, 1, unique={"period": 60})
    b = await put(store, 1, unique={"period": 3600})
    c = await put(store, 1, unique={"period": timedelta(minutes=1)})
    assert not a.duplicate and not b.duplicate and c.id == a.id


@pytest.mark.parametrize(
    ("states", "ending", "blocks"),
    [
        (["pending", "processing"], "completed", False),
        (["pending", "processing", "completed"], "completed", True),
        (["pending", "processing", "completed"], "failed", False),
        (["pending", "processing", "failed"], "failed", True),
        (["pending", "processing", "failed"], "cancelled", False),
        (["pending", "processing", "cancelled"], "cancelled", True),
        (["pending", "processing", "completed", "failed", "cancelled"], "completed", True),
    ],
)
async def test_each_state_set(store: Store, states: list[Any], ending: str, blocks: bool) -> None:
    rule: UniqueOptions = {"states": states}
    first = await put(store, 1, unique=rule)
    assert (await put(store, 1, unique=rule)).id == first.id  # pending always counts
    if ending == "cancelled":
        await store.cancel(first.id)
    else:
        (running,) = await claim(store, limit=1)
        assert (await put(store, 1, unique=rule)).id == first.id  # so does processing
        assert await (complete(store, running) if ending == "completed" else fail(store, running))
    done = await store.get_job(first.id)
    assert done is not None and done.status.value == ending
    later = await put(store, 1, unique=rule)
    assert later.duplicate is blocks
    assert (later.id == first.id) is blocks
    if blocks:
        assert later.status.value == ending


async def test_cancelled_pending_holder(store: Store) -> None:
    first = await put(store, 1, unique={"states": ["pending", "processing"]})
    await store.cancel(first.id)
    assert not (await put(store, 1, unique={"states": ["pending", "processing"]})).duplicate


async def test_states_must_include_the_active_ones() -> None:
    with pytest.raises(ValidationError) as info:
        new("t", unique={"states": ["pending", "completed"]})
    assert info.value.field == "unique.states"
    with pytest.raises(ValidationError) as info:
        new("t", unique={"states": ["pending", "processing", "done"]})  # type: ignore[list-item]
    assert info.value.field == "unique.states"


async def test_fields_compare_chosen_payload_fields_only(store: Store) -> None:
    rule: UniqueOptions = {"fields": ["player", "day"]}
    first = await put(store, {"player": 7, "day": "mon", "note": "a"}, unique=rule)
    assert (await put(store, {"day": "mon", "player": 7, "note": "b"}, unique=rule)).id == first.id
    assert not (await put(store, {"player": 8, "day": "mon"}, unique=rule)).duplicate
    assert not (await put(store, {"player": 7}, unique=rule)).duplicate  # a missing field differs from any value
    assert not (await put(store, {"player": 7, "day": None}, unique=rule)).duplicate  # and from null
    with pytest.raises(ValidationError) as info:
        new("t", [1, 2], unique=rule)
    assert info.value.field == "unique.fields"


async def test_by_chooses_task_queue_payload_and_user(store: Store) -> None:
    by_task: UniqueOptions = {"by": ["task"]}
    first = await put(store, 1, queue="a", unique=by_task)
    assert (await put(store, 2, queue="b", unique=by_task)).id == first.id
    (other_task,) = await store.enqueue([new("u", 1, now=T0, unique=by_task)])
    assert not other_task.duplicate

    by_queue: UniqueOptions = {"by": ["task", "queue"]}
    q1 = await put(store, 1, queue="a", unique=by_queue)
    assert not q1.duplicate  # its rule differs from by_task's: another hash
    assert not (await put(store, 1, queue="b", unique=by_queue)).duplicate
    assert (await put(store, 9, queue="a", unique=by_queue)).id == q1.id

    by_user: UniqueOptions = {"by": ["task", "user"]}
    u1 = await put(store, 1, user_id="p1", unique=by_user)
    assert (await put(store, 2, user_id="p1", unique=by_user)).id == u1.id
    assert not (await put(store, 1, user_id="p2", unique=by_user)).duplicate


async def test_namespaces_are_apart(store: Store) -> None:
    a = await put(store, 1)
    b = await put(store, 1, namespace="other")
    assert not a.duplicate and not b.duplicate


async def test_replace_writes_payload_and_run_at_on_a_pending_holder(store: Store) -> None:
    rule: UniqueOptions = {"by": ["task"], "replace": ["payload", "run_at"]}
    now = utcnow()
    first = await put(store, {"v": 1}, at=now, delay=3600, unique=rule)
    soon = now - timedelta(seconds=5)
    again = await put(store, {"v": 2}, at=now, run_at=soon, unique=rule)
    assert again.duplicate and again.id == first.id
    assert again.payload == {"v": 2} and same_instant(again.run_at, soon)
    stored = await store.get_job(first.id)
    assert stored is not None and stored.payload == {"v": 2} and same_instant(stored.run_at, soon)
    assert stored.status is JobStatus.PENDING
    (claimed,) = await claim(store, limit=1)  # the new run_at is in the past: claimable now, with the new payload
    assert claimed.id == first.id and claimed.payload == {"v": 2}

    only_payload: UniqueOptions = {"by": ["task"], "replace": ["payload"]}
    second = await put(store, {"v": 1}, at=now, delay=3600, unique=only_payload)  # task "t" holder is processing now
    assert second.id == first.id and second.payload == {"v": 2}  # a processing holder is never changed
    got = await store.get_job(first.id)
    assert got is not None and got.payload == {"v": 2} and got.status is JobStatus.PROCESSING


async def test_replace_only_the_payload_keeps_run_at(store: Store) -> None:
    rule: UniqueOptions = {"by": ["task"], "replace": ["payload"]}
    now = utcnow()
    first = await put(store, "a", at=now, delay=3600, unique=rule)
    again = await put(store, "b", at=now, unique=rule)
    assert again.payload == "b" and same_instant(again.run_at, first.run_at)
    stored = await store.get_job(first.id)
    assert stored is not None and stored.payload == "b" and stored.payload_json == '"b"'
    assert same_instant(stored.run_at, first.run_at)
    assert await claim(store, limit=1) == []  # still scheduled for later


async def test_a_batch_keeps_the_first_of_equal_jobs(store: Store) -> None:
    holder = await put(store, "held")
    out = await store.enqueue(
        [
            new("t", "x", now=T0, unique={}),
            new("t", "plain", now=T0),
            new("t", "x", now=T0, unique={}),
            new("t", "held", now=T0, unique={}),
            new("t", "y", now=T0, unique_key="k"),
        ]
    )
    assert [j.duplicate for j in out] == [False, False, True, True, False]
    assert out[2].id == out[0].id and out[3].id == holder.id
    assert await total(store) == 4  # the holder, x, plain, y


async def test_deleting_the_holder_frees_the_place(store: Store) -> None:
    first = await put(store, 1)
    await store.delete(first.id)
    assert not (await put(store, 1)).duplicate


async def test_requeue_of_a_finished_job_never_conflicts(store: Store) -> None:
    rule: UniqueOptions = {"states": ["pending", "processing"]}
    first = await put(store, 1, unique=rule)
    (running,) = await claim(store, limit=1)
    assert await fail(store, running)
    second = await put(store, 1, unique=rule)
    assert not second.duplicate
    requeued = await store.requeue(first.id)  # leaves its uniqueness behind: a second pending job, as asked
    assert requeued.status is JobStatus.PENDING
    assert (await put(store, 1, unique=rule)).id == second.id


async def test_unique_key_and_unique_are_one_or_the_other() -> None:
    with pytest.raises(ValidationError) as info:
        new("t", unique_key="k", unique={})
    assert info.value.field == "unique"


async def test_concurrent_enqueues_of_one_unique_job_store_one_job(stores: list[Store]) -> None:
    rule: UniqueOptions = {"period": 86400, "states": ["pending", "processing", "completed"]}

    async def go(s: Store, i: int) -> Job:
        return await enqueue_one(s, "t", {"day": 1}, now=T0 + timedelta(seconds=i), unique=rule)

    results = await asyncio.gather(*[go(stores[i % len(stores)], i) for i in range(10)])
    originals = [j for j in results if not j.duplicate]
    assert len(originals) == 1
    assert {j.id for j in results} == {originals[0].id}
    assert (await stores[0].list_jobs(JobFilter())).total == 1


async def test_concurrent_batches_store_one_job_per_hash(stores: list[Store]) -> None:
    async def go(s: Store) -> list[Job]:
        return await s.enqueue([new("t", k, now=T0, unique={"period": 3600}) for k in range(5)])

    results = await asyncio.gather(*[go(stores[i % len(stores)]) for i in range(10)])
    for k in range(5):
        assert len({batch[k].id for batch in results}) == 1
    assert (await stores[0].list_jobs(JobFilter())).total == 5
