"""Several worker processes on one SQLite file: every job is claimed exactly once, and concurrent first opens of a
fresh file migrate it once. Each child is a fresh interpreter running a small script against the same URL."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from pathlib import Path

import pytest
from tests.backends.sqlite import cleanup, fresh_url

from conveyor.model import JobStatus, NewJob
from conveyor.store.sqlite import SQLiteStore

pytestmark = pytest.mark.slow

CLAIMER = r"""
import asyncio, json, sys
from datetime import timedelta
from conveyor.model import Finish, JobStatus
from conveyor.store.sqlite import SQLiteStore

async def main(url, name):
    store = SQLiteStore(url)
    await store.open()  # every child migrates: only one may apply the steps
    claimed = []
    empty = 0
    while empty < 3:
        jobs = await store.claim(name, ["default"], 10, timedelta(seconds=60))
        if not jobs:
            empty += 1
            await asyncio.sleep(0.05)
            continue
        empty = 0
        claimed.extend(j.id for j in jobs)
        assert all(await store.finish([Finish(j.lease, JobStatus.COMPLETED) for j in jobs]))
    await store.close()
    print(json.dumps(claimed))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def _run_children(url: str, count: int) -> list[list[str]]:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLAIMER, url, f"w{i}", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        for i in range(count)
    ]
    outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 110)
    results = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    return results


async def test_four_processes_claim_every_job_exactly_once(tmp_path: Path) -> None:
    url = fresh_url(tmp_path)
    try:
        store = SQLiteStore(url)
        await store.open()
        jobs = await store.enqueue(
            [NewJob.build("t", {"n": i}, user_id=f"u{i % 7}" if i % 3 == 0 else None) for i in range(2000)]
        )
        results = await _run_children(url, 4)
        counts = Counter(job_id for ids in results for job_id in ids)
        assert set(counts) == {j.id for j in jobs}
        assert max(counts.values()) == 1
        stats = await store.stats()
        assert stats.completed == 2000 and stats.pending == 0 and stats.processing == 0
        await store.close()
    finally:
        await cleanup(url)


async def test_processes_opening_a_fresh_file_at_once(tmp_path: Path) -> None:
    url = fresh_url(tmp_path)
    try:
        results = await _run_children(url, 4)  # each opens (and migrates) the empty file, finds nothing
        assert results == [[], [], [], []]
        store = SQLiteStore(url)
        assert await store.migrate() == []
        (job,) = await store.enqueue([NewJob.build("t")])
        got = await store.get_job(job.id)
        assert got is not None and got.status is JobStatus.PENDING
        await store.close()
    finally:
        await cleanup(url)
