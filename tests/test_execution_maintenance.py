"""Maintenance services (rescuer, pruner, cron scheduler), `app.cron`, and the worker's behaviour through a store
outage. In-memory store; the cross-store behaviour of rescue/prune is in the store conformance suite."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor import Conveyor, JobStatus, Namespace, StoreUnavailable, ValidationError
from conveyor.maintenance import Pruner, Rescuer, Scheduler, parse_schedule
from conveyor.model import Finish, Job, Lease, LeaseState
from conveyor.store.memory import MemoryStore
from tests.conformance.worker_support import running_worker, wait_status, wait_until


@pytest.fixture
async def app() -> AsyncIterator[Conveyor]:
    url = f"memory://maint-{uuid.uuid4().hex}"
    conveyor = Conveyor(url)
    await conveyor.aopen()
    try:
        yield conveyor
    finally:
        await conveyor.aclose()
        MemoryStore.forget(url)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# ---- cron -----------------------------------------------------------------------------------------------------


def test_schedule_specs() -> None:
    five = parse_schedule("*/5 * * * *")
    assert five.next_after(at("2026-01-01T10:02:00")) == at("2026-01-01T10:05:00")
    assert five.next_after(at("2026-01-01T10:05:00")) == at("2026-01-01T10:10:00")
    hourly = parse_schedule("@hourly")
    assert hourly.next_after(at("2026-01-01T10:02:00")) == at("2026-01-01T11:00:00")
    assert parse_schedule("@daily").next_after(at("2026-01-01T10:02:00")) == at("2026-01-02T00:00:00")
    every = parse_schedule("@every 90s")
    assert every.next_after(at("2026-01-01T10:00:00")) == at("2026-01-01T10:01:30")
    assert parse_schedule("@every 1h30m").period(at("2026-01-01T10:00:00")) == 5400
    for bad in ("* * *", "@sometimes", "@every 0s", "61 * * * *"):
        with pytest.raises(ValidationError):
            parse_schedule(bad)


def test_app_cron_registration(app: Conveyor) -> None:
    app.cron("*/5 * * * *", "cleanup", {"days": 7}, queue="maintenance", priority=5)
    entry = app.schedules["cleanup"]
    assert (entry.spec, entry.task, entry.payload) == ("*/5 * * * *", "cleanup", {"days": 7})
    assert entry.options == {"queue": "maintenance", "priority": 5}
    with pytest.raises(ValidationError, match="exists already"):
        app.cron("@hourly", "cleanup")
    app.cron("@hourly", "cleanup", name="cleanup-hourly")

    @app.cron("@daily")
    async def report(payload: None) -> None:
        return None

    assert "report" in app.tasks and app.schedules["report"].task == "report"

    @app.cron("@every 10m", name="sync-tick")
    def tick(payload: None) -> None:
        return None

    assert app.tasks["tick"].is_async is False and app.schedules["sync-tick"].task == "tick"
    with pytest.raises(ValidationError, match="invalid cron spec"):
        app.cron("nope", "cleanup", name="x")
    with pytest.raises(ValidationError, match="delay"):
        app.cron("@hourly", "cleanup", name="y", delay=5)


async def test_each_occurrence_is_enqueued_once_across_schedulers(app: Conveyor) -> None:
    app.cron("*/5 * * * *", "cleanup", {"days": 7}, queue="maintenance")
    other = Conveyor(app.url)  # another process: same store, its own scheduler
    other.cron("*/5 * * * *", "cleanup", {"days": 7}, queue="maintenance")
    start = at("2026-01-01T10:01:00")
    one = Scheduler(app, owner="one", now=start)
    two = Scheduler(other, owner="two", now=start)
    try:
        await other.aopen()
        await one.tick(at("2026-01-01T10:04:59"))
        assert (await app.astats()).total == 0
        await one.tick(at("2026-01-01T10:05:01"))
        await two.tick(at("2026-01-01T10:05:02"))
        await two.tick(at("2026-01-01T10:11:00"))  # 10:10 by the second scheduler
        await one.tick(at("2026-01-01T10:11:01"))
    finally:
        await other.aclose()
    jobs = (await app.alist_jobs(limit=10)).items
    assert len(jobs) == 2
    assert {j.queue for j in jobs} == {"maintenance"} and {j.task for j in jobs} == {"cleanup"}
    assert (one.enqueued, two.enqueued) == (1, 1)


async def test_scheduler_runs_inside_the_worker(app: Conveyor) -> None:
    ran: list[str] = []

    @app.cron("@every 1s")
    async def heartbeat_task(payload: None) -> None:
        ran.append("tick")

    async with running_worker(app):
        await wait_until(lambda: len(ran) >= 1, timeout=10)


# ---- rescuer and pruner ---------------------------------------------------------------------------------------


async def test_rescuer_gives_back_expired_leases(app: Conveyor) -> None:
    job = await app.aenqueue("t")
    await app.store.claim("dead-worker", ["default"], 1, timedelta(seconds=0.05))
    await asyncio.sleep(0.1)
    rescuer = Rescuer(app, interval=0.05)
    await rescuer.run_once()
    assert rescuer.rescued == 1
    back = await app.aget_job(job.id)
    assert back is not None and back.status is JobStatus.PENDING
    assert [a.status_code for a in await app.aattempts(job.id)] == [0]


class RescueOutageStore(MemoryStore):
    """A real in-memory store whose `rescue` fails while `down` is set."""

    down = False

    async def rescue(self, now: datetime | None = None, limit: int = 1000) -> list[Job]:
        if self.down:
            raise StoreUnavailable("injected outage")
        return await super().rescue(now, limit)


async def test_the_rescuer_tries_again_soon_after_a_failed_tick_not_an_interval_later() -> None:
    url = f"memory://rescue-outage-{uuid.uuid4().hex}"
    store = RescueOutageStore(url)
    app = Conveyor(store=store)
    rescuer = Rescuer(app, interval=30.0)
    try:
        job = await app.aenqueue("t")
        await store.claim("dead-worker", ["default"], 1, timedelta(seconds=0.2))
        store.down = True
        rescuer.start()
        await asyncio.sleep(0.5)  # ticks fail meanwhile; the lease runs out
        store.down = False
        back = asyncio.get_running_loop().time()
        await wait_until(lambda: rescuer.rescued == 1, timeout=10)
        took = asyncio.get_running_loop().time() - back
        assert took <= 1.5, f"rescued {took:.2f}s after the store came back (interval 30 s)"
        rescued = await app.aget_job(job.id)
        assert rescued is not None and rescued.status is JobStatus.PENDING
    finally:
        await rescuer.stop()
        await app.aclose()
        MemoryStore.forget(url)


async def test_pruner_applies_each_namespaces_own_retention(app: Conveyor) -> None:
    await app.aput_namespace(Namespace("keep", completed_retention=90 * 86400.0, failed_retention=10.0))
    await app.aput_namespace(Namespace("brief", completed_retention=0.0, failed_retention=0.0))

    @app.task("ok")
    async def ok(payload: None) -> None:
        return None

    kept = await app.aenqueue("ok", namespace="keep")
    brief = await app.aenqueue("ok", namespace="brief")
    unknown = await app.aenqueue("ok", namespace="never-created")  # no settings stored: the defaults
    pruner = Pruner(app)
    plan = {name: (c, f) for name, c, f in await pruner.plan()}
    assert plan["keep"] == (90 * 86400.0, 10.0)
    assert plan["brief"] == (0.0, 0.0)
    assert plan["never-created"] == (7 * 86400.0, 30 * 86400.0)
    assert plan["default"] == (7 * 86400.0, 30 * 86400.0)

    async with running_worker(app, maintenance=False, namespaces=None):
        for job in (kept, brief, unknown):
            await wait_status(app, job.id, JobStatus.COMPLETED)
    await asyncio.sleep(0.01)
    await pruner.run_once()
    assert await app.aget_job(brief.id) is None  # its namespace keeps nothing
    assert await app.aget_job(kept.id) is not None  # 90 days not over
    assert await app.aget_job(unknown.id) is not None  # 7 days not over

    explicit = Pruner(app, completed_retention=0.0, failed_retention=0.0)
    await explicit.run_once()
    assert await app.aget_job(kept.id) is None and await app.aget_job(unknown.id) is None
    assert explicit.pruned == 2


async def test_services_survive_store_outages(app: Conveyor, caplog: pytest.LogCaptureFixture) -> None:
    class Down(Rescuer):
        async def tick(self) -> None:
            raise StoreUnavailable("database is down")

    service = Down(app, interval=0.01)
    with caplog.at_level(logging.WARNING, "conveyor.maintenance"):
        service.start()
        await asyncio.sleep(0.1)
        assert service.running
        await service.stop()
    assert not service.running
    warnings = [r for r in caplog.records if "store unavailable" in r.getMessage()]
    assert len(warnings) == 1  # warned once, not once per tick


# ---- the worker through a store outage -------------------------------------------------------------------------


class FlakyStore(MemoryStore):
    """A real in-memory store whose worker-facing calls fail while `down` is set (fault injection)."""

    down = False

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("injected outage")

    async def claim(self, *args: Any, **kwargs: Any) -> list[Job]:
        self._check()
        return await super().claim(*args, **kwargs)

    async def finish(self, finishes: Sequence[Finish]) -> list[bool]:
        self._check()
        return await super().finish(finishes)

    async def heartbeat(self, leases: Sequence[Lease], lease: timedelta) -> list[LeaseState]:
        self._check()
        return await super().heartbeat(leases, lease)


async def test_worker_survives_an_outage_and_never_drops_a_finish(caplog: pytest.LogCaptureFixture) -> None:
    url = f"memory://flaky-{uuid.uuid4().hex}"
    store = FlakyStore(url)
    # The lease outlasts the 0.5 s outage with room for a stall of the loaded machine: the heartbeat after the
    # outage must extend the unflushed job's lease before the rescuer may take it (with a lease barely longer than
    # the outage, the rescue raced the first heartbeat after it, and the test measured the race).
    app = Conveyor(store=store, lease=timedelta(seconds=2.0))
    inside = asyncio.Event()
    release = asyncio.Event()

    @app.task("work")
    async def work(payload: int) -> int:
        inside.set()
        await release.wait()
        return payload

    try:
        first = await app.aenqueue("work", 1)
        with caplog.at_level(logging.WARNING, "conveyor.worker"):
            async with running_worker(app, poll_interval=0.05) as worker:
                await asyncio.wait_for(inside.wait(), 10)
                store.down = True
                release.set()
                await asyncio.sleep(0.5)  # the flush and the claims fail meanwhile
                second = await app.aenqueue("work", 2)  # enqueue itself still works in this fault model
                assert (await app.aget_job(first.id)).status is JobStatus.PROCESSING  # type: ignore[union-attr]
                store.down = False
                done = await wait_status(app, first.id, JobStatus.COMPLETED, timeout=10)
                await wait_status(app, second.id, JobStatus.COMPLETED, timeout=10)
                assert worker.processed == 2
        assert done.result == 1
        messages = [r.getMessage() for r in caplog.records]
        assert any("store unavailable" in m and "injected outage" in m for m in messages)
        assert any("reachable again" in m for m in messages)
    finally:
        await app.aclose()
        MemoryStore.forget(url)


def test_worker_awaited_from_another_loop_runs_on_the_apps_home_loop() -> None:
    url = f"memory://home-{uuid.uuid4().hex}"
    app = Conveyor(url)
    ran: list[int] = []

    @app.task("t")
    def t(payload: int) -> None:
        ran.append(payload)

    job = app.enqueue("t", 1)  # sync use first: the app's home is its private portal loop

    async def main() -> None:
        from conveyor.worker import Worker

        worker = Worker(app, install_signal_handlers=False)
        task = asyncio.create_task(worker.run())
        assert await worker.wait_started(10)
        await wait_status(app, job.id, JobStatus.COMPLETED)
        worker.stop()
        await asyncio.wait_for(task, 10)

    try:
        asyncio.run(main())
    finally:
        app.close()
        MemoryStore.forget(url)
    assert ran == [1]
