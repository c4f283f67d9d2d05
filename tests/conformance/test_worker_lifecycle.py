"""Worker conformance: registration, graceful shutdown and fencing, in one process, on every store."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from conveyor import Conveyor, JobContext, JobStatus
from conveyor.worker import Worker
from tests.conformance.worker_support import running_worker, wait_status, wait_until, worker_app

__all__ = ["worker_app"]


async def test_worker_is_registered_while_running_and_gone_after(worker_app: Conveyor) -> None:
    app = worker_app
    async with running_worker(app, queues=["default", "mail"], concurrency=7) as worker:
        workers = await app.alist_workers()
        (info,) = [w for w in workers if w.id == worker.worker_id]
        assert list(info.queues) == ["default", "mail"]
        assert info.concurrency == 7
        assert info.expires_at > info.heartbeat_at
    assert [w for w in await app.alist_workers() if w.id == worker.worker_id] == []


async def test_registration_lists_running_jobs(store_url: str) -> None:
    app = Conveyor(store_url, lease=timedelta(seconds=0.6))  # heartbeat (and registration) every 0.1 s
    inside = asyncio.Event()
    release = asyncio.Event()

    @app.task("hold")
    async def hold(payload: None) -> None:
        inside.set()
        await release.wait()

    try:
        job = await app.aenqueue("hold")
        async with running_worker(app) as worker:
            await asyncio.wait_for(inside.wait(), 10)

            async def listed() -> bool:
                return any(w.id == worker.worker_id and job.id in w.running for w in await app.alist_workers())

            await wait_until(listed, timeout=5)
            release.set()
    finally:
        await app.aclose()


async def test_graceful_stop_lets_running_jobs_finish_within_grace(worker_app: Conveyor) -> None:
    app = worker_app
    inside = asyncio.Event()

    @app.task("short")
    async def short(payload: None) -> str:
        inside.set()
        await asyncio.sleep(0.3)
        return "finished"

    job = await app.aenqueue("short")
    worker = Worker(app, grace_period=10, install_signal_handlers=False)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(inside.wait(), 10)
    worker.stop()
    late = await app.aenqueue("short")  # enqueued after stop: must not be claimed
    await asyncio.wait_for(task, 20)
    done = await app.aget_job(job.id)
    assert done is not None and done.status is JobStatus.COMPLETED and done.result == "finished"
    assert (await app.aget_job(late.id)).status is JobStatus.PENDING  # type: ignore[union-attr]


async def test_jobs_past_grace_are_released_without_counting_an_attempt(worker_app: Conveyor) -> None:
    app = worker_app
    inside = asyncio.Event()
    outcome: list[str] = []

    @app.task("long")
    async def long(payload: None, ctx: JobContext) -> None:
        inside.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            outcome.append(ctx.cancel_reason or "")
            raise

    job = await app.aenqueue("long")
    worker = Worker(app, grace_period=0.2, install_signal_handlers=False)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(inside.wait(), 10)
    worker.stop()
    await asyncio.wait_for(task, 20)
    released = await app.aget_job(job.id)
    assert released is not None
    assert released.status is JobStatus.PENDING
    assert released.attempts == 0
    assert released.worker_id is None
    assert await app.aattempts(job.id) == []
    assert outcome == ["worker shutting down"]


async def test_a_stale_worker_cannot_finish_a_reclaimed_attempt(store_url: str) -> None:
    """Worker A's lease runs out (its heartbeat is far slower than its lease); the job is rescued and re-run by
    worker B. When A's handler finally returns, its report is fenced off: B's outcome stands."""
    stale_app = Conveyor(store_url, lease=timedelta(seconds=0.3))
    fresh_app = Conveyor(store_url, lease=timedelta(seconds=30))
    release_a = asyncio.Event()
    a_running = asyncio.Event()
    runs: list[str] = []

    @stale_app.task("work")
    async def work_a(payload: None) -> str:
        runs.append("A")
        a_running.set()
        await release_a.wait()
        return "from A"

    @fresh_app.task("work")
    async def work_b(payload: None) -> str:
        runs.append("B")
        return "from B"

    try:
        await stale_app.aopen()
        await fresh_app.aopen()
        job = await stale_app.aenqueue("work", max_attempts=3)
        # concurrency=1: A's only slot stays busy, so A cannot claim the rescued job again itself.
        async with running_worker(stale_app, concurrency=1, heartbeat_interval=60.0, maintenance=False) as a:
            await asyncio.wait_for(a_running.wait(), 10)
            await asyncio.sleep(0.5)  # A's lease (0.3 s) expires; A does not notice

            async def rescued() -> bool:
                return bool(await fresh_app.store.rescue())

            await wait_until(rescued, timeout=5)
            async with running_worker(fresh_app):
                done = await wait_status(fresh_app, job.id, JobStatus.COMPLETED)
            release_a.set()
            await wait_until(lambda: a.processed >= 1, timeout=5)
        final = await fresh_app.aget_job(job.id)
        assert final is not None and final.result == "from B"
        assert done.result == "from B"
        assert runs == ["A", "B"]
        attempts = await fresh_app.aattempts(job.id)
        assert [a.status_code for a in attempts] == [0, 200]  # the lost try, then B's success; nothing from A
    finally:
        await stale_app.aclose()
        await fresh_app.aclose()


async def test_an_idle_worker_is_handed_jobs_enqueued_in_its_process(worker_app: Conveyor) -> None:
    """On a store with hand-off an enqueue claims for the waiting worker in the same round trip (store/base.py:
    "Hand-off"); elsewhere the worker is woken and claims. Either way every job runs once, on this worker."""
    app = worker_app
    ran: list[str] = []
    done = asyncio.Event()

    @app.task("note")
    async def note(payload: dict[str, int], ctx: JobContext) -> None:
        ran.append(ctx.job.id)
        done.set()

    async with running_worker(app, poll_interval=30) as worker:
        await asyncio.sleep(0.1)  # the first claim (at start) found nothing: the worker waits
        jobs = []
        for i in range(20):
            done.clear()
            jobs.append(await app.aenqueue("note", {"n": i}))
            await asyncio.wait_for(done.wait(), 10)
        expected = 20 if app.store.supports_handoff else 0
        assert worker.handed_off == expected
    assert ran == [j.id for j in jobs]
    for job in jobs:
        final = await wait_status(app, job.id, JobStatus.COMPLETED)
        assert final.worker_id is None and final.attempts == 1


async def test_a_stopping_worker_takes_no_handoff(worker_app: Conveyor) -> None:
    app = worker_app
    inside = asyncio.Event()
    release = asyncio.Event()

    @app.task("hold")
    async def hold(payload: None) -> None:
        inside.set()
        await release.wait()

    await app.aenqueue("hold")
    worker = Worker(app, grace_period=10, install_signal_handlers=False, poll_interval=30)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(inside.wait(), 10)
    worker.stop()
    late = await app.aenqueue("hold")
    release.set()
    await asyncio.wait_for(task, 20)
    assert worker.handed_off == 0
    got = await app.aget_job(late.id)
    assert got is not None and got.status is JobStatus.PENDING and got.attempts == 0
