"""Redis outages, on a private redis-server (never the shared one): the store opens while Redis is down, every
call raises StoreUnavailable with the Go template's 503 text, and it recovers by itself when Redis returns, with
every acknowledged job completed — also across a kill -9 of Redis in the middle of a load."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.conformance.worker_support import wait_until
from tests.stores.redis_server import PrivateRedis

from conveyor import Conveyor
from conveyor.errors import StoreUnavailable
from conveyor.model import Attempt, AttemptOutcome, Finish, JobStatus, NewJob
from conveyor.store.redis import UNAVAILABLE, RedisStore
from conveyor.worker import Worker

pytestmark = pytest.mark.slow


OUTAGE_WAIT = 30.0  # seconds a recovery may take here (a restart, reconnects, flush back-off)


@pytest.fixture
def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    srv = PrivateRedis(tmp_path / "redis")
    try:
        yield srv
    finally:
        srv.kill()


async def test_lazy_store_opens_while_redis_is_down_and_recovers_by_itself(
    server: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisStore(f"{server.url}?prefix=lazy", lazy=True)
    with caplog.at_level(logging.WARNING, logger="conveyor.store.redis"):
        await store.open()  # no raise
    assert "not reachable" in caplog.text
    try:
        for call in (
            lambda: store.enqueue([NewJob.build("t")]),
            lambda: store.claim("w", ["default"], 10, timedelta(seconds=30)),
            lambda: store.stats(),
            lambda: store.get_job("x"),
            lambda: store.kv_get("k"),
            lambda: store.list_workers(),
            store.ping,
        ):
            with pytest.raises(StoreUnavailable) as info:
                await call()
            assert info.value.message == UNAVAILABLE
            assert info.value.status_code == 503
        await store.wait_for_jobs(0.05)  # waiting never raises; the next claim reports the outage

        server.start()
        [job] = await store.enqueue([NewJob.build("t")])  # same store object: no rebuild, no reopen
        [claimed] = await store.claim("w", ["default"], 10, timedelta(seconds=30))
        assert claimed.id == job.id
    finally:
        await store.close()


async def test_eager_open_raises_store_unavailable_while_redis_is_down(server: PrivateRedis) -> None:
    store = RedisStore(f"{server.url}?prefix=eager")
    with pytest.raises(StoreUnavailable) as info:
        await store.open()
    assert info.value.message == UNAVAILABLE
    server.start()
    await store.open()  # a later open succeeds
    await store.close()


async def test_acknowledged_jobs_survive_kill_9_of_redis_under_load(server: PrivateRedis) -> None:
    """A producer enqueues and a consumer claims/finishes continuously while Redis is killed (-9) and restarted.
    Every enqueue that returned is completed in the end; the stores were never rebuilt or reopened."""
    server.start()
    url = f"{server.url}?prefix=load"
    producer, consumer = RedisStore(url, lazy=True), RedisStore(url, lazy=True)
    await producer.open()
    await consumer.open()
    acked: list[str] = []
    refused = 0
    consumer_errors = 0
    stop = asyncio.Event()

    async def produce() -> None:
        nonlocal refused
        i = 0
        while not stop.is_set():
            try:
                [job] = await producer.enqueue([NewJob.build("t", {"i": i})])
                acked.append(job.id)
            except StoreUnavailable:
                refused += 1
                await asyncio.sleep(0.01)
            i += 1
            await asyncio.sleep(0.001)

    async def consume() -> None:
        nonlocal consumer_errors
        while True:
            try:
                await consumer.rescue()  # a claim whose answer was lost comes back after its 1 s lease
                jobs = await consumer.claim("w", ["default"], 20, timedelta(seconds=1))
                if not jobs:
                    await consumer.wait_for_jobs(0.05)
                    continue
                now = datetime.now(UTC)
                await consumer.finish(
                    [
                        Finish(
                            j.lease,
                            JobStatus.COMPLETED,
                            attempt=Attempt(j.id, j.try_number, AttemptOutcome.COMPLETED, 200, now, now, "w"),
                        )
                        for j in jobs
                    ]
                )
            except StoreUnavailable:
                consumer_errors += 1
                await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(produce()), asyncio.create_task(consume())]
    try:
        await wait_until(lambda: len(acked) >= 150, timeout=OUTAGE_WAIT)
        server.kill()
        await wait_until(lambda: refused >= 5, timeout=OUTAGE_WAIT)  # the outage is reported, not hidden
        server.start()
        before_restart = len(acked)
        # both sides recovered by themselves
        await wait_until(lambda: len(acked) >= before_restart + 150, timeout=OUTAGE_WAIT)
        stop.set()
        await tasks[0]

        async def drained() -> bool:
            stats = await consumer.stats()
            return stats.pending == 0 and stats.processing == 0

        await wait_until(drained, timeout=60)
        assert consumer_errors > 0
        for job_id in acked:
            job = await consumer.get_job(job_id)
            assert job is not None, f"acknowledged job {job_id} was lost"
            assert job.status is JobStatus.COMPLETED
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await producer.close()
        await consumer.close()


async def test_worker_starts_while_redis_is_down_and_resumes_by_itself(server: PrivateRedis) -> None:
    """The Go template's promise: the worker starts without Redis, enqueue is refused with the 503 text while it
    is down, and work resumes without restarting anything when Redis returns — also after a kill -9."""
    app = Conveyor(f"{server.url}?prefix=worker", lease=timedelta(seconds=2))
    done: list[int] = []

    @app.task("t")
    async def t(payload: int) -> None:
        done.append(payload)

    worker = Worker(app, install_signal_handlers=False, poll_interval=0.2, concurrency=4)
    run = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.3)
        assert not run.done()  # no crash while Redis is down
        with pytest.raises(StoreUnavailable) as info:
            await app.aenqueue("t", 0)
        assert info.value.message == UNAVAILABLE

        server.start()
        first = [await app.aenqueue("t", i) for i in range(1, 51)]
        await wait_until(lambda: len(set(done)) >= 50, timeout=OUTAGE_WAIT)

        server.kill()
        await asyncio.sleep(0.5)
        with pytest.raises(StoreUnavailable):
            await app.aenqueue("t", -1)
        server.start()
        second = [await app.aenqueue("t", i) for i in range(51, 101)]
        await wait_until(lambda: set(range(1, 101)) <= set(done), timeout=OUTAGE_WAIT)

        async def all_recorded() -> bool:
            # A handler's return is recorded by the worker's completer, which retries with back-off while Redis
            # is down: a completion from before the kill may land a few seconds after the handler ran.
            stored = [await app.aget_job(job.id) for job in first + second]
            return all(j is not None and j.status is JobStatus.COMPLETED for j in stored)

        await wait_until(all_recorded, timeout=OUTAGE_WAIT)
        for job in first + second:
            stored = await app.aget_job(job.id)
            assert stored is not None and stored.status is JobStatus.COMPLETED
    finally:
        worker.stop()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(run, 30)
        await app.aclose()
