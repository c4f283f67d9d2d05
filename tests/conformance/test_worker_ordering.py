"""Worker conformance: what a running worker picks and when — priorities, queues, serial lanes, auto_run — on
every store."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from conveyor import Conveyor, JobContext, Namespace
from conveyor.model import Finish, Job, JobStatus
from conveyor.store import open_store
from tests.conformance.worker_support import running_worker, wait_status, wait_until, worker_app

__all__ = ["worker_app"]


async def test_priorities_are_honoured(worker_app: Conveyor) -> None:
    app = worker_app
    order: list[int] = []

    @app.task("rec")
    async def rec(payload: int) -> None:
        order.append(payload)

    for priority in (5, -3, 0, 10, -3):
        await app.aenqueue("rec", priority, priority=priority)
    async with running_worker(app, concurrency=1):
        await wait_until(lambda: len(order) == 5)
    assert order == [-3, -3, 0, 5, 10]


async def test_worker_only_runs_its_queues(worker_app: Conveyor) -> None:
    app = worker_app
    seen: list[str] = []

    @app.task("rec")
    async def rec(payload: str) -> None:
        seen.append(payload)

    mail = await app.aenqueue("rec", "mail", queue="mail")
    other = await app.aenqueue("rec", "reports", queue="reports")
    dflt = await app.aenqueue("rec", "default")
    async with running_worker(app, queues=["mail", "default"]):
        await wait_status(app, mail.id, JobStatus.COMPLETED)
        await wait_status(app, dflt.id, JobStatus.COMPLETED)
        await asyncio.sleep(0.3)
    assert sorted(seen) == ["default", "mail"]
    assert (await app.aget_job(other.id)).status is JobStatus.PENDING  # type: ignore[union-attr]


async def test_serial_lanes_run_one_at_a_time_oldest_first(worker_app: Conveyor) -> None:
    app = worker_app
    events: list[tuple[str, str, int]] = []
    active: dict[str, int] = {}
    overlap: list[str] = []

    @app.task("step")
    async def step(payload: dict[str, object]) -> None:
        lane = str(payload["lane"])
        active[lane] = active.get(lane, 0) + 1
        if active[lane] > 1:
            overlap.append(lane)
        events.append(("start", lane, int(payload["n"])))  # type: ignore[call-overload]
        await asyncio.sleep(0.01)
        active[lane] -= 1

    for n in range(5):
        await app.aenqueue("step", {"lane": "g", "n": n}, group_key="g")
        await app.aenqueue("step", {"lane": "u", "n": n}, user_id="u1")
    async with running_worker(app, concurrency=10):
        await wait_until(lambda: len(events) == 10, timeout=15)
    assert overlap == []
    assert [n for kind, lane, n in events if lane == "g"] == [0, 1, 2, 3, 4]
    assert [n for kind, lane, n in events if lane == "u"] == [0, 1, 2, 3, 4]


async def test_namespaces_with_auto_run_off_are_left_to_run(worker_app: Conveyor) -> None:
    app = worker_app
    seen: list[str] = []

    @app.task("rec")
    async def rec(payload: str) -> None:
        seen.append(payload)

    await app.aput_namespace(Namespace("manual", auto_run=False))
    await app.aput_namespace(Namespace("auto", auto_run=True))
    manual = await app.aenqueue("rec", "manual", namespace="manual", user_id="p1")
    auto = await app.aenqueue("rec", "auto", namespace="auto")
    async with running_worker(app):
        await wait_status(app, auto.id, JobStatus.COMPLETED)
        await asyncio.sleep(0.3)
        assert (await app.aget_job(manual.id)).status is JobStatus.PENDING  # type: ignore[union-attr]
        result = await app.arun_next("manual", "p1")
    assert result.job is not None and result.job.id == manual.id
    assert sorted(seen) == ["auto", "manual"]


async def _claim_continuously(store_url: str, stop: asyncio.Event, took: list[Job]) -> None:
    """A second claimer (another store object: another process, as far as the store can tell) that claims and
    completes every job it can get, as fast as it can."""
    other = open_store(store_url)
    await other.open()
    try:
        while not stop.is_set():
            jobs = await other.claim("thief", ["default"], 10, timedelta(seconds=30), tasks=["rec"])
            took.extend(jobs)
            if jobs:
                await other.finish([Finish(j.lease, JobStatus.COMPLETED) for j in jobs])
            await asyncio.sleep(0.001)
    finally:
        await other.close()


async def _never_claimed(app: Conveyor, jobs: list[Job]) -> None:
    for job in jobs:
        stored = await app.aget_job(job.id)
        assert stored is not None
        assert (stored.status, stored.attempts, stored.try_number) == (JobStatus.PENDING, 0, 0), stored
        assert await app.aattempts(job.id) == []


async def test_a_namespace_created_with_auto_run_off_never_has_a_job_claimed(worker_app: Conveyor) -> None:
    """Create (or replace) a namespace with auto_run off, then enqueue at once, 100 times, while a worker (with
    hand-off where the store has it) and a second claimer claim continuously: zero claims. The store decides
    inside each claim; no worker keeps a list of namespaces that could be stale (issue 9, item 3)."""
    app = worker_app
    ran: list[str] = []

    @app.task("rec")
    async def rec(payload: int, ctx: JobContext) -> None:
        ran.append(ctx.job.namespace)

    stop = asyncio.Event()
    took: list[Job] = []
    manual: list[Job] = []
    auto: list[Job] = []
    async with running_worker(app, concurrency=4):
        thief = asyncio.create_task(_claim_continuously(app.url, stop, took))
        try:
            for i in range(100):
                await app.aput_namespace(Namespace(f"off-{i}", auto_run=False))
                manual.append(await app.aenqueue("rec", i, namespace=f"off-{i}"))
                auto.append(await app.aenqueue("rec", i, namespace="auto"))  # keeps both claimers busy

            async def auto_done() -> bool:
                return (await app.astats(namespace="auto")).completed == len(auto)

            await wait_until(auto_done, timeout=60)
        finally:
            stop.set()
            await thief
    assert not [ns for ns in ran if ns.startswith("off-")]
    assert not [j.namespace for j in took if j.namespace.startswith("off-")]
    await _never_claimed(app, manual)


async def test_switching_auto_run_off_then_enqueuing_never_has_the_job_claimed(worker_app: Conveyor) -> None:
    app = worker_app
    ran: list[str] = []

    @app.task("rec")
    async def rec(payload: int, ctx: JobContext) -> None:
        ran.append(f"{ctx.job.namespace}/{payload}")

    stop = asyncio.Event()
    took: list[Job] = []
    manual: list[Job] = []
    async with running_worker(app, concurrency=4):
        thief = asyncio.create_task(_claim_continuously(app.url, stop, took))
        try:
            for i in range(30):
                name = f"flip-{i}"
                await app.aput_namespace(Namespace(name, auto_run=True))
                first = await app.aenqueue("rec", 0, namespace=name)
                await wait_status(app, first.id, JobStatus.COMPLETED)  # every claimer has been running it
                await app.aput_namespace(Namespace(name, auto_run=False))
                manual.append(await app.aenqueue("rec", 1, namespace=name))
        finally:
            stop.set()
            await thief
    assert not [r for r in ran if r.endswith("/1")]
    assert not [j for j in took if j.payload == 1]
    await _never_claimed(app, manual)


async def test_idle_worker_starts_an_in_process_enqueue_within_milliseconds(worker_app: Conveyor) -> None:
    app = worker_app
    started_at: list[float] = []

    @app.task("ping")
    async def ping(payload: None) -> None:
        started_at.append(time.perf_counter())

    # poll_interval 30 s: only the wake-up can explain a quick start.
    async with running_worker(app, poll_interval=30.0):
        await asyncio.sleep(0.2)  # let the worker go idle
        latencies = []
        for _ in range(5):
            t0 = time.perf_counter()
            await app.aenqueue("ping")
            await wait_until(lambda n=len(latencies) + 1: len(started_at) >= n, timeout=5, interval=0.001)
            latencies.append(started_at[-1] - t0)
    assert sorted(latencies)[2] < 0.2, latencies


async def test_many_jobs_complete_exactly_once_in_one_worker(worker_app: Conveyor) -> None:
    app = worker_app
    counts: dict[int, int] = {}

    @app.task("count")
    async def count(payload: int) -> None:
        counts[payload] = counts.get(payload, 0) + 1

    n = 500
    await app.aenqueue_many([{"task": "count", "payload": i} for i in range(n)])
    async with running_worker(app, concurrency=20):
        await wait_until(lambda: len(counts) == n, timeout=60)

        async def all_completed() -> bool:
            return (await app.astats()).completed == n

        await wait_until(all_completed, timeout=30)
    assert set(counts.values()) == {1}
