"""A short fault run on every store that processes can share (the full one is scripts/faultrun.py, docs/faults.md).

A backlog of 1,500 jobs, three `conveyor worker --lease 3` processes, a SIGKILL of a running one every 3-6 s (each
restarted under a new id), and one crash-restart of the store server (PostgreSQL `pg_ctl restart -m immediate`,
Redis kill -9 on its AOF; SQLite's crashes are the kills of the processes writing it). The audit must find nothing
lost, stuck or dead-lettered, no job completed twice, no completion applied to a foreign claim, every worker alive
that was not killed, and every killed worker's jobs running again soon after the kill — well before the backlog
ends, so a rescued job kept its place in the queue instead of going to its back.
"""

from __future__ import annotations

import random

import pytest

from tests.faults.harness import Options, run_store

pytestmark = [pytest.mark.stores("sqlite", "postgresql", "redis"), pytest.mark.slow, pytest.mark.timeout(420)]

LEASE = 3.0
RERUN_BOUND = 3.0  # leases from a kill to the rerun: the target is 1.5, doubled for a busy 2-core machine


async def test_kill_9_and_a_store_crash_lose_nothing_and_apply_nothing_twice(store_kind: str) -> None:
    options = Options(
        jobs=1500,
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
    assert s["kills"] >= 2 and s["killed_jobs"] > 0, f"the run killed too little to test anything: {s}"
    worst = s["kill_to_rerun_leases_max"]
    assert worst <= RERUN_BOUND, f"a killed worker's job ran again only {worst} leases after the kill: {s}"
