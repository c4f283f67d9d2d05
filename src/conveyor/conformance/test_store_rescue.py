"""Store conformance: rescue of expired leases (LOST attempts) and pruning of old jobs (store/base.py: "Rescue")."""

from __future__ import annotations

from datetime import timedelta

from conveyor.conformance.helpers import (
    ago,
    claim,
    claim_one,
    complete,
    enqueue_many,
    enqueue_one,
    eventually,
    expire_leases,
    fail,
    later,
    near,
    same_instant,
)
from conveyor.model import LOST_STATUS_CODE, AttemptOutcome, JobFilter, JobStatus, utcnow
from conveyor.store import Store

# ---- rescue ------------------------------------------------------------------------------------------------------


async def test_an_expired_lease_is_rescued_as_a_lost_attempt(store: Store) -> None:
    await enqueue_one(store, max_attempts=3)
    job = await claim_one(store, worker_id="w-dead", lease=timedelta(milliseconds=200))
    rescued = await eventually(lambda: store.rescue(), timeout=10, what="the 200 ms lease to expire")
    (back,) = rescued
    assert back.id == job.id
    assert back.status is JobStatus.PENDING
    assert same_instant(back.run_at, job.run_at)  # it keeps its place in the claim order
    assert (back.attempts, back.try_number) == (1, 1)
    assert back.worker_id is None and back.lease_expires_at is None and back.finished_at is None
    assert back.last_error is not None and "lease expired" in back.last_error
    (lost,) = await store.attempts(job.id)
    assert lost.job_id == job.id and lost.try_number == 1
    assert lost.outcome is AttemptOutcome.LOST and lost.status_code == LOST_STATUS_CODE == 0
    assert lost.worker_id == "w-dead"
    assert same_instant(lost.started_at, job.started_at)
    assert near(lost.finished_at, utcnow())
    assert lost.error is not None and lost.error.startswith("lease expired: worker w-dead")
    assert "stopped heartbeating" in lost.error
    again = await claim_one(store, worker_id="w-live")
    assert (again.attempts, again.try_number) == (2, 2)


async def test_rescue_with_an_explicit_now(store: Store) -> None:
    await enqueue_one(store)
    job = await claim_one(store, lease=timedelta(seconds=30))
    assert await store.rescue(now=utcnow()) == []
    (back,) = await store.rescue(now=later(31))
    assert back.id == job.id and back.status is JobStatus.PENDING


async def test_rescue_fails_a_job_whose_attempts_are_exhausted(store: Store) -> None:
    await enqueue_one(store, max_attempts=1)
    job = await claim_one(store, worker_id="w-dead")
    (back,) = await store.rescue(now=later(3600))
    assert back.status is JobStatus.FAILED
    assert back.finished_at is not None
    assert back.last_error is not None and "lease expired" in back.last_error
    assert back.worker_id is None and back.lease_expires_at is None
    stored = await store.get_job(job.id)
    assert stored is not None and stored.status is JobStatus.FAILED
    (lost,) = await store.attempts(job.id)
    assert lost.outcome is AttemptOutcome.LOST and lost.status_code == 0
    assert await claim(store) == []


async def test_rescue_retries_until_attempts_run_out(store: Store) -> None:
    await enqueue_one(store, max_attempts=2)
    await claim_one(store)
    (first,) = await expire_leases(store)
    assert first.status is JobStatus.PENDING
    await claim_one(store)
    (second,) = await store.rescue(now=later(3600))
    assert second.status is JobStatus.FAILED
    records = await store.attempts(first.id)
    assert [(a.try_number, a.outcome) for a in records] == [(1, AttemptOutcome.LOST), (2, AttemptOutcome.LOST)]


async def test_a_heartbeat_keeps_a_job_from_being_rescued(store: Store) -> None:
    await enqueue_one(store)
    job = await claim_one(store, lease=timedelta(seconds=1))
    (state,) = await store.heartbeat([job.lease], timedelta(seconds=3600))
    assert state.held
    assert await store.rescue(now=later(60)) == []
    stored = await store.get_job(job.id)
    assert stored is not None and stored.status is JobStatus.PROCESSING


async def test_rescue_leaves_other_jobs_alone(store: Store) -> None:
    await enqueue_many(store, 4)
    a, b, c, d = await claim(store)
    assert await complete(store, a)
    assert await fail(store, b)
    await store.cancel(c.id)  # cancel requested while processing: still rescued when its lease expires
    pending = await enqueue_one(store)
    scheduled = await enqueue_one(store, run_at=later(7200))
    rescued = await store.rescue(now=later(3600))
    assert {j.id for j in rescued} == {c.id, d.id}
    for job, status in ((a, JobStatus.COMPLETED), (b, JobStatus.FAILED), (pending, JobStatus.PENDING)):
        stored = await store.get_job(job.id)
        assert stored is not None and stored.status is status
    stored = await store.get_job(scheduled.id)
    assert stored is not None and same_instant(stored.run_at, scheduled.run_at)


async def test_rescue_honours_its_limit(store: Store) -> None:
    await enqueue_many(store, 5)
    await claim(store)
    assert len(await store.rescue(now=later(3600), limit=2)) == 2
    assert len(await store.rescue(now=later(3600), limit=2)) == 2
    assert len(await store.rescue(now=later(3600), limit=2)) == 1
    assert await store.rescue(now=later(3600), limit=2) == []


async def test_a_rescued_lane_job_stays_its_lanes_head(store: Store) -> None:
    head = await enqueue_one(store, user_id="u1")
    await enqueue_one(store, user_id="u1")
    await claim_one(store)
    await expire_leases(store)
    assert (await claim_one(store)).id == head.id


# ---- prune -------------------------------------------------------------------------------------------------------


async def _finished_jobs(store: Store) -> dict[str, str]:
    """One job of every final status plus a pending and a processing one; returns status -> job id."""
    jobs = await enqueue_many(store, 3)
    done, dead, running = await claim(store)
    assert await complete(store, done)
    assert await fail(store, dead)
    cancelled = await enqueue_one(store)
    await store.cancel(cancelled.id)
    pending = await enqueue_one(store)
    assert len(jobs) == 3
    return {
        "completed": done.id,
        "failed": dead.id,
        "processing": running.id,
        "cancelled": cancelled.id,
        "pending": pending.id,
    }


async def test_prune_deletes_old_finished_jobs_with_their_attempts(store: Store) -> None:
    made = await _finished_jobs(store)
    deleted = await store.prune(completed_before=later(60), failed_before=later(60))
    assert deleted == 3
    for status in ("completed", "failed", "cancelled"):
        assert await store.get_job(made[status]) is None, status
        assert await store.attempts(made[status]) == []
    for status in ("pending", "processing"):
        assert await store.get_job(made[status]) is not None, status
    assert (await store.list_jobs(JobFilter())).total == 2


async def test_prune_keeps_recent_jobs(store: Store) -> None:
    made = await _finished_jobs(store)
    assert await store.prune(completed_before=ago(60), failed_before=ago(60)) == 0
    assert all([await store.get_job(job_id) is not None for job_id in made.values()])


async def test_prune_uses_separate_cutoffs_for_completed_and_failed(store: Store) -> None:
    made = await _finished_jobs(store)
    assert await store.prune(completed_before=later(60), failed_before=ago(60)) == 1
    assert await store.get_job(made["completed"]) is None
    assert await store.get_job(made["failed"]) is not None
    assert await store.get_job(made["cancelled"]) is not None
    assert await store.prune(completed_before=ago(60), failed_before=later(60)) == 2
    assert await store.get_job(made["failed"]) is None
    assert await store.get_job(made["cancelled"]) is None


async def test_prune_honours_its_limit(store: Store) -> None:
    await enqueue_many(store, 5)
    for job in await claim(store):
        assert await complete(store, job)
    assert await store.prune(later(60), later(60), limit=2) == 2
    assert await store.prune(later(60), later(60), limit=2) == 2
    assert await store.prune(later(60), later(60), limit=2) == 1
    assert await store.prune(later(60), later(60), limit=2) == 0


async def test_prune_of_an_empty_store(store: Store) -> None:
    assert await store.prune(later(60), later(60)) == 0


async def test_prune_of_one_namespace_leaves_the_others(store: Store) -> None:
    """Each namespace has its own retention, so the pruner prunes namespace by namespace."""
    await enqueue_many(store, 2, namespace="short")
    await enqueue_many(store, 2, namespace="long")
    jobs = await claim(store, namespaces=["short", "long"])
    assert len(jobs) == 4
    assert await complete(store, jobs[0]) and await fail(store, jobs[1])
    assert await complete(store, jobs[2]) and await fail(store, jobs[3])
    assert await store.prune(later(60), later(60), namespace="short") == len(
        [j for j in jobs if j.namespace == "short"]
    )
    left = await store.list_jobs(JobFilter())
    assert {j.namespace for j in left.items} == {"long"} and left.total == 2
    assert await store.prune(later(60), later(60), namespace="short") == 0
    assert await store.prune(later(60), later(60)) == 2  # no namespace: every namespace
    assert (await store.list_jobs(JobFilter())).total == 0
