"""Helpers for the worker-level conformance tests (tests/conformance/test_worker_*.py).

Workers run in the test's own event loop (`running_worker`) or as subprocesses (`spawn_worker`, which starts
`python -m tests.conformance.worker_tasks`). Conditions that need time are awaited with a deadline (`wait_until`),
never with fixed sleeps, so the tests stay robust on a busy 2-core machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from conveyor import Backoff, Conveyor
from conveyor.model import Job, JobStatus
from conveyor.worker import Worker

REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable


async def wait_until(
    condition: Callable[[], Awaitable[Any]] | Callable[[], Any], timeout: float = 10.0, interval: float = 0.01
) -> Any:
    """Poll `condition` (sync or async) until it returns something truthy; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def wait_status(app: Conveyor, job_id: str, *statuses: JobStatus, timeout: float = 10.0) -> Job:
    async def check() -> Job | None:
        job = await app.aget_job(job_id)
        return job if job is not None and job.status in statuses else None

    try:
        result: Job = await wait_until(check, timeout)
    except AssertionError:
        job = await app.aget_job(job_id)
        raise AssertionError(
            f"job {job_id} did not reach {[s.value for s in statuses]} within {timeout}s; it is "
            f"{job.status.value if job else 'gone'} (last_error={job.last_error if job else None!r})"
        ) from None
    return result


@contextlib.asynccontextmanager
async def running_worker(app: Conveyor, **options: Any) -> AsyncIterator[Worker]:
    """Run a Worker in this loop for the block; stop it gracefully afterwards."""
    options.setdefault("install_signal_handlers", False)
    options.setdefault("poll_interval", 0.2)
    worker = Worker(app, **options)
    task = asyncio.create_task(worker.run())
    started = await worker.wait_started(timeout=20)
    if not started:
        if task.done():
            task.result()
        raise AssertionError("worker did not start")
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)


def spawn_worker(
    url: str, *args: str, env: dict[str, str] | None = None, stdout: Any = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    """Start `python -m tests.conformance.worker_tasks URL ARGS…` (a worker with the test tasks) in the repo."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "src"), full_env.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [PYTHON, "-m", "tests.conformance.worker_tasks", url, *args],
        cwd=REPO,
        env=full_env,
        stdout=stdout,
        stderr=subprocess.PIPE,
    )


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    """Signal a worker process and wait for it; kill it if it does not exit in time. Returns its exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def read_lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line]
    except FileNotFoundError:
        return []


FAST = Backoff(base=0.01, factor=2.0, jitter=0.0, max_delay=0.05)
"""A backoff short enough that retry tests finish in milliseconds."""


@pytest.fixture
async def worker_app(store_url: str) -> AsyncIterator[Conveyor]:
    """An opened app on the test's fresh store (lease 5 s so heartbeats run every ~0.8 s)."""
    app = Conveyor(store_url, lease=timedelta(seconds=5))
    await app.aopen()
    try:
        yield app
    finally:
        await app.aclose()
