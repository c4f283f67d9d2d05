"""Worker conformance across processes: kill -9 recovery, exactly-once completion with several worker processes,
and graceful shutdown on SIGTERM. Workers are real subprocesses (`python -m tests.conformance.worker_tasks`), so
these run on the stores that processes can share."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor import Conveyor, JobStatus
from tests.conformance.worker_support import read_lines, spawn_worker, stop_process, wait_status, wait_until

pytestmark = [pytest.mark.stores("sqlite", "postgresql", "redis"), pytest.mark.slow]


@pytest.fixture
async def app(store_url: str) -> AsyncIterator[Conveyor]:
    conveyor = Conveyor(store_url)
    await conveyor.aopen()
    try:
        yield conveyor
    finally:
        await conveyor.aclose()


async def _ready(path: Path, timeout: float = 60.0) -> None:
    await wait_until(path.exists, timeout=timeout, interval=0.05)


async def test_kill_9_mid_job_runs_again_elsewhere_within_about_a_lease(app: Conveyor, tmp_path: Path) -> None:
    log = tmp_path / "log"
    job = await app.aenqueue("block_once", {"log": str(log)}, max_attempts=3)
    a = spawn_worker(app.url, "--lease", "2", "--ready", str(tmp_path / "a.ready"))
    b = None
    try:
        await wait_until(lambda: any(line.startswith("start 1 ") for line in read_lines(log)), timeout=60)
        b = spawn_worker(app.url, "--lease", "2", "--ready", str(tmp_path / "b.ready"))
        await _ready(tmp_path / "b.ready")
        a.send_signal(signal.SIGKILL)
        a.wait(10)
        killed_at = time.monotonic()
        done = await wait_status(app, job.id, JobStatus.COMPLETED, timeout=30)
        recovered_in = time.monotonic() - killed_at
        assert done.result == f"completed by {b.pid}"
        assert recovered_in < 15, recovered_in  # ~ one lease (2 s) + rescue interval (1 s) + slack
        attempts = await app.aattempts(job.id)
        assert [a.status_code for a in attempts] == [0, 200]  # the lost try, then the success
        assert "stopped heartbeating" in (attempts[0].error or "")
        assert [line.split()[0] for line in read_lines(log)] == ["start", "start", "done"]
    finally:
        stop_process(a, signal.SIGKILL)
        if b is not None:
            stop_process(b)


async def test_n_worker_processes_complete_each_job_exactly_once(app: Conveyor, tmp_path: Path) -> None:
    effects = tmp_path / "effects"
    count = 300
    jobs = await app.aenqueue_many(
        [{"task": "append", "payload": {"path": str(effects), "n": i}} for i in range(count)]
    )
    procs = [spawn_worker(app.url, "--concurrency", "5", "--ready", str(tmp_path / f"w{i}.ready")) for i in range(3)]
    try:
        for i in range(3):  # every worker must be up (signal handlers installed) before it is asked to stop
            await _ready(tmp_path / f"w{i}.ready")

        async def all_done() -> bool:
            return (await app.astats()).completed == count

        await wait_until(all_done, timeout=120, interval=0.1)
    finally:
        codes = [stop_process(p) for p in procs]
    assert codes == [0, 0, 0]
    lines = read_lines(effects)
    ids = [line.split()[0] for line in lines]
    assert len(ids) == count, f"{len(ids)} side effects for {count} jobs"
    assert sorted(ids) == sorted(j.id for j in jobs)
    pids = {line.split()[1] for line in lines}
    assert len(pids) >= 1
    stats = await app.astats()
    assert (stats.completed, stats.pending, stats.processing, stats.failed) == (count, 0, 0, 0)


async def test_sigterm_lets_the_running_job_finish_within_grace(app: Conveyor, tmp_path: Path) -> None:
    log = tmp_path / "log"
    job = await app.aenqueue("sleep", {"log": str(log), "seconds": 1.0})
    proc = spawn_worker(app.url, "--grace", "20", "--ready", str(tmp_path / "ready"))
    try:
        await wait_until(lambda: read_lines(log), timeout=60)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    finally:
        stop_process(proc, signal.SIGKILL)
    assert code == 0
    done = await app.aget_job(job.id)
    assert done is not None and done.status is JobStatus.COMPLETED
    assert [line.split()[0] for line in read_lines(log)] == ["start", "done"]
    assert [w for w in await app.alist_workers()] == []  # unregistered on the way out


async def test_sigterm_past_grace_hands_the_job_back_without_counting_an_attempt(app: Conveyor, tmp_path: Path) -> None:
    log = tmp_path / "log"
    job = await app.aenqueue("sleep", {"log": str(log), "seconds": 60})
    proc = spawn_worker(app.url, "--grace", "0.5", "--ready", str(tmp_path / "ready"))
    try:
        await wait_until(lambda: read_lines(log), timeout=60)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
        took = time.monotonic() - started
    finally:
        stop_process(proc, signal.SIGKILL)
    assert code == 0
    assert took < 15, took
    released = await app.aget_job(job.id)
    assert released is not None
    assert released.status is JobStatus.PENDING
    assert released.attempts == 0
    assert await app.aattempts(job.id) == []
    assert [line.split()[0] for line in read_lines(log)] == ["start"]
