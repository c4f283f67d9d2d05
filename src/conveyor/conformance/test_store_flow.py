"""Store conformance: flow control (issue 13) — queue settings changed at runtime without erasing one another,
rate limits and concurrency per key enforced inside the claim, and snoozes (store/base.py: "Rate limits",
"Concurrency per key", "Queue settings are changed, not replaced"; model.Finish.snooze)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from conveyor.conformance.helpers import (
    LEASE,
    Taker,
    attempt,
    claim,
    complete,
    enqueue_many,
    fail,
    new,
    offer,
    retry,
)
from conveyor.errors import ValidationError
from conveyor.model import (
    KEEP,
    AttemptOutcome,
    Finish,
    Job,
    JobStatus,
    Lease,
    NewJob,
    QueueChange,
    QueueSettings,
    RateLimit,
    rate_advance,
    rate_allowance,
    utcnow,
)
from conveyor.store import Store

# ---- settings changed, not replaced ---------------------------------------------------------------------------------


async def test_a_queue_without_settings_has_the_defaults(store: Store) -> None:
    assert await store.get_queue_settings("default", "nothing") == QueueSettings("default", "nothing")


async def test_pause_and_resume_keep_the_cap_and_the_rate_limit(store: Store) -> None:
    rate = RateLimit(100, 60.0, burst=5)
    await store.update_queue_settings("default", "q", QueueChange(concurrency=3))
    await store.update_queue_settings("default", "q", QueueChange(rate_limit=rate))
    paused = await store.update_queue_settings("default", "q", QueueChange(paused=True))
    assert paused == QueueSettings("default", "q", paused=True, concurrency=3, rate_limit=rate)
    resumed = await store.update_queue_settings("default", "q", QueueChange(paused=False))
    assert resumed == QueueSettings("default", "q", paused=False, concurrency=3, rate_limit=rate)
    assert await store.get_queue_settings("default", "q") == resumed
    (info,) = [q for q in await store.list_queues("default") if q.name == "q"]
    assert (info.paused, info.concurrency, info.rate_limit) == (False, 3, rate)


async def test_a_change_removes_a_limit_with_none_and_keeps_what_it_does_not_name(store: Store) -> None:
    await store.update_queue_settings("default", "q", QueueChange(concurrency=2, rate_limit=RateLimit(5)))
    got = await store.update_queue_settings("default", "q", QueueChange(concurrency=None, paused=KEEP))
    assert got == QueueSettings("default", "q", concurrency=None, rate_limit=RateLimit(5))
    got = await store.update_queue_settings("default", "q", QueueChange(rate_limit=None))
    assert got == QueueSettings("default", "q")


async def test_concurrent_changes_of_different_settings_all_land(store: Store) -> None:
    changes = [QueueChange(concurrency=7), QueueChange(rate_limit=RateLimit(9, 2.0)), QueueChange(paused=True)]
    for _ in range(3):
        await asyncio.gather(*(store.update_queue_settings("default", "race", c) for c in changes))
        got = await store.get_queue_settings("default", "race")
        assert got == QueueSettings("default", "race", paused=True, concurrency=7, rate_limit=RateLimit(9, 2.0))
        await store.put_queue_settings(QueueSettings("default", "race"))


async def test_settings_are_per_namespace(store: Store) -> None:
    await store.update_queue_settings("a", "q", QueueChange(rate_limit=RateLimit(1, 60.0)))
    assert (await store.get_queue_settings("b", "q")).rate_limit is None
    await enqueue_many(store, 3, queue="q", namespace="a")
    await enqueue_many(store, 3, queue="q", namespace="b")
    got = await claim(store, queues=["q"])
    assert sorted(j.namespace for j in got) == ["a", "b", "b", "b"]


async def test_a_negative_cap_is_refused(store: Store) -> None:
    with pytest.raises(ValidationError):
        await store.update_queue_settings("default", "q", QueueChange(concurrency=-1))
    assert await store.get_queue_settings("default", "q") == QueueSettings("default", "q")


def test_rate_limits_are_parsed_and_checked() -> None:
    assert RateLimit.parse("100/s") == RateLimit(100, 1.0)
    assert RateLimit.parse("10/m") == RateLimit(10, 60.0)
    assert RateLimit.parse(" 3 / 10s", burst=2) == RateLimit(3, 10.0, 2)
    assert RateLimit.parse("5/h").period == 3600.0
    for bad in ("", "10", "0/s", "10/x", "-1/s", "1/0s"):
        with pytest.raises(ValidationError):
            RateLimit.parse(bad)
    with pytest.raises(ValidationError):
        RateLimit(10, 1.0, burst=0)


def test_the_gcra_allows_a_burst_then_the_steady_rate() -> None:
    rate = RateLimit(10, 1.0)  # burst 10, one every 100 ms
    assert rate_allowance(rate, None, 0) == (10, 0)
    tat = rate_advance(rate, None, 0, 10)
    assert rate_allowance(rate, tat, 0) == (0, 100_000)
    assert rate_allowance(rate, tat, 100_000) == (1, 0)
    assert rate_allowance(rate, tat, 350_000) == (3, 0)
    assert rate_allowance(rate, tat, 10_000_000) == (10, 0)  # an idle queue fills its bucket, no more


# ---- rate limits in the claim ---------------------------------------------------------------------------------------


async def test_a_rate_limit_caps_what_claims_start(store: Store) -> None:
    await store.update_queue_settings("default", "q", QueueChange(rate_limit=RateLimit(3, 60.0)))
    await enqueue_many(store, 10, queue="q")
    assert len(await claim(store, queues=["q"], limit=10)) == 3
    assert await claim(store, queues=["q"], limit=10, worker_id="w2") == []
    wait = await store.next_due(["q"])
    assert wait is not None and 15 < wait <= 20.5  # the next token: one period / limit after the burst


async def test_jobs_over_the_rate_limit_stay_pending_without_an_attempt(store: Store) -> None:
    await store.update_queue_settings("default", "q", QueueChange(rate_limit=RateLimit(1, 60.0)))
    jobs = await enqueue_many(store, 2, queue="q")
    (got,) = await claim(store, queues=["q"])
    other = next(j for j in jobs if j.id != got.id)
    stored = await store.get_job(other.id)
    assert stored is not None and stored.status.value == "pending" and stored.attempts == 0


async def test_the_burst_bounds_a_claim_after_an_idle_spell(store: Store) -> None:
    await store.update_queue_settings("default", "q", QueueChange(rate_limit=RateLimit(50, 1.0, burst=2)))
    await enqueue_many(store, 10, queue="q")
    assert len(await claim(store, queues=["q"], limit=10)) == 2


async def test_the_rate_limit_refills_with_time(store: Store) -> None:
    await store.update_queue_settings("default", "q", QueueChange(rate_limit=RateLimit(20, 1.0, burst=1)))
    await enqueue_many(store, 20, queue="q")
    assert len(await claim(store, queues=["q"], limit=10)) == 1
    wait = await store.next_due(["q"])
    assert wait is not None and wait <= 0.06  # (≤ 0 when the machine took longer than a token to get here)
    await asyncio.sleep(0.16)  # three tokens' time, but the bucket holds one
    assert len(await claim(store, queues=["q"], limit=10)) == 1


async def test_a_rate_limit_holds_across_concurrent_claims(store: Store) -> None:
    await store.update_queue_settings("default", "q", QueueChange(rate_limit=RateLimit(5, 60.0)))
    await enqueue_many(store, 30, queue="q")
    batches = await asyncio.gather(*(claim(store, queues=["q"], limit=3, worker_id=f"w{i}") for i in range(8)))
    assert sum(len(b) for b in batches) == 5


async def test_finishing_jobs_does_not_give_back_rate_tokens(store: Store) -> None:
    await store.update_queue_settings("default", "q", QueueChange(rate_limit=RateLimit(2, 60.0)))
    await enqueue_many(store, 5, queue="q")
    for job in await claim(store, queues=["q"]):
        assert await complete(store, job)
    assert await claim(store, queues=["q"]) == []


async def test_a_rate_limit_applies_to_its_queue_only(store: Store) -> None:
    await store.update_queue_settings("default", "slow", QueueChange(rate_limit=RateLimit(1, 60.0)))
    await enqueue_many(store, 3, queue="slow")
    await enqueue_many(store, 3, queue="fast")
    got = await claim(store, queues=["slow", "fast"])
    assert sorted(j.queue for j in got) == ["fast", "fast", "fast", "slow"]


async def test_rate_limit_and_cap_both_bind(store: Store) -> None:
    await store.update_queue_settings("default", "q", QueueChange(rate_limit=RateLimit(3, 60.0), concurrency=2))
    await enqueue_many(store, 6, queue="q")
    first = await claim(store, queues=["q"])
    assert len(first) == 2  # the cap binds first
    assert await complete(store, first[0])
    assert len(await claim(store, queues=["q"])) == 1  # then the rate: 3 per minute
    assert await complete(store, first[1])
    assert await claim(store, queues=["q"]) == []


async def test_removing_the_rate_limit_frees_the_queue(store: Store) -> None:
    await store.update_queue_settings("default", "q", QueueChange(rate_limit=RateLimit(1, 60.0)))
    await enqueue_many(store, 4, queue="q")
    assert len(await claim(store, queues=["q"])) == 1
    await store.update_queue_settings("default", "q", QueueChange(rate_limit=None))
    assert len(await claim(store, queues=["q"])) == 3


async def test_a_paused_queue_spends_no_rate_tokens(store: Store) -> None:
    await store.update_queue_settings("default", "q", QueueChange(rate_limit=RateLimit(2, 60.0), paused=True))
    await enqueue_many(store, 4, queue="q")
    assert await claim(store, queues=["q"]) == []
    await store.update_queue_settings("default", "q", QueueChange(paused=False))
    assert len(await claim(store, queues=["q"])) == 2


async def test_run_ignores_the_rate_limit(store: Store) -> None:
    await store.update_queue_settings("default", "default", QueueChange(rate_limit=RateLimit(1, 60.0)))
    await store.enqueue([new("t", 1), new("t", 2, user_id="u1")])
    assert len(await claim(store)) == 1
    got = await store.claim_user("default", "u1", "runner", LEASE)
    assert got is not None


async def test_a_hand_off_honours_the_rate_limit(store: Store) -> None:
    await store.update_queue_settings("default", "default", QueueChange(rate_limit=RateLimit(2, 60.0)))
    taker = Taker()
    offer(store, taker, limit=5)
    await store.enqueue([new("t", i) for i in range(5)])
    handed = len(taker.jobs)
    assert handed <= 2
    assert len(await claim(store)) == 2 - handed


# ---- concurrency per key ----------------------------------------------------------------------------------------


def keyed(key: str | None, n: int = 0, **options: object) -> NewJob:
    return new("t", n, concurrency_key=key, **options)


def keys_of(jobs: list[Job]) -> list[str | None]:
    return sorted((j.concurrency_key for j in jobs), key=lambda k: k or "")


async def test_the_concurrency_key_is_stored(store: Store) -> None:
    (job,) = await store.enqueue([keyed("tenant-1")])
    assert job.concurrency_key == "tenant-1"
    stored = await store.get_job(job.id)
    assert stored is not None and stored.concurrency_key == "tenant-1"
    (got,) = await claim(store)
    assert got.concurrency_key == "tenant-1"


async def test_a_key_limit_caps_processing_jobs_per_key(store: Store) -> None:
    await store.update_queue_settings("default", "default", QueueChange(key_concurrency=2))
    await store.enqueue([keyed(k, i) for i in range(4) for k in ("a", "b", None)])
    got = await claim(store)
    assert keys_of(got) == [None, None, None, None, "a", "a", "b", "b"]
    assert await claim(store) == []
    assert await complete(store, next(j for j in got if j.concurrency_key == "a"))
    (more,) = await claim(store)
    assert more.concurrency_key == "a"
    assert await fail(store, next(j for j in got if j.concurrency_key == "b"))
    (more,) = await claim(store)
    assert more.concurrency_key == "b"


async def test_a_blocked_key_does_not_starve_the_jobs_behind_it(store: Store) -> None:
    await store.update_queue_settings("default", "default", QueueChange(key_concurrency=1))
    await store.enqueue([keyed("busy", i) for i in range(60)])
    await store.enqueue([keyed("other"), keyed(None)])
    (first,) = await claim(store, limit=1)
    assert first.concurrency_key == "busy"
    got = await claim(store, limit=1)
    got += await claim(store, limit=1)
    assert keys_of(got) == [None, "other"]
    assert await claim(store, limit=5) == []
    assert await store.next_due(["default"]) is None  # nothing claimable: no spinning on the blocked key


async def test_a_retried_job_frees_its_key_and_next_due_sees_it(store: Store) -> None:
    await store.update_queue_settings("default", "default", QueueChange(key_concurrency=1))
    await store.enqueue([keyed("k", i) for i in range(2)])
    (got,) = await claim(store)
    assert await store.next_due(["default"]) is None
    assert await retry(store, got, None)
    wait = await store.next_due(["default"])
    assert wait is not None and wait <= 0
    assert len(await claim(store)) == 1


async def test_key_limits_are_per_queue_and_namespace(store: Store) -> None:
    await store.update_queue_settings("default", "q", QueueChange(key_concurrency=1))
    await store.enqueue([keyed("k", i, queue="q") for i in range(3)])
    await store.enqueue([keyed("k", i, queue="free") for i in range(3)])
    await store.enqueue([keyed("k", i, queue="q", namespace="other") for i in range(3)])
    got = await claim(store, queues=["q", "free"])
    assert sorted((j.namespace, j.queue) for j in got) == [
        ("default", "free"),
        ("default", "free"),
        ("default", "free"),
        ("default", "q"),
        ("other", "q"),
        ("other", "q"),
        ("other", "q"),
    ]


async def test_a_key_limit_of_zero_holds_keyed_jobs_only(store: Store) -> None:
    await store.update_queue_settings("default", "default", QueueChange(key_concurrency=0))
    await store.enqueue([keyed("k"), keyed(None)])
    got = await claim(store)
    assert [j.concurrency_key for j in got] == [None]


async def test_a_key_limit_holds_across_concurrent_claims(store: Store) -> None:
    await store.update_queue_settings("default", "default", QueueChange(key_concurrency=2))
    await store.enqueue([keyed("k", i) for i in range(20)])
    batches = await asyncio.gather(*(claim(store, limit=3, worker_id=f"w{i}") for i in range(8)))
    assert sum(len(b) for b in batches) == 2


async def test_key_limit_and_queue_cap_both_bind(store: Store) -> None:
    await store.update_queue_settings("default", "default", QueueChange(key_concurrency=2, concurrency=3))
    await store.enqueue([keyed(k, i) for i in range(3) for k in ("a", "b")])
    got = await claim(store)
    assert len(got) == 3
    assert max(sum(1 for j in got if j.concurrency_key == k) for k in ("a", "b")) == 2


async def test_without_a_key_limit_the_key_changes_nothing(store: Store) -> None:
    await store.enqueue([keyed("k", i) for i in range(5)])
    assert len(await claim(store)) == 5


async def test_a_hand_off_honours_the_key_limit(store: Store) -> None:
    await store.update_queue_settings("default", "default", QueueChange(key_concurrency=1))
    taker = Taker()
    offer(store, taker, limit=5)
    await store.enqueue([keyed("k", i) for i in range(3)])
    assert len(taker.jobs) + len(await claim(store)) == 1


async def test_deleting_a_processing_job_frees_its_key(store: Store) -> None:
    await store.update_queue_settings("default", "default", QueueChange(key_concurrency=1))
    await store.enqueue([keyed("k", i) for i in range(2)])
    (got,) = await claim(store)
    await store.delete(got.id, force=True)
    assert len(await claim(store)) == 1


async def test_the_key_limit_is_kept_across_pause(store: Store) -> None:
    await store.update_queue_settings("default", "q", QueueChange(key_concurrency=3))
    await store.update_queue_settings("default", "q", QueueChange(paused=True))
    got = await store.update_queue_settings("default", "q", QueueChange(paused=False))
    assert got.key_concurrency == 3
    (info,) = [q for q in await store.list_queues("default") if q.name == "q"]
    assert info.key_concurrency == 3


# ---- snooze -----------------------------------------------------------------------------------------------------


def snoozed(job: Job, seconds: float, error: str | None = None) -> Finish:
    return Finish(
        job.lease,
        JobStatus.PENDING,
        attempt=attempt(job, status_code=202, outcome=AttemptOutcome.SNOOZED, error="snoozed"),
        run_at=utcnow() + timedelta(seconds=seconds),
        error=error,
        snooze=True,
    )


async def test_a_snooze_reschedules_without_counting_an_attempt(store: Store) -> None:
    (job,) = await store.enqueue([new("t", max_attempts=1)])
    for n in (1, 2, 3):
        (got,) = await claim(store)
        assert (got.attempts, got.try_number) == (1, n)
        assert await store.finish([snoozed(got, 0)]) == [True]
        stored = await store.get_job(job.id)
        assert stored is not None and stored.status is JobStatus.PENDING
        assert (stored.attempts, stored.try_number) == (0, n)
    outcomes = [a.outcome for a in await store.attempts(job.id)]
    assert outcomes == [AttemptOutcome.SNOOZED] * 3
    (got,) = await claim(store)
    assert await complete(store, got)
    done = await store.get_job(job.id)
    assert done is not None and done.status is JobStatus.COMPLETED and (done.attempts, done.try_number) == (1, 4)


async def test_a_snoozed_job_waits_for_its_time(store: Store) -> None:
    await store.enqueue([new("t")])
    (got,) = await claim(store)
    assert await store.finish([snoozed(got, 30)]) == [True]
    assert await claim(store) == []
    wait = await store.next_due(["default"])
    assert wait is not None and 25 < wait <= 30


async def test_a_snooze_keeps_the_last_error(store: Store) -> None:
    await store.enqueue([new("t")])
    (got,) = await claim(store)
    assert await retry(store, got, None, error="upstream down")
    (got,) = await claim(store)
    assert await store.finish([snoozed(got, 0)]) == [True]
    stored = await store.get_job(got.id)
    assert stored is not None and stored.last_error == "upstream down" and stored.attempts == 1


async def test_a_stale_snooze_changes_nothing(store: Store) -> None:
    await store.enqueue([new("t")])
    (got,) = await claim(store)
    stale = Finish(Lease(got.id, "not-the-token"), JobStatus.PENDING, run_at=utcnow(), snooze=True)
    assert await store.finish([stale]) == [False]
    stored = await store.get_job(got.id)
    assert stored is not None and stored.status is JobStatus.PROCESSING and stored.attempts == 1


async def test_a_snooze_must_go_to_pending(store: Store) -> None:
    await store.enqueue([new("t")])
    (got,) = await claim(store)
    with pytest.raises(ValidationError):
        await store.finish([Finish(got.lease, JobStatus.COMPLETED, snooze=True)])
