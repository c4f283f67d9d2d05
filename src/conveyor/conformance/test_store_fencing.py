"""Store conformance: the fencing token (store/base.py "Fencing", "Attempt records").

A claim's token is random and never repeats for a job, so a worker whose claim was lost — to a crash of the store
that rolled the claim back (the job is claimed again under the *same* try number), to a graceful hand-back, to the
rescuer, to a requeue — can neither finish, fail, cancel nor extend the claim that replaced it, and its late report
becomes a LOST record of its own claim instead of landing on the other one.

"A crash of the store" is simulated exactly: the harness snapshots the store before the claim and restores it
afterwards (`StoreHarness.snapshot`/`restore`; conformance/builtin.py for Conveyor's stores: SQLite's backup API,
PostgreSQL table copies, Redis DUMP/RESTORE of every key, the memory store's data set), which is what a crash that
loses the claim's commit leaves behind: the job pending again, with its old try number.
tests/stores/test_postgres_crash_fencing.py does it for real with `pg_ctl -m immediate`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from conveyor.conformance.harness import StoreHarness
from conveyor.conformance.helpers import (
    LEASE,
    Taker,
    attempt,
    claim,
    claim_one,
    complete,
    enqueue_many,
    enqueue_one,
    later,
    lose_the_claim,
    offer,
)
from conveyor.model import (
    LOST_STATUS_CODE,
    Attempt,
    AttemptOutcome,
    Finish,
    Job,
    JobStatus,
    Lease,
    attempt_order,
    utcnow,
)
from conveyor.store import Store

HOW = ("crash", "hand_back", "rescue", "requeue")


def _reports(a: Job) -> list[Finish]:
    """Everything worker A could send about its lost claim."""
    return [
        Finish(a.lease, JobStatus.COMPLETED, attempt=attempt(a, result="from A"), result="from A"),
        Finish(
            a.lease,
            JobStatus.FAILED,
            attempt=attempt(a, status_code=400, outcome=AttemptOutcome.FAILED, error="A failed"),
            error="A failed",
        ),
        Finish(
            a.lease,
            JobStatus.CANCELLED,
            attempt=attempt(a, status_code=499, outcome=AttemptOutcome.CANCELLED, error="A cancelled"),
            error="A cancelled",
        ),
        Finish(
            a.lease,
            JobStatus.PENDING,
            attempt=attempt(a, status_code=500, outcome=AttemptOutcome.RETRY, error="A retries"),
            run_at=later(3600),
            error="A retries",
        ),
        Finish(a.lease, JobStatus.PENDING, release=True),
    ]


@pytest.mark.parametrize("how", HOW)
async def test_a_lost_claims_token_can_neither_finish_nor_extend_nor_be_cancelled_against(
    store: Store, store_harness: StoreHarness, store_url: str, how: str
) -> None:
    a, b = await lose_the_claim(how, store, store_harness, store_url)

    a_state, b_state = await store.heartbeat([a.lease, b.lease], timedelta(hours=1))
    assert not a_state.held and b_state.held
    await store.cancel(b.id)  # a cancel request for B's run ...
    (a_state,) = await store.heartbeat([a.lease], timedelta(hours=1))
    assert not a_state.held and not a_state.cancel_requested  # ... is none of A's business

    for report in _reports(a):
        assert await store.finish([report]) == [False], report
    assert await store.finish(_reports(a)) == [False] * 5  # as one batch too

    now = await store.get_job(b.id)
    assert now is not None
    assert (now.status, now.worker_id, now.lease_token, now.try_number) == (
        JobStatus.PROCESSING,
        "B",
        b.lease_token,
        b.try_number,
    )
    assert now.cancel_requested and now.result is None and now.last_error == b.last_error
    assert now.lease_expires_at is not None and now.lease_expires_at > utcnow() + timedelta(minutes=30)

    assert await complete(store, b, result="from B")
    done = await store.get_job(b.id)
    assert done is not None and done.status is JobStatus.COMPLETED and done.result == "from B"

    records = await store.attempts(b.id)
    assert records == sorted(records, key=attempt_order)
    (mine,) = [r for r in records if r.lease_token == b.lease_token]
    assert (mine.outcome, mine.status_code, mine.result) == (AttemptOutcome.COMPLETED, 200, "from B")
    assert mine.worker_id == "B"
    (theirs,) = [r for r in records if r.lease_token == a.lease_token]
    assert theirs.try_number == a.try_number and theirs.worker_id == "A"
    if how == "requeue":  # A's try was applied (failed) before the requeue: its record stays as it was
        assert theirs.outcome is AttemptOutcome.FAILED and theirs.status_code == 400
    else:  # recorded truthfully as lost, never merged into B's
        assert theirs.outcome is AttemptOutcome.LOST and theirs.status_code == LOST_STATUS_CODE
        assert theirs.error is not None
        assert "not applied" in theirs.error or "lease expired" in theirs.error
    # Results by try number: the last record of B's number is B's.
    assert [r for r in records if r.try_number == b.try_number][-1].lease_token == b.lease_token


async def test_a_refused_report_is_kept_as_a_lost_attempt_that_says_what_the_try_ended_with(
    store: Store, store_harness: StoreHarness, store_url: str
) -> None:
    a, b = await lose_the_claim("crash", store, store_harness, store_url)
    report = Finish(a.lease, JobStatus.COMPLETED, attempt=attempt(a, result={"r": 1}), result={"r": 1})
    assert await store.finish([report]) == [False]
    (lost,) = await store.attempts(a.id)  # B has not reported yet
    assert (lost.lease_token, lost.try_number, lost.outcome, lost.status_code) == (
        a.lease_token,
        1,
        AttemptOutcome.LOST,
        LOST_STATUS_CODE,
    )
    assert lost.result == {"r": 1} and lost.worker_id == "A"
    assert lost.error is not None and "not applied" in lost.error and "200 completed" in lost.error
    assert await store.finish([report]) == [False]  # a repeat changes nothing
    assert len(await store.attempts(a.id)) == 1
    assert await complete(store, b)
    records = await store.attempts(a.id)
    assert [(r.try_number, r.outcome, r.lease_token) for r in records] == [
        (1, AttemptOutcome.LOST, a.lease_token),
        (1, AttemptOutcome.COMPLETED, b.lease_token),
    ]


async def test_a_repeated_report_of_an_applied_try_leaves_its_record_alone(store: Store) -> None:
    await enqueue_one(store)
    job = await claim_one(store)
    assert await complete(store, job, result="first")
    assert await complete(store, job, result="again") is False
    (record,) = await store.attempts(job.id)
    assert (record.outcome, record.result, record.lease_token) == (AttemptOutcome.COMPLETED, "first", job.lease_token)


async def test_a_refused_report_about_a_deleted_job_records_nothing(store: Store) -> None:
    await enqueue_one(store)
    job = await claim_one(store)
    await store.delete(job.id, force=True)
    assert await complete(store, job) is False
    assert await store.attempts(job.id) == []
    assert await store.get_job(job.id) is None


async def test_a_made_up_token_holds_nothing(store: Store) -> None:
    await enqueue_one(store)
    job = await claim_one(store)
    for token in ("", "0" * 32, job.lease_token.upper() if job.lease_token else "x"):
        fake = Lease(job.id, token)
        assert await store.finish([Finish(fake, JobStatus.COMPLETED)]) == [False]
        (state,) = await store.heartbeat([fake], LEASE)
        assert not state.held
    assert await complete(store, job)


async def test_every_claim_draws_a_fresh_token(store: Store) -> None:
    """Tokens are unique across jobs and across the claims of one job; only a processing job carries one."""
    await enqueue_many(store, 20)
    first = await claim(store, limit=20)
    tokens = [j.lease_token for j in first]
    assert all(t and len(t) >= 32 for t in tokens) and len(set(tokens)) == 20
    for job in first:
        assert await store.finish([Finish(job.lease, JobStatus.PENDING, release=True)]) == [True]
        stored = await store.get_job(job.id)
        assert stored is not None and stored.lease_token is None
    second = await claim(store, limit=20)
    assert not {j.lease_token for j in second} & set(tokens)
    user_job = await enqueue_one(store, user_id="u1")
    run = await store.claim_user("default", "u1", "runner", LEASE)
    assert run is not None and run.id == user_job.id and run.lease_token and run.lease_token not in tokens


@pytest.mark.parametrize("count", [2, 70])  # PostgreSQL: the pipelined INSERT path and the COPY path
async def test_handed_off_jobs_are_fenced_by_their_own_tokens(store: Store, count: int) -> None:
    if not store.supports_handoff:
        pytest.skip(f"{store.scheme} has no hand-off")
    taker = Taker()
    offer(store, taker, limit=3)
    await enqueue_many(store, count)
    handed = taker.jobs
    assert len(handed) == min(count, 3)
    assert len({j.lease_token for j in handed}) == len(handed) and all(j.lease_token for j in handed)
    stored = {j.id: j for j in [await store.get_job(h.id) for h in handed] if j is not None}
    assert all(stored[h.id].lease_token == h.lease_token for h in handed)
    victim = handed[0]
    stale = Lease(victim.id, handed[1].lease_token or "")
    assert await store.finish([Finish(stale, JobStatus.COMPLETED)]) == [False]
    assert [await complete(store, j) for j in handed] == [True] * len(handed)


async def test_rescue_records_the_lost_try_under_its_own_claim(store: Store) -> None:
    await enqueue_one(store, max_attempts=3)
    a = await claim_one(store, worker_id="A")
    await store.rescue(now=later(600))
    b = await claim_one(store, worker_id="B")
    assert b.try_number == 2
    late: Any = attempt(a, result="late")
    assert await store.finish([Finish(a.lease, JobStatus.COMPLETED, attempt=late, result="late")]) == [False]
    records = await store.attempts(a.id)
    assert [(r.try_number, r.outcome, r.lease_token) for r in records] == [(1, AttemptOutcome.LOST, a.lease_token)]
    (lost,) = records
    assert isinstance(lost, Attempt) and lost.worker_id == "A" and "not applied" in (lost.error or "")
    assert await complete(store, b)
