"""Worker conformance: cancelling pending and running jobs (SPEC §2.5), on every store.

A cancel requested in the worker's own process stops the job at once (event bus); one requested from another
process (here: a second app on the same store, with its own event bus) reaches the worker through the heartbeat.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

from conveyor import AttemptOutcome, Conveyor, JobContext, JobStatus
from tests.conformance.worker_support import running_worker, wait_status, wait_until, worker_app

__all__ = ["worker_app"]


async def test_cancelled_pending_job_never_runs(worker_app: Conveyor) -> None:
    app = worker_app
    ran: list[str] = []

    @app.task("later")
    async def later(payload: None) -> None:
        ran.append("ran")

    job = await app.aenqueue("later", delay=0.3)
    cancelled = await app.acancel(job.id)
    assert cancelled.status is JobStatus.CANCELLED
    marker = await app.aenqueue("later")
    async with running_worker(app):
        await wait_status(app, marker.id, JobStatus.COMPLETED)
        await asyncio.sleep(0.5)
    assert ran == ["ran"]
    assert (await app.aget_job(job.id)).status is JobStatus.CANCELLED  # type: ignore[union-attr]
    assert await app.aattempts(job.id) == []


async def test_cancel_running_async_handler_is_cancelled_at_once(worker_app: Conveyor) -> None:
    app = worker_app
    started = asyncio.Event()
    outcome: list[str] = []

    @app.task("forever")
    async def forever(payload: None) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    job = await app.aenqueue("forever")
    async with running_worker(app):
        await asyncio.wait_for(started.wait(), 10)
        await app.acancel(job.id)
        done = await wait_status(app, job.id, JobStatus.CANCELLED, timeout=5)
    assert outcome == ["cancelled"]
    assert done.finished_at is not None
    (attempt,) = await app.aattempts(job.id)
    assert (attempt.status_code, attempt.outcome) == (499, AttemptOutcome.CANCELLED)


async def test_cancel_running_sync_handler_sets_the_flag(worker_app: Conveyor) -> None:
    app = worker_app
    started = threading.Event()
    saw: list[bool] = []

    @app.task("loop")
    def loop(payload: None, ctx: JobContext) -> str:
        started.set()
        saw.append(ctx.wait_cancelled_sync(30))
        return "stopped early"

    job = await app.aenqueue("loop")
    async with running_worker(app):
        await wait_until(started.is_set)
        await app.acancel(job.id)
        await wait_status(app, job.id, JobStatus.CANCELLED, timeout=5)
    assert saw == [True]
    (attempt,) = await app.aattempts(job.id)
    assert attempt.status_code == 499


async def test_cancel_from_another_process_arrives_with_the_heartbeat(store_url: str) -> None:
    # Two apps on one store share the data but not an event bus, like two processes.
    worker_side = Conveyor(store_url, lease=timedelta(seconds=1.2))  # heartbeats every 0.2 s
    other_side = Conveyor(store_url)
    started = asyncio.Event()

    @worker_side.task("forever")
    async def forever(payload: None) -> None:
        started.set()
        await asyncio.sleep(60)

    try:
        await worker_side.aopen()
        await other_side.aopen()
        job = await other_side.aenqueue("forever")
        async with running_worker(worker_side):
            await asyncio.wait_for(started.wait(), 10)
            await other_side.acancel(job.id)
            await wait_status(worker_side, job.id, JobStatus.CANCELLED, timeout=10)
        (attempt,) = await worker_side.aattempts(job.id)
        assert attempt.outcome is AttemptOutcome.CANCELLED
    finally:
        await other_side.aclose()
        await worker_side.aclose()
