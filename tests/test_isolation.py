"""Process isolation with real child processes (issue 9, item 4): cancel kills the child, a child that dies is a
failed try with a clear error and is replaced, graceful shutdown, and the rules for what can be isolated.
Store-independent, so on the memory store (tests/conformance/test_worker_isolation.py covers every store)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from conveyor import Conveyor, JobStatus
from conveyor.errors import ValidationError
from conveyor.worker import Worker
from tests import isolation_tasks
from tests.conformance.worker_support import read_lines, running_worker, wait_status, wait_until


@pytest.fixture
async def app() -> AsyncIterator[Conveyor]:
    conveyor = Conveyor(f"memory://{uuid.uuid4().hex}", lease=timedelta(seconds=5))
    await conveyor.aopen()
    try:
        yield conveyor
    finally:
        await conveyor.aclose()


async def _pid_in(log: Path) -> int:
    lines = await wait_until(lambda: read_lines(log), timeout=20)
    return int(lines[0].split()[1])


async def test_cancel_kills_the_child(app: Conveyor, tmp_path: Path) -> None:
    app.register("hang", isolation_tasks.hang, isolation="process")
    log = tmp_path / "log"
    job = await app.aenqueue("hang", {"log": str(log)})
    async with running_worker(app, concurrency=1) as worker:
        pid = await _pid_in(log)
        await app.acancel(job.id)
        await wait_status(app, job.id, JobStatus.CANCELLED)
        assert not isolation_tasks.alive(pid)
        (attempt,) = await app.aattempts(job.id)
        assert attempt.status_code == 499
        await wait_until(
            lambda: worker.executor.process_pool is not None and len(worker.executor.process_pool.pids) == 1
        )  # replaced


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("exit", "exited with status 3"),
        ("sigkill", "killed by signal 9 (SIGKILL"),
        ("segv", "killed by signal 11 (SIGSEGV"),
    ],
)
async def test_a_child_that_dies_is_a_failed_try_with_the_reason_and_the_pool_goes_on(
    app: Conveyor, how: str, expected: str
) -> None:
    app.register("crash", isolation_tasks.crash, isolation="process")
    dies = await app.aenqueue("crash", {"how": how}, max_attempts=1)
    async with running_worker(app, concurrency=1) as worker:
        failed = await wait_status(app, dies.id, JobStatus.FAILED, timeout=20)
        (attempt,) = await app.aattempts(dies.id)
        assert attempt.status_code == 500
        assert expected in (attempt.error or ""), attempt.error
        assert "crash" in (failed.last_error or "")
        after = [await app.aenqueue("crash", {"how": "ok"}) for _ in range(3)]
        pids = {(await wait_status(app, j.id, JobStatus.COMPLETED, timeout=20)).result for j in after}
        assert worker.executor.process_pool is not None and worker.executor.process_pool.started_children == 2
        assert len(pids) == 1  # the replacement child serves them all


async def test_an_exception_in_the_child_keeps_its_type_text_and_traceback(app: Conveyor) -> None:
    app.register("crash", isolation_tasks.crash, isolation="process")
    job = await app.aenqueue("crash", {"how": "raise"}, max_attempts=1)
    async with running_worker(app, concurrency=1):
        await wait_status(app, job.id, JobStatus.FAILED, timeout=20)
    (attempt,) = await app.aattempts(job.id)
    assert attempt.error == "ValueError: bad input in the child"
    assert attempt.traceback is not None and "isolation_tasks.py" in attempt.traceback


async def test_graceful_shutdown_tells_the_child_and_hands_the_job_back(app: Conveyor, tmp_path: Path) -> None:
    app.register("until_stopped", isolation_tasks.until_stopped, isolation="process")
    log = tmp_path / "log"
    job = await app.aenqueue("until_stopped", {"log": str(log)})
    async with running_worker(app, concurrency=1, grace_period=20):
        await _pid_in(log)
    back = await app.aget_job(job.id)
    assert back is not None and back.status is JobStatus.PENDING and back.attempts == 0
    assert [line.split()[0] for line in read_lines(log)] == ["start", "stopping"]


async def test_shutdown_past_the_grace_period_kills_the_child(app: Conveyor, tmp_path: Path) -> None:
    app.register("hang", isolation_tasks.hang, isolation="process")
    log = tmp_path / "log"
    job = await app.aenqueue("hang", {"log": str(log)})
    async with running_worker(app, concurrency=1, grace_period=0.3):
        pid = await _pid_in(log)
    assert not isolation_tasks.alive(pid)
    back = await app.aget_job(job.id)
    assert back is not None and back.status is JobStatus.PENDING and back.attempts == 0


async def test_the_worker_default_isolates_sync_tasks_only(app: Conveyor) -> None:
    app.register("crash", isolation_tasks.crash)  # no isolation of its own: the worker's default applies

    @app.task("in_loop")
    async def in_loop(payload: None) -> int:
        import os

        return os.getpid()

    import os

    sync = await app.aenqueue("crash", {"how": "ok"})
    aio = await app.aenqueue("in_loop")
    async with running_worker(app, concurrency=2, isolation="process"):
        child = (await wait_status(app, sync.id, JobStatus.COMPLETED, timeout=20)).result
        here = (await wait_status(app, aio.id, JobStatus.COMPLETED, timeout=20)).result
    assert here == os.getpid() and child != os.getpid()


async def test_run_next_runs_an_isolated_task_in_a_child(app: Conveyor) -> None:
    import os

    app.register("crash", isolation_tasks.crash, isolation="process")
    await app.aenqueue("crash", {"how": "ok"}, namespace="default", user_id="u1")
    result = await app.arun_next("default", "u1")
    assert result.attempt is not None and result.attempt.status_code == 200
    assert result.job is not None and result.job.result != os.getpid()


def test_what_cannot_be_isolated_is_refused_with_a_clear_error() -> None:
    app = Conveyor("memory://")

    async def handler(payload: Any) -> None:
        return None

    with pytest.raises(ValidationError, match="plain"):
        app.register("aio", handler, isolation="process")
    with pytest.raises(ValidationError, match=r"'thread'.*'process'"):
        app.register("odd", isolation_tasks.crash, isolation="fork")
    with pytest.raises(ValidationError, match=r"'thread'.*'process'"):
        Worker(app, isolation="fork")


async def test_a_handler_no_child_can_import_stops_the_worker_with_a_clear_error(app: Conveyor) -> None:
    app.register("local", lambda payload: None, isolation="process")
    worker = Worker(app, install_signal_handlers=False)
    with pytest.raises(ValidationError, match="module-level function"):
        await asyncio.wait_for(worker.run(), 30)
