"""A short fault run on every store that processes can share (the full one is scripts/faultrun.py, docs/faults.md).

A backlog of 2,000 jobs, three `conveyor worker --lease 3` processes, a SIGKILL of a running one every 3-6 s (each
restarted under a new id), and one crash-restart of the store server (PostgreSQL `pg_ctl restart -m immediate`,
Redis kill -9 on its AOF; SQLite's crashes are the kills of the processes writing it). The audit must find nothing
lost, stuck or dead-lettered, no job completed twice, no completion applied to a foreign claim, every worker alive
that was not killed, and every killed worker's jobs running again before the jobs behind them in the queue (a rescued
job keeps its place instead of going to the back of the backlog).
"""

from __future__ import annotations

import random

import pytest

from tests.faults.harness import Options, run_store

pytestmark = [pytest.mark.stores("sqlite", "postgresql", "redis"), pytest.mark.slow, pytest.mark.timeout(420)]

LEASE = 3.0


async def test_kill_9_and_a_store_crash_lose_nothing_and_apply_nothing_twice(store_kind: str) -> None:
    options = Options(
        jobs=2000,
        workers=3,
        concurrency=10,
        lease=LEASE,
        kill_every=(3.0, 6.0),
        job_seconds=(0.1, 0.3),
        crash_at=0.4,
        pg_fsync=False,
        timeout=240.0,
    )
    result = await run_store(store_kind, options, random.Random(f"faultrun-{store_kind}"))
    s, examples = result["summary"], result["examples"]
    print(f"fault run ({store_kind}): {s}")
    assert s["drained"], f"the backlog did not drain: {s} {examples}"
    for key in ("lost", "stuck", "failed", "duplicate_completions", "foreign_completions", "merged_attempts",
                "completed_without_run", "not_rerun", "workers_exited_unasked"):  # fmt: skip
        assert s[key] == 0, f"{key}: {examples.get(key)}\nsummary: {s}"
    assert s["completed"] == s["jobs"]
    assert s["kills"] >= 1 and s["killed_jobs"] > 0, f"the run killed nothing: {s}"
    # A rescued job keeps its place: jobs behind it in claim order do not get ahead of its rerun, beyond the claims
    # already under way when it was given back (at most a batch per worker slot, generously). Sent to the back, it
    # would be overtaken by the whole backlog behind it. Counted in jobs, not seconds: a loaded machine slows both.
    assert s["behind_at_rescue_max"] >= 200, f"no job was rescued while a backlog waited behind it: {s}"
    bound = 2 * options.workers * options.concurrency
    assert s["overtaken_max"] <= bound, f"a rescued job was overtaken by {s['overtaken_max']} jobs behind it: {s}"
