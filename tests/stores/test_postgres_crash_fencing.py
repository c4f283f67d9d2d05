"""A crash of PostgreSQL under load with `fast_worker_commits` on: no completion is ever applied to a foreign claim.

With synchronous_commit off for the workers' own commits (the default), `pg_ctl restart -m immediate` loses the last
claims, heartbeats and finishes. A job whose claim was lost goes back to pending with its old try number and is
claimed again under the *same* try number; the worker that held the lost claim may still be running it. Before
fencing tokens, that worker's late completion was applied to the new claim (issue 9, item 1). Now every claim draws a
random token, and this test checks, job by job, that the result the store applied is the result of the run that held
the claim it is recorded under.

Three worker processes (tests/conformance/worker_tasks.py, task `fenced`) append `job token pid try` to a side file
when they start a job and return (token, pid, try); a private throwaway cluster (the harness of
test_postgres_restart.py) is crash-restarted once a third of the jobs are done.
"""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

from tests.conformance.worker_support import read_lines, spawn_worker, stop_process
from tests.stores.test_postgres_restart import Cluster, _until_available, cluster, pytestmark

from conveyor import Conveyor
from conveyor.model import AttemptOutcome, JobFilter, JobStatus

__all__ = ["cluster", "pytestmark"]

TOTAL = 1500
WORKERS = 3


async def test_a_crash_never_applies_a_completion_to_a_foreign_claim(cluster: Cluster, tmp_path: Path) -> None:
    url = f"{cluster.url}?schema=cv_crash_fencing"
    log = tmp_path / "runs.log"
    app = Conveyor(url, timeout=2.0)
    await app.aopen()
    procs = []
    try:
        await app.aenqueue_many([{"task": "fenced", "payload": {"log": str(log), "sleep": 0.02}}] * TOTAL)
        for i in range(WORKERS):
            ready = tmp_path / f"ready-{i}"
            procs.append(
                spawn_worker(url, "--concurrency", "10", "--lease", "3", "--grace", "5", "--ready", str(ready))
            )
        deadline = time.monotonic() + 60
        while len(read_lines(log)) < TOTAL // 3:
            assert time.monotonic() < deadline, "the workers did not get going"
            await asyncio.sleep(0.02)
        await asyncio.to_thread(cluster.crash_restart)  # mid-load: claims and finishes in flight are lost

        deadline = time.monotonic() + 180
        while True:
            stats = await _until_available(app.astats)
            if stats.completed >= TOTAL:
                break
            assert time.monotonic() < deadline, f"not every job completed: {stats}"
            await asyncio.sleep(0.25)
        assert (stats.pending, stats.processing, stats.failed) == (0, 0, 0), stats
    finally:
        for proc in procs:
            stop_process(proc)

    try:
        runs = collections.defaultdict(set)  # job id -> {(token, pid, try)} of every run that started
        for line in read_lines(log):
            job_id, token, pid, try_number = line.split()
            runs[job_id].add((token, int(pid), int(try_number)))
        jobs = (await app.alist_jobs(JobFilter(), limit=TOTAL + 10)).items
        assert len(jobs) == TOTAL
        repeated_tries = 0
        for job in jobs:
            assert job.status is JobStatus.COMPLETED, job
            records = await app.aattempts(job.id)
            (done,) = [r for r in records if r.outcome is AttemptOutcome.COMPLETED]
            # The applied result was produced by the run that held the very claim it is recorded under.
            assert job.result == done.result, (job.id, job.result, done)
            assert done.result["token"] == done.lease_token, (job.id, done)
            assert (done.lease_token, done.result["pid"], done.try_number) in runs[job.id], (job.id, done)
            # Every record belongs to a claim of its own: a run's record is never merged into another's.
            tokens = [r.lease_token for r in records]
            assert len(tokens) == len(set(tokens)), records
            for r in records:
                if r.outcome is not AttemptOutcome.COMPLETED:
                    assert r.outcome is AttemptOutcome.LOST, r
            tries = collections.Counter(t for _, _, t in runs[job.id])
            repeated_tries += any(n > 1 for n in tries.values())
        # Not asserted (it depends on where the crash falls), but reported: how many jobs ran twice under one try
        # number, i.e. how often the situation that used to apply a foreign completion actually arose.
        print(f"jobs run twice under one try number after the crash: {repeated_tries}")
    finally:
        await app.aclose()
