"""Store conformance: inspection and management — get, list, stats, cancel, requeue, delete, run_now."""

from __future__ import annotations

import pytest

from conveyor.conformance.helpers import (
    claim,
    claim_one,
    complete,
    enqueue_many,
    enqueue_one,
    fail,
    ids,
    later,
    near,
    new,
    retry,
    same_instant,
)
from conveyor.errors import InvalidTransition, JobNotFound
from conveyor.model import JobFilter, JobStatus, Stats, utcnow
from conveyor.store import Store

MISSING = "00000000-0000-7000-8000-000000000000"


async def test_get_job_of_an_unknown_id_is_none(store: Store) -> None:
    assert await store.get_job(MISSING) is None


# ---- list_jobs -----------------------------------------------------------------------------------------------------


async def test_list_is_newest_first_with_total(store: Store) -> None:
    jobs = await enqueue_many(store, 5)
    page = await store.list_jobs(JobFilter())
    assert ids(page.items) == list(reversed(ids(jobs)))
    assert (page.total, page.limit, page.offset) == (5, 20, 0)


async def test_list_pages_with_limit_and_offset(store: Store) -> None:
    jobs = list(reversed(await enqueue_many(store, 7)))
    first = await store.list_jobs(JobFilter(), limit=3, offset=0)
    second = await store.list_jobs(JobFilter(), limit=3, offset=3)
    third = await store.list_jobs(JobFilter(), limit=3, offset=6)
    beyond = await store.list_jobs(JobFilter(), limit=3, offset=9)
    assert ids(first.items) == ids(jobs[0:3])
    assert ids(second.items) == ids(jobs[3:6])
    assert ids(third.items) == ids(jobs[6:7])
    assert list(beyond.items) == []
    assert {first.total, second.total, third.total, beyond.total} == {7}
    assert (second.limit, second.offset) == (3, 3)


async def test_list_orders_by_created_then_id(store: Store) -> None:
    created = utcnow()
    specs = [new("t", i, now=created) for i in range(4)]  # equal created: id breaks the tie
    await store.enqueue(specs)
    page = await store.list_jobs(JobFilter())
    assert ids(page.items) == sorted((s.id for s in specs), reverse=True)


async def test_list_filters(store: Store) -> None:
    a = await enqueue_one(store, "send", namespace="n1", queue="mail", user_id="u1")
    b = await enqueue_one(store, "send", namespace="n2", queue="mail")
    c = await enqueue_one(store, "resize", namespace="n1", queue="img", user_id="u1")
    d = await enqueue_one(store, "resize", namespace="n1", queue="img", user_id="u2")
    claimed = await claim_one(store, queues=["mail"])
    assert claimed.id == a.id

    async def listed(**kw: object) -> set[str]:
        page = await store.list_jobs(JobFilter(**kw), limit=100)  # type: ignore[arg-type]
        assert page.total == len(page.items)
        return set(ids(page.items))

    assert await listed() == {a.id, b.id, c.id, d.id}
    assert await listed(namespace="n1") == {a.id, c.id, d.id}
    assert await listed(queue="mail") == {a.id, b.id}
    assert await listed(task="resize") == {c.id, d.id}
    assert await listed(status=JobStatus.PROCESSING) == {a.id}
    assert await listed(status=JobStatus.PENDING) == {b.id, c.id, d.id}
    assert await listed(status=JobStatus.FAILED) == set()
    assert await listed(user_id="u1") == {a.id, c.id}
    assert await listed(ids=[a.id, d.id, MISSING]) == {a.id, d.id}
    assert await listed(ids=[]) == set()
    assert await listed(namespace="n1", task="resize", user_id="u2") == {d.id}
    assert await listed(namespace="none") == set()


async def test_list_total_counts_beyond_the_page(store: Store) -> None:
    await enqueue_many(store, 5, queue="q")
    await enqueue_many(store, 2, queue="r")
    page = await store.list_jobs(JobFilter(queue="q"), limit=2)
    assert len(page.items) == 2 and page.total == 5


# ---- stats -------------------------------------------------------------------------------------------------------


async def test_stats_of_an_empty_store(store: Store) -> None:
    stats = await store.stats()
    assert stats == Stats()
    assert stats.total == 0 and stats.success_rate == 0.0


async def test_stats_count_every_status_and_scheduled(store: Store) -> None:
    await enqueue_many(store, 6)
    a, b, c, d, _still_running = await claim(store, limit=5)
    assert await complete(store, a) and await complete(store, b) and await complete(store, c)
    assert await fail(store, d)
    await enqueue_one(store, delay=3600)
    cancelled = await enqueue_one(store)
    await store.cancel(cancelled.id)
    stats = await store.stats()
    assert (stats.pending, stats.processing, stats.completed, stats.failed, stats.cancelled) == (2, 1, 3, 1, 1)
    assert stats.scheduled == 1
    assert stats.total == 8
    assert stats.success_rate == pytest.approx(0.75)


async def test_a_retry_in_the_future_counts_as_scheduled(store: Store) -> None:
    await enqueue_one(store)
    job = await claim_one(store)
    assert await retry(store, job, run_at=later(3600))
    stats = await store.stats()
    assert (stats.pending, stats.scheduled, stats.processing) == (1, 1, 0)


async def test_stats_filters(store: Store) -> None:
    await enqueue_one(store, "a", namespace="n1", queue="q1")
    await enqueue_one(store, "b", namespace="n1", queue="q2")
    await enqueue_one(store, "a", namespace="n2", queue="q1", delay=3600)
    assert (await store.stats(namespace="n1")).pending == 2
    assert (await store.stats(queue="q1")).pending == 2
    assert (await store.stats(task="a")).pending == 2
    assert (await store.stats(task="a")).scheduled == 1
    assert (await store.stats(namespace="n1", queue="q1", task="a")).pending == 1
    assert (await store.stats(namespace="n1")).scheduled == 0
    assert (await store.stats(namespace="nope")).total == 0


# ---- cancel ------------------------------------------------------------------------------------------------------


async def test_cancel_a_pending_job(store: Store) -> None:
    job = await enqueue_one(store)
    got = await store.cancel(job.id)
    assert got.status is JobStatus.CANCELLED
    assert near(got.finished_at, utcnow())
    stored = await store.get_job(job.id)
    assert stored is not None and stored.status is JobStatus.CANCELLED
    assert await claim(store) == []


async def test_cancel_a_scheduled_job(store: Store) -> None:
    job = await enqueue_one(store, delay=3600)
    assert (await store.cancel(job.id)).status is JobStatus.CANCELLED
    assert (await store.stats()).scheduled == 0


async def test_cancel_a_processing_job_requests_it(store: Store) -> None:
    await enqueue_one(store)
    job = await claim_one(store)
    got = await store.cancel(job.id)
    assert got.status is JobStatus.PROCESSING and got.cancel_requested is True
    assert got.finished_at is None
    stored = await store.get_job(job.id)
    assert stored is not None and stored.cancel_requested is True
    again = await store.cancel(job.id)  # asking twice is harmless
    assert again.cancel_requested is True


async def test_a_new_claim_clears_cancel_requested(store: Store) -> None:
    await enqueue_one(store)
    job = await claim_one(store)
    await store.cancel(job.id)
    assert await retry(store, job, run_at=utcnow())
    again = await claim_one(store)
    assert again.cancel_requested is False


@pytest.mark.parametrize("final", ["completed", "failed", "cancelled"])
async def test_cancel_of_a_finished_job_is_invalid(store: Store, final: str) -> None:
    job = await _job_in(store, final)
    with pytest.raises(InvalidTransition):
        await store.cancel(job)
    stored = await store.get_job(job)
    assert stored is not None and stored.status.value == final


async def test_cancel_of_an_unknown_job(store: Store) -> None:
    with pytest.raises(JobNotFound) as info:
        await store.cancel(MISSING)
    assert info.value.message == f"Job not found: {MISSING}"


# ---- requeue -----------------------------------------------------------------------------------------------------


async def test_requeue_a_failed_job(store: Store) -> None:
    await enqueue_one(store, max_attempts=1)
    job = await claim_one(store)
    assert await fail(store, job, error="broken")
    got = await store.requeue(job.id)
    assert got.status is JobStatus.PENDING
    assert got.attempts == 0
    assert near(got.run_at, utcnow())
    assert got.last_error is None and got.finished_at is None
    again = await claim_one(store)
    assert again.id == job.id
    assert (again.attempts, again.try_number) == (1, 2)  # try_number is never reset
    assert [a.try_number for a in await store.attempts(job.id)] == [1]  # history is kept


async def test_requeue_a_cancelled_job(store: Store) -> None:
    job = await enqueue_one(store)
    await store.cancel(job.id)
    got = await store.requeue(job.id)
    assert got.status is JobStatus.PENDING and got.finished_at is None


@pytest.mark.parametrize("state", ["pending", "processing", "completed"])
async def test_requeue_of_other_states_is_invalid(store: Store, state: str) -> None:
    job = await _job_in(store, state)
    with pytest.raises(InvalidTransition) as info:
        await store.requeue(job)
    assert info.value.message == "Job cannot be requeued (must be in 'failed' status)"
    stored = await store.get_job(job)
    assert stored is not None and stored.status.value == state


async def test_requeue_of_an_unknown_job(store: Store) -> None:
    with pytest.raises(JobNotFound):
        await store.requeue(MISSING)


# ---- delete ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["pending", "failed"])
async def test_delete_pending_or_failed(store: Store, state: str) -> None:
    job_id = await _job_in(store, state)
    before = await store.get_job(job_id)
    got = await store.delete(job_id)
    assert before is not None
    assert got.id == job_id and got.status is before.status  # the job as it was
    assert await store.get_job(job_id) is None
    assert await store.attempts(job_id) == []
    assert (await store.list_jobs(JobFilter())).total == 0


@pytest.mark.parametrize("state", ["processing", "completed", "cancelled"])
async def test_delete_of_other_states_is_invalid_without_force(store: Store, state: str) -> None:
    job_id = await _job_in(store, state)
    with pytest.raises(InvalidTransition) as info:
        await store.delete(job_id)
    assert info.value.message == "Job cannot be deleted (must be in 'pending' or 'failed' status)"
    assert await store.get_job(job_id) is not None


@pytest.mark.parametrize("state", ["pending", "processing", "completed", "failed", "cancelled"])
async def test_force_delete_removes_any_job(store: Store, state: str) -> None:
    job_id = await _job_in(store, state)
    got = await store.delete(job_id, force=True)
    assert got.status.value == state
    assert await store.get_job(job_id) is None
    assert await store.attempts(job_id) == []


async def test_deleting_a_job_frees_its_unique_key(store: Store) -> None:
    job = await enqueue_one(store, unique_key="k")
    await store.delete(job.id)
    assert (await enqueue_one(store, unique_key="k")).duplicate is False


async def test_delete_of_an_unknown_job(store: Store) -> None:
    with pytest.raises(JobNotFound):
        await store.delete(MISSING)
    with pytest.raises(JobNotFound):
        await store.delete(MISSING, force=True)


# ---- run_now -----------------------------------------------------------------------------------------------------


async def test_run_now_makes_a_scheduled_job_due(store: Store) -> None:
    job = await enqueue_one(store, delay=3600)
    assert await claim(store) == []
    got = await store.run_now(job.id)
    assert got.status is JobStatus.PENDING
    assert near(got.run_at, utcnow())
    assert ids(await claim(store)) == [job.id]


async def test_run_now_of_a_due_job_keeps_it_due(store: Store) -> None:
    job = await enqueue_one(store)
    got = await store.run_now(job.id)
    assert got.run_at <= later(2)
    assert ids(await claim(store)) == [job.id]


@pytest.mark.parametrize("state", ["processing", "completed", "failed", "cancelled"])
async def test_run_now_of_other_states_is_invalid(store: Store, state: str) -> None:
    job_id = await _job_in(store, state)
    before = await store.get_job(job_id)
    with pytest.raises(InvalidTransition):
        await store.run_now(job_id)
    after = await store.get_job(job_id)
    assert before is not None and after is not None
    assert after.status is before.status and same_instant(after.run_at, before.run_at)


async def test_run_now_of_an_unknown_job(store: Store) -> None:
    with pytest.raises(JobNotFound):
        await store.run_now(MISSING)


# ---- helpers -----------------------------------------------------------------------------------------------------


async def _job_in(store: Store, state: str) -> str:
    """A job in the given status (with one attempt record when it ran); returns its id."""
    job = await enqueue_one(store, max_attempts=1)
    if state == "pending":
        return job.id
    if state == "cancelled":
        await store.cancel(job.id)
        return job.id
    claimed = await claim_one(store)
    assert claimed.id == job.id
    if state == "completed":
        assert await complete(store, claimed)
    elif state == "failed":
        assert await fail(store, claimed)
    else:
        assert state == "processing"
    return job.id


async def test_delete_user_data_removes_every_job_and_attempt_of_the_user(store: Store) -> None:
    """GS2 CleanUserDataByUserId (issue 11 §8): all of a user's jobs, in every namespace and status, with their
    attempts, in one atomic step; other users keep theirs, and a lane the user's job held moves on."""
    done = await enqueue_one(store, "t", 1, user_id="u1", namespace="a")
    (claimed,) = await claim(store)
    assert claimed.id == done.id and await complete(store, claimed, result="ok")
    dead = await enqueue_one(store, "t", 2, user_id="u1", namespace="b")
    (claimed,) = await claim(store)
    assert await fail(store, claimed)
    await enqueue_one(store, "t", 3, user_id="u1", namespace="a")  # pending
    await enqueue_one(store, "t", 4, user_id="u1", namespace="c", run_at=later(3600))  # scheduled
    running = await enqueue_one(store, "t", 5, user_id="u1", namespace="a", group_key="shared", priority=-1)
    waiting = await enqueue_one(store, "t", 6, user_id="u2", namespace="a", group_key="shared", priority=-1)
    keep = await enqueue_one(store, "t", 7, user_id="u2", namespace="a")
    held = await claim_one(store)  # the group lane's head: u1's job, processing
    assert held.id == running.id

    assert await store.delete_user_data("u1") == 5
    assert (await store.list_jobs(JobFilter(user_id="u1"))).total == 0
    assert await store.get_job(dead.id) is None and await store.attempts(done.id) == []
    assert await store.has_pending_job("a", "u1") is False
    assert not await complete(store, held)  # the deleted job's worker finishes onto nothing
    assert {j.id for j in (await store.list_jobs(JobFilter(user_id="u2"))).items} == {waiting.id, keep.id}
    claimed_ids = {j.id for j in await claim(store)}
    assert waiting.id in claimed_ids  # the group lane is free again
    assert await store.delete_user_data("nobody") == 0
