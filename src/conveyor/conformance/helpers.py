"""Small helpers shared by the store-level conformance tests (conveyor/conformance/test_store_*.py).

They keep the tests short and, above all, tolerant of what legitimately differs between stores: each store keeps
time with its own clock (the database's, Redis's), so "about now" comparisons allow a little slack, and
conditions that need time to pass are waited for with a deadline instead of fixed sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from conveyor.model import Attempt, AttemptOutcome, Finish, Job, JobStatus, NewJob, utcnow
from conveyor.store import Store

if TYPE_CHECKING:
    from conveyor.conformance.harness import StoreHarness
from conveyor.store.base import IdleClaim

LEASE = timedelta(seconds=30)
SLACK = 2.0  # seconds of clock difference tolerated between the test process and a store's own clock
T = TypeVar("T")


def new(task: str = "task", payload: Any = None, **options: Any) -> NewJob:
    """A NewJob built like the app builds it (every validation rule applied)."""
    return NewJob.build(task, payload, **options)


def ago(seconds: float) -> datetime:
    return utcnow() - timedelta(seconds=seconds)


def later(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


def near(a: datetime | None, b: datetime, tolerance: float = SLACK) -> bool:
    """Whether two instants are within `tolerance` seconds (clock skew and storage precision)."""
    return a is not None and abs((a - b).total_seconds()) <= tolerance


def same_instant(a: datetime | None, b: datetime | None) -> bool:
    """Equal up to the millisecond: stores may keep time at millisecond precision."""
    if a is None or b is None:
        return a is b
    return abs((a - b).total_seconds()) < 0.0015


async def enqueue_one(store: Store, task: str = "task", payload: Any = None, **options: Any) -> Job:
    (job,) = await store.enqueue([new(task, payload, **options)])
    return job


async def enqueue_many(store: Store, count: int, **options: Any) -> list[Job]:
    return await store.enqueue([new("task", {"n": i}, **options) for i in range(count)])


async def claim(
    store: Store,
    queues: Sequence[str] = ("default",),
    limit: int = 100,
    *,
    worker_id: str = "worker-1",
    lease: timedelta = LEASE,
    **options: Any,
) -> list[Job]:
    return await store.claim(worker_id, list(queues), limit, lease, **options)


async def claim_one(store: Store, **options: Any) -> Job:
    jobs = await claim(store, limit=1, **options)
    assert len(jobs) == 1, f"expected one claimable job, got {jobs}"
    return jobs[0]


def attempt(
    job: Job,
    *,
    status_code: int = 200,
    outcome: AttemptOutcome = AttemptOutcome.COMPLETED,
    result: Any = None,
    error: str | None = None,
    traceback: str | None = None,
) -> Attempt:
    """The attempt record a worker would send for the job's current try."""
    return Attempt(
        job_id=job.id,
        try_number=job.try_number,
        outcome=outcome,
        status_code=status_code,
        started_at=job.started_at or utcnow(),
        finished_at=utcnow(),
        worker_id=job.worker_id,
        result=result,
        error=error,
        traceback=traceback,
    )


async def complete(store: Store, job: Job, result: Any = None) -> bool:
    (ok,) = await store.finish(
        [Finish(job.lease, JobStatus.COMPLETED, attempt=attempt(job, result=result), result=result)]
    )
    return ok


async def fail(store: Store, job: Job, error: str = "boom") -> bool:
    (ok,) = await store.finish(
        [
            Finish(
                job.lease,
                JobStatus.FAILED,
                attempt=attempt(job, status_code=400, outcome=AttemptOutcome.FAILED, error=error),
                error=error,
            )
        ]
    )
    return ok


async def retry(store: Store, job: Job, run_at: datetime | None, error: str = "try again") -> bool:
    (ok,) = await store.finish(
        [
            Finish(
                job.lease,
                JobStatus.PENDING,
                attempt=attempt(job, status_code=500, outcome=AttemptOutcome.RETRY, error=error),
                run_at=run_at,
                error=error,
            )
        ]
    )
    return ok


async def eventually(
    check: Callable[[], Awaitable[T]], *, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> T:
    """Call `check` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def ids(jobs: Sequence[Job]) -> list[str]:
    return [j.id for j in jobs]


async def expire_leases(store: Store) -> list[Job]:
    """Rescue every processing job as if its lease had long expired (`rescue(now=…)` in the future avoids waiting
    for real leases to run out). Rescued jobs keep their run_at, so they are due again at once."""
    return await store.rescue(now=later(600))  # past the tests' leases, before their far-future run_ats


class Taker:
    """An idle worker's side of a hand-off offer (store/base.py "Hand-off"): records what it is handed, and takes
    it or refuses it."""

    def __init__(self, accept: bool = True) -> None:
        self.accept = accept
        self.deliveries: list[list[Job]] = []

    def __call__(self, jobs: list[Job]) -> bool:
        self.deliveries.append(jobs)
        return self.accept

    @property
    def jobs(self) -> list[Job]:
        return [j for batch in self.deliveries for j in batch]


def offer(
    store: Store,
    taker: Taker,
    *,
    queues: Sequence[str] = ("default",),
    limit: int = 5,
    namespaces: Sequence[str] | None = None,
    worker_id: str = "idle-worker",
    lease: timedelta = LEASE,
    loop: asyncio.AbstractEventLoop | None = None,
    tasks: Sequence[str] | None = None,
) -> IdleClaim:
    """Offer `store` an idle worker that `taker` stands for; returns the offer (to withdraw it)."""
    claim = IdleClaim(
        worker_id=worker_id,
        queues=tuple(queues),
        limit=limit,
        lease=lease,
        namespaces=namespaces,
        exclude_namespaces=(),
        deliver=taker,
        loop=loop or asyncio.get_running_loop(),
        tasks=tasks,
    )
    store.offer_idle(claim)
    return claim


async def lose_the_claim(how: str, store: Store, harness: StoreHarness, url: str) -> tuple[Job, Job]:
    """Claim as worker A, lose that claim `how`, claim again as worker B. Returns (A's job, B's job)."""
    if how == "crash" and (harness.snapshot is None or harness.restore is None):
        pytest.skip(f"{harness.name}: its StoreHarness has no snapshot/restore hooks to simulate a crash")
    job = await enqueue_one(store, max_attempts=5)
    snap = await harness.snapshot(url) if how == "crash" and harness.snapshot else None
    a = await claim_one(store, worker_id="A")
    if how == "crash" and harness.restore:
        await harness.restore(url, snap)
        back = await store.get_job(job.id)
        assert back is not None and (back.status, back.try_number, back.attempts) == (JobStatus.PENDING, 0, 0)
    elif how == "hand_back":
        assert await store.finish([Finish(a.lease, JobStatus.PENDING, release=True)]) == [True]
    elif how == "rescue":
        (rescued,) = await store.rescue(now=later(600))
        assert rescued.status is JobStatus.PENDING and rescued.lease_token is None
    else:
        assert await fail(store, a)
        await store.requeue(job.id)
    b = await claim_one(store, worker_id="B")
    assert b.id == a.id
    assert a.lease_token and b.lease_token and a.lease_token != b.lease_token
    if how in ("crash", "hand_back"):
        assert b.try_number == a.try_number == 1  # the try number repeats; the token does not
    return a, b
