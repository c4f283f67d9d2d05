"""Exactly one job per cron occurrence under four real scheduler processes, with their clocks apart and a clock
jump (issue 13 item 5). No election: every process schedules, so only the store's insert (a job id derived from
(schedule, occurrence), refused when taken) keeps each occurrence to one job. Runs on the stores processes share."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conveyor import Conveyor
from conveyor.cron import Schedule, occurrence_id
from tests.conformance.worker_support import PYTHON, REPO

pytestmark = [pytest.mark.stores("sqlite", "postgresql", "redis"), pytest.mark.slow]

PROCESSES = 4


@pytest.fixture
async def app(store_url: str) -> AsyncIterator[Conveyor]:
    conveyor = Conveyor(store_url)
    await conveyor.aopen()
    try:
        yield conveyor
    finally:
        await conveyor.aclose()


def expected(spec: str, timezone: str, after: datetime, until: datetime) -> list[datetime]:
    schedule, found, at = Schedule(spec, timezone), [], after
    while (at := schedule.next_after(at)) <= until:
        found.append(at)
    return found


async def test_four_scheduler_processes_with_a_clock_jump_create_one_job_per_occurrence(
    app: Conveyor, store_url: str, tmp_path: Path
) -> None:
    # a runtime schedule too (read from the store by every process), made before the fake clocks start
    start = (datetime.now(UTC) + timedelta(minutes=1)).replace(second=0, microsecond=0)
    pulse = await app.schedules.acreate("pulse", "@every 60s", "pulse", {"from": "runtime"}, backfill="all")
    made = pulse.schedule.updated_at
    assert made is not None
    go = tmp_path / "go"
    outs = [tmp_path / f"out-{i}.json" for i in range(PROCESSES)]
    children = [
        await asyncio.create_subprocess_exec(
            PYTHON,
            "-m",
            "tests.conformance.cron_scheduler_child",
            store_url,
            start.isoformat(),
            str(i * 7),  # clocks 0, 7, 14, 21 s apart
            str(go),
            str(outs[i]),
            cwd=REPO,
            stderr=asyncio.subprocess.PIPE,
        )
        for i in range(PROCESSES)
    ]
    await asyncio.sleep(1.0)  # let them import and open
    go.touch()
    done = await asyncio.wait_for(asyncio.gather(*(c.communicate() for c in children)), timeout=180)
    codes = [c.returncode for c in children]
    assert codes == [0] * PROCESSES, [err.decode()[-2000:] for _, err in done]
    reports = [json.loads(o.read_text()) for o in outs]

    # Together the processes handled every occurrence up to the fastest clock's last tick: start + 21 s + 10 min +
    # 1 h jump + 580 s. The code schedule counts from the first scheduler's start; the runtime one from when it
    # was made, the minute before the fake clocks start being back-filled ("all").
    end = start + timedelta(seconds=21 + 600 + 3600 + 580)
    want = {
        "sync": expected("*/5 * * * *", "Europe/Berlin", start, end),
        "pulse": expected("@every 60s", "UTC", made, end),
    }
    jobs = (await app.alist_jobs(limit=1000)).items
    by_task: dict[str, set[str]] = {}
    for job in jobs:
        by_task.setdefault(job.task, set()).add(job.id)
    for name, occurrences in want.items():
        ids = {occurrence_id(name, at) for at in occurrences}
        got = by_task.get(name, set())
        assert got == ids, f"{name}: {len(got - ids)} jobs too many, {len(ids - got)} missing"
        runs = await app.store.schedule_runs(name, limit=200)
        assert len({r.occurrence for r in runs}) == len(runs)
    assert len(jobs) == sum(len(v) for v in by_task.values())
    assert sum(r["enqueued"] for r in reports) == len(jobs)
    assert sum(r["duplicates"] for r in reports) > 0  # the processes did race for occurrences (and lost)
