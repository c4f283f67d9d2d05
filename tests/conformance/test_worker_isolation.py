"""Worker conformance: hard timeouts (process isolation) and thread overruns (issue 9, item 4), on every store.

* A process-isolated handler that hangs is killed at its timeout; the retry runs, and the first run is provably
  dead by then (the retry checks its pid).
* A thread handler that overruns its timeout is never run twice at once: its lease is kept and the retry starts
  only after the thread ends; meanwhile the job shows as "timed out, still running".
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from conveyor import Conveyor, JobStatus
from tests import isolation_tasks
from tests.conformance.worker_support import read_lines, running_worker, wait_status, wait_until, worker_app

__all__ = ["worker_app"]


async def test_a_hung_isolated_handler_is_killed_at_its_timeout_and_retried(
    worker_app: Conveyor, tmp_path: Path
) -> None:
    app = worker_app
    app.register("hang_first_try", isolation_tasks.hang_first_try, timeout=1.0, isolation="process")
    log = tmp_path / "log"
    job = await app.aenqueue("hang_first_try", {"log": str(log)}, max_attempts=2)
    async with running_worker(app, concurrency=1):
        done = await wait_status(app, job.id, JobStatus.COMPLETED, timeout=30)
    first, second = await app.aattempts(job.id)
    assert (first.status_code, second.status_code) == (504, 200)
    assert "exceeded its timeout of 1 s" in (first.error or "")
    assert done.result["earlier_alive"] == [False], "the timed-out run was still alive when its retry started"
    pids = [int(line.split()[2]) for line in read_lines(log)]
    assert len(pids) == 2 and pids[0] != pids[1] and not isolation_tasks.alive(pids[0])
    assert 0.9 < first.duration < 3.0, first.duration  # killed at its timeout, not later


async def test_an_overrunning_thread_keeps_its_lease_and_never_runs_beside_its_retry(
    worker_app: Conveyor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = worker_app
    app.register("overrun", isolation_tasks.overrun, timeout=0.5)
    log = tmp_path / "log"
    job = await app.aenqueue("overrun", {"log": str(log), "seconds": 2.0}, max_attempts=2)
    caplog.set_level(logging.WARNING, logger="conveyor.worker")
    async with running_worker(app, concurrency=2):

        async def shown_as_overrunning() -> bool:
            seen = await app.aget_job(job.id)
            return seen is not None and seen.overrunning

        await wait_until(shown_as_overrunning, timeout=10)
        seen = await app.aget_job(job.id)
        assert seen is not None and seen.status is JobStatus.PROCESSING and seen.attempts == 1
        done = await wait_status(app, job.id, JobStatus.COMPLETED, timeout=30)
    first, second = await app.aattempts(job.id)
    assert (first.status_code, second.status_code) == (504, 200)
    assert "its thread ran" in (first.error or "") and "retry waited" in (first.error or "")
    events = [line.split() for line in read_lines(log)]
    assert [(e[0], e[1]) for e in events] == [("start", "1"), ("end", "1"), ("start", "2"), ("end", "2")]
    assert float(events[2][2]) >= float(events[1][2]), "the retry started while the first try's thread ran"
    assert not done.overrunning
    assert any("still running" in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
