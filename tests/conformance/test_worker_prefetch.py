"""Worker conformance: claim-ahead (prefetch) while handlers are fast. Prefetched jobs are claimed but not yet
started: a cancel finishes them as cancelled, a shutdown or a long wait hands them back without counting an
attempt. On every store."""

from __future__ import annotations

import asyncio

from conveyor import AttemptOutcome, Conveyor, JobStatus
from conveyor.worker import Worker
from tests.conformance.worker_support import running_worker, wait_status, wait_until, worker_app

__all__ = ["worker_app"]


async def _blocked_worker_with_buffer(
    app: Conveyor, release: asyncio.Event, **options: object
) -> tuple[Worker, asyncio.Task[None], list[str]]:
    inside = asyncio.Event()

    @app.task("block")
    async def block(payload: None) -> str:
        inside.set()
        await release.wait()
        return "unblocked"

    @app.task("quick")
    async def quick(payload: int) -> int:
        return payload

    jobs = await app.aenqueue_many(
        [{"task": "block", "priority": -1}] + [{"task": "quick", "payload": i} for i in range(3)]
    )
    worker = Worker(app, concurrency=1, install_signal_handlers=False, poll_interval=0.2, **options)  # type: ignore[arg-type]
    worker.executor.avg_run = 0.0  # pretend handlers have been fast: prefetch is on from the first claim
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(inside.wait(), 10)
    await wait_until(lambda: len(worker.producer.buffer) == 3)
    return worker, task, [j.id for j in jobs]


async def test_prefetched_jobs_are_cancelled_or_handed_back_at_shutdown(worker_app: Conveyor) -> None:
    app = worker_app
    release = asyncio.Event()
    worker, task, (block, a, b, c) = await _blocked_worker_with_buffer(app, release, grace_period=0.2)
    worker.buffer_wait = 60.0
    assert set(worker.running_jobs) == {block}
    listed = {j for w in await app.alist_workers() if w.id == worker.worker_id for j in w.running}
    assert listed <= {block, a, b, c}
    await app.acancel(a)
    await wait_status(app, a, JobStatus.CANCELLED, timeout=5)
    (attempt,) = await app.aattempts(a)
    assert (attempt.status_code, attempt.outcome) == (499, AttemptOutcome.CANCELLED)
    worker.stop()
    await asyncio.wait_for(task, 20)
    for job_id in (block, b, c):
        job = await app.aget_job(job_id)
        assert job is not None and job.status is JobStatus.PENDING, job
        assert job.attempts == 0
        assert await app.aattempts(job_id) == []


async def test_prefetched_jobs_waiting_too_long_are_handed_back(worker_app: Conveyor) -> None:
    app = worker_app
    release = asyncio.Event()
    worker, task, (block, a, b, c) = await _blocked_worker_with_buffer(app, release)
    worker.buffer_wait = 0.2
    await wait_until(lambda: not worker.producer.buffer, timeout=10)

    async def handed_back() -> bool:
        jobs = [await app.aget_job(j) for j in (a, b, c)]
        return all(j is not None and j.status is JobStatus.PENDING and j.attempts == 0 for j in jobs)

    await wait_until(handed_back, timeout=10)
    release.set()
    for job_id in (block, a, b, c):
        await wait_status(app, job_id, JobStatus.COMPLETED, timeout=10)
    worker.stop()
    await asyncio.wait_for(task, 20)
    assert [attempt.status_code for attempt in await app.aattempts(a)] == [200]


async def test_fast_jobs_complete_exactly_once_with_prefetch(worker_app: Conveyor) -> None:
    app = worker_app
    counts: dict[int, int] = {}

    @app.task("count")
    async def count(payload: int) -> None:
        counts[payload] = counts.get(payload, 0) + 1

    n = 400
    async with running_worker(app, concurrency=4, batch_size=4) as worker:
        worker.executor.avg_run = 0.0
        await app.aenqueue_many([{"task": "count", "payload": i} for i in range(n)])
        await wait_until(lambda: len(counts) == n, timeout=60)

        async def all_completed() -> bool:
            return (await app.astats()).completed == n

        await wait_until(all_completed, timeout=30)
    assert set(counts.values()) == {1}
