"""Store conformance: leases, heartbeats, fencing and finish of every kind (store/base.py: "Fencing", Finish)."""

from __future__ import annotations

from datetime import timedelta

from conveyor.conformance.helpers import (
    attempt,
    claim,
    claim_one,
    complete,
    enqueue_one,
    expire_leases,
    fail,
    later,
    near,
    retry,
    same_instant,
)
from conveyor.model import AttemptOutcome, Finish, JobFilter, JobStatus, Lease, utcnow
from conveyor.store import Store

# ---- heartbeat -----------------------------------------------------------------------------------------------------


async def test_heartbeat_extends_the_lease(store: Store) -> None:
    await enqueue_one(store)
    job = await claim_one(store, lease=timedelta(seconds=5))
    before = utcnow()
    (state,) = await store.heartbeat([job.lease], timedelta(seconds=600))
    assert state.lease == job.lease
    assert state.held is True and state.cancel_requested is False
    stored = await store.get_job(job.id)
    assert stored is not None
    assert near(stored.lease_expires_at, before + timedelta(seconds=600))
    assert stored.status is JobStatus.PROCESSING and stored.try_number == job.try_number


async def test_heartbeat_reports_cancel_requested(store: Store) -> None:
    await enqueue_one(store)
    job = await claim_one(store)
    cancelled = await store.cancel(job.id)
    assert cancelled.status is JobStatus.PROCESSING and cancelled.cancel_requested is True
    (state,) = await store.heartbeat([job.lease], timedelta(seconds=30))
    assert state.held is True and state.cancel_requested is True


async def test_heartbeat_of_stale_unknown_and_finished_leases_is_not_held(store: Store) -> None:
    await enqueue_one(store)
    await enqueue_one(store)
    live, done = await claim(store)
    assert await complete(store, done)
    leases = [
        Lease(live.id, str(live.try_number + 1)),  # a token no claim drew (the next try's number)
        live.lease,
        Lease("00000000-0000-7000-8000-000000000000", "1"),  # no such job
        done.lease,  # finished
        Lease(live.id, str(live.try_number - 1)),  # a token no claim drew (an older try's number)
    ]
    states = await store.heartbeat(leases, timedelta(seconds=30))
    assert [s.lease for s in states] == leases
    assert [s.held for s in states] == [False, True, False, False, False]


async def test_heartbeat_of_a_stale_lease_does_not_extend_the_new_one(store: Store) -> None:
    await enqueue_one(store)
    old = await claim_one(store, lease=timedelta(seconds=30))
    await expire_leases(store)
    new = await claim_one(store, worker_id="w2", lease=timedelta(seconds=30))
    assert new.try_number == old.try_number + 1
    (state,) = await store.heartbeat([old.lease], timedelta(seconds=3600))
    assert state.held is False
    stored = await store.get_job(new.id)
    assert stored is not None and same_instant(stored.lease_expires_at, new.lease_expires_at)
    assert stored.worker_id == "w2"


async def test_heartbeat_of_nothing(store: Store) -> None:
    assert await store.heartbeat([], timedelta(seconds=30)) == []


# ---- finish: completed / retry / failed / cancelled ----------------------------------------------------------------


async def test_finish_completed_stores_result_attempt_and_clears_the_lease(store: Store) -> None:
    await enqueue_one(store, "t", {"in": 1})
    job = await claim_one(store, worker_id="w-1")
    result = {"ok": True, "items": [1, 2, {"x": None}]}
    record = attempt(job, result=result)
    (ok,) = await store.finish([Finish(job.lease, JobStatus.COMPLETED, attempt=record, result=result)])
    assert ok is True
    stored = await store.get_job(job.id)
    assert stored is not None
    assert stored.status is JobStatus.COMPLETED
    assert stored.result == result
    assert stored.last_error is None
    assert near(stored.finished_at, utcnow())
    assert stored.lease_expires_at is None and stored.worker_id is None
    assert (stored.attempts, stored.try_number) == (1, 1)
    (got,) = await store.attempts(job.id)
    assert (got.job_id, got.try_number, got.outcome, got.status_code) == (job.id, 1, AttemptOutcome.COMPLETED, 200)
    assert got.result == result
    assert got.worker_id == "w-1"
    assert (got.error, got.traceback) == (None, None)
    assert same_instant(got.started_at, record.started_at) and same_instant(got.finished_at, record.finished_at)


async def test_attempt_records_keep_every_field(store: Store) -> None:
    await enqueue_one(store)
    job = await claim_one(store, worker_id="host:1:abc")
    record = attempt(
        job,
        status_code=418,
        outcome=AttemptOutcome.FAILED,
        result=["partial", 1],
        error="ValueError: bad input ü",
        traceback='Traceback (most recent call last):\n  File "x.py", line 1\nValueError: bad input ü\n',
    )
    assert (await store.finish([Finish(job.lease, JobStatus.FAILED, attempt=record, error=record.error)])) == [True]
    (got,) = await store.attempts(job.id)
    assert got.job_id == record.job_id and got.try_number == record.try_number
    assert got.outcome is AttemptOutcome.FAILED and got.status_code == 418
    assert got.result == ["partial", 1]
    assert got.error == record.error and got.traceback == record.traceback
    assert got.worker_id == "host:1:abc"
    assert same_instant(got.started_at, record.started_at) and same_instant(got.finished_at, record.finished_at)
    assert abs(got.duration - record.duration) < 0.002


async def test_finish_pending_schedules_a_retry(store: Store) -> None:
    await enqueue_one(store, max_attempts=3)
    job = await claim_one(store)
    when = later(3600)
    assert await retry(store, job, run_at=when, error="flaky")
    stored = await store.get_job(job.id)
    assert stored is not None
    assert stored.status is JobStatus.PENDING
    assert same_instant(stored.run_at, when)
    assert stored.last_error == "flaky"
    assert stored.finished_at is None and stored.lease_expires_at is None and stored.worker_id is None
    assert (stored.attempts, stored.try_number) == (1, 1)
    assert await claim(store) == []  # not due yet
    (got,) = await store.attempts(job.id)
    assert (got.outcome, got.status_code, got.error) == (AttemptOutcome.RETRY, 500, "flaky")


async def test_retry_that_is_due_now_is_claimed_again_with_the_next_try_number(store: Store) -> None:
    await enqueue_one(store)
    first = await claim_one(store)
    assert await retry(store, first, run_at=utcnow() - timedelta(seconds=1))
    second = await claim_one(store)
    assert (second.id, second.attempts, second.try_number) == (first.id, 2, 2)
    assert await complete(store, second, result="done")
    records = await store.attempts(first.id)
    assert [(a.try_number, a.outcome) for a in records] == [(1, AttemptOutcome.RETRY), (2, AttemptOutcome.COMPLETED)]
    stored = await store.get_job(first.id)
    assert stored is not None and stored.last_error is None and stored.result == "done"


async def test_retry_without_run_at_is_due_at_once_by_the_stores_clock(store: Store) -> None:
    """GS2 Run retries a job at the head of its user's queue with `run_at=None`: due at the store's own now, so
    the very next Run (claim_user) takes it again whatever the skew between the app's clock and the store's."""
    await enqueue_one(store, user_id="u1")
    await enqueue_one(store, user_id="u1")
    first = await store.claim_user("default", "u1", "r", timedelta(seconds=30))
    assert first is not None
    assert await retry(store, first, run_at=None)
    stored = await store.get_job(first.id)
    assert stored is not None and stored.status is JobStatus.PENDING
    assert near(stored.run_at, utcnow())
    again = await store.claim_user("default", "u1", "r", timedelta(seconds=30))
    assert again is not None and (again.id, again.try_number) == (first.id, 2)


async def test_finish_failed_dead_letters_the_job(store: Store) -> None:
    await enqueue_one(store)
    job = await claim_one(store)
    assert await fail(store, job, error="permanent")
    stored = await store.get_job(job.id)
    assert stored is not None
    assert stored.status is JobStatus.FAILED and stored.last_error == "permanent"
    assert near(stored.finished_at, utcnow())
    assert stored.lease_expires_at is None and stored.worker_id is None
    assert await claim(store) == []


async def test_finish_cancelled(store: Store) -> None:
    await enqueue_one(store)
    job = await claim_one(store)
    await store.cancel(job.id)
    record = attempt(job, status_code=499, outcome=AttemptOutcome.CANCELLED, error="cancelled")
    (ok,) = await store.finish([Finish(job.lease, JobStatus.CANCELLED, attempt=record, error="cancelled")])
    assert ok
    stored = await store.get_job(job.id)
    assert stored is not None and stored.status is JobStatus.CANCELLED
    assert stored.finished_at is not None and stored.lease_expires_at is None
    (got,) = await store.attempts(job.id)
    assert (got.status_code, got.outcome) == (499, AttemptOutcome.CANCELLED)


async def test_finish_without_an_attempt_record(store: Store) -> None:
    await enqueue_one(store)
    job = await claim_one(store)
    assert await store.finish([Finish(job.lease, JobStatus.COMPLETED, result=5)]) == [True]
    assert await store.attempts(job.id) == []
    stored = await store.get_job(job.id)
    assert stored is not None and stored.result == 5


# ---- release (graceful shutdown) ----------------------------------------------------------------------------------


async def test_release_gives_the_try_back_without_counting_it(store: Store) -> None:
    original = await enqueue_one(store, max_attempts=2)
    job = await claim_one(store)
    (ok,) = await store.finish([Finish(job.lease, JobStatus.PENDING, release=True)])
    assert ok
    stored = await store.get_job(job.id)
    assert stored is not None
    assert stored.status is JobStatus.PENDING
    assert (stored.attempts, stored.try_number) == (0, 0)
    assert same_instant(stored.run_at, original.run_at)  # unchanged
    assert stored.lease_expires_at is None and stored.worker_id is None and stored.finished_at is None
    assert await store.attempts(job.id) == []
    again = await claim_one(store)
    assert (again.attempts, again.try_number) == (1, 1)


async def test_release_after_earlier_tries_keeps_their_records(store: Store) -> None:
    await enqueue_one(store, max_attempts=5)
    first = await claim_one(store)
    assert await retry(store, first, run_at=utcnow())
    second = await claim_one(store)
    assert second.try_number == 2
    assert await store.finish([Finish(second.lease, JobStatus.PENDING, release=True)]) == [True]
    stored = await store.get_job(first.id)
    assert stored is not None and (stored.attempts, stored.try_number) == (1, 1)
    assert [a.try_number for a in await store.attempts(first.id)] == [1]


async def test_release_with_run_at(store: Store) -> None:
    await enqueue_one(store)
    job = await claim_one(store)
    when = later(3600)
    assert await store.finish([Finish(job.lease, JobStatus.PENDING, release=True, run_at=when)]) == [True]
    stored = await store.get_job(job.id)
    assert stored is not None and same_instant(stored.run_at, when)
    assert await claim(store) == []


# ---- fencing: stale finishes ---------------------------------------------------------------------------------------


async def test_a_second_finish_of_the_same_try_is_stale(store: Store) -> None:
    await enqueue_one(store)
    job = await claim_one(store)
    assert await complete(store, job, result=1)
    assert await fail(store, job) is False
    stored = await store.get_job(job.id)
    assert stored is not None and stored.status is JobStatus.COMPLETED and stored.result == 1
    assert len(await store.attempts(job.id)) == 1


async def test_a_finish_from_a_rescued_try_cannot_touch_the_new_try(store: Store) -> None:
    await enqueue_one(store)
    old = await claim_one(store, worker_id="w-old")
    await expire_leases(store)
    new = await claim_one(store, worker_id="w-new")
    assert new.try_number == 2
    assert await complete(store, old, result="stale") is False
    stored = await store.get_job(new.id)
    assert stored is not None
    assert stored.status is JobStatus.PROCESSING and stored.worker_id == "w-new" and stored.result is None
    assert [a.try_number for a in await store.attempts(new.id)] == [1]  # only the LOST record
    assert await complete(store, new, result="fresh") is True


async def test_finish_of_pending_unknown_and_deleted_jobs_is_stale(store: Store) -> None:
    pending = await enqueue_one(store)
    assert await store.finish([Finish(Lease(pending.id, "0"), JobStatus.COMPLETED)]) == [False]
    assert await store.finish([Finish(Lease(pending.id, "1"), JobStatus.COMPLETED)]) == [False]
    stored = await store.get_job(pending.id)
    assert stored is not None and stored.status is JobStatus.PENDING
    assert await store.finish([Finish(Lease("00000000-0000-7000-8000-000000000000", "1"), JobStatus.COMPLETED)]) == [
        False
    ]
    job = await claim_one(store)
    await store.delete(job.id, force=True)
    assert await complete(store, job) is False
    assert await store.get_job(job.id) is None


async def test_finish_with_a_wrong_try_number_changes_nothing(store: Store) -> None:
    await enqueue_one(store)
    job = await claim_one(store)
    wrong = Lease(job.id, str(job.try_number + 1))
    assert await store.finish([Finish(wrong, JobStatus.FAILED, error="x")]) == [False]
    stored = await store.get_job(job.id)
    assert stored is not None and stored.status is JobStatus.PROCESSING and stored.last_error is None


async def test_batch_finish_reports_each_item_in_order(store: Store) -> None:
    for _ in range(3):
        await enqueue_one(store)
    a, b, c = await claim(store)
    assert await complete(store, b)
    results = await store.finish(
        [
            Finish(a.lease, JobStatus.COMPLETED, result="a"),
            Finish(b.lease, JobStatus.COMPLETED, result="b-again"),
            Finish(c.lease, JobStatus.FAILED, error="c"),
            Finish(a.lease, JobStatus.FAILED, error="a-again"),  # the first item already finished it
        ]
    )
    assert results == [True, False, True, False]
    sa, sb, sc = [await store.get_job(j.id) for j in (a, b, c)]
    assert sa is not None and sa.status is JobStatus.COMPLETED and sa.result == "a"
    assert sb is not None and sb.status is JobStatus.COMPLETED
    assert sc is not None and sc.status is JobStatus.FAILED and sc.last_error == "c"


async def test_finish_of_nothing(store: Store) -> None:
    assert await store.finish([]) == []


async def test_attempts_are_listed_by_try_number(store: Store) -> None:
    await enqueue_one(store, max_attempts=5)
    for n in range(1, 4):
        job = await claim_one(store)
        assert job.try_number == n
        assert await retry(store, job, run_at=utcnow(), error=f"e{n}")
    job = await claim_one(store)
    assert await complete(store, job)
    records = await store.attempts(job.id)
    assert [a.try_number for a in records] == [1, 2, 3, 4]
    assert [a.error for a in records] == ["e1", "e2", "e3", None]
    assert await store.attempts("00000000-0000-7000-8000-000000000000") == []


async def test_every_time_the_store_returns_is_timezone_aware(store: Store) -> None:
    """model.py: times are timezone-aware UTC datetimes, whatever the store keeps them as."""
    await enqueue_one(store)
    job = await claim_one(store)
    assert await complete(store, job)
    stored = await store.get_job(job.id)
    assert stored is not None
    (record,) = await store.attempts(job.id)
    times = {
        "job.created": stored.created,
        "job.updated": stored.updated,
        "job.run_at": stored.run_at,
        "job.started_at": stored.started_at,
        "job.finished_at": stored.finished_at,
        "claimed.lease_expires_at": job.lease_expires_at,
        "attempt.started_at": record.started_at,
        "attempt.finished_at": record.finished_at,
    }
    for name, value in times.items():
        assert value is not None and value.utcoffset() == timedelta(0), f"{name} = {value!r}"
    page = await store.list_jobs(JobFilter())
    assert page.items[0].created.utcoffset() == timedelta(0)
