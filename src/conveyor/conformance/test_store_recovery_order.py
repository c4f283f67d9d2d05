"""Store conformance: a job given back keeps its place in the claim order (store/base.py "Rescue").

A rescued job (its worker died), a job handed back at a graceful shutdown and a job made due with `run_now` keep
their (priority, run_at, id), so they run again as soon as a claim reaches their place — not behind every job that
was enqueued while they ran. With a backlog the size of a real one this is the difference between "runs again within
one lease plus one claim" and "runs again after the whole backlog" (12–74 s in the fault-injection run of issue 9).
"""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.conformance.helpers import (
    ago,
    claim,
    claim_one,
    enqueue_many,
    enqueue_one,
    later,
    same_instant,
)
from conveyor.model import Finish, Job, JobStatus
from conveyor.store import Store

BACKLOG = 300


async def _running_job_then_a_backlog(store: Store, **options: Any) -> tuple[str, Job]:
    """The oldest job is claimed; then a backlog arrives behind it. Returns (the claimed job's id, the claim)."""
    first = await enqueue_one(store, "task", "first", run_at=ago(5), **options)
    running = await claim_one(store, worker_id="dies")
    assert running.id == first.id
    await enqueue_many(store, BACKLOG)
    return running.id, running


@pytest.mark.parametrize("how", ["rescue", "hand_back"])
async def test_a_job_given_back_runs_before_the_backlog_that_arrived_meanwhile(store: Store, how: str) -> None:
    job_id, running = await _running_job_then_a_backlog(store)
    before = await store.get_job(job_id)
    assert before is not None
    if how == "rescue":
        (back,) = await store.rescue(now=later(600))
    else:
        assert await store.finish([Finish(running.lease, JobStatus.PENDING, release=True)]) == [True]
        stored = await store.get_job(job_id)
        assert stored is not None
        back = stored
    assert back is not None and back.status is JobStatus.PENDING
    assert same_instant(back.run_at, before.run_at)  # its place: (priority, run_at, id) unchanged
    again = await claim_one(store, worker_id="survivor")
    assert again.id == job_id


async def test_a_rescued_job_keeps_its_place_among_priorities(store: Store) -> None:
    """Keeping its place means its own (priority, run_at, id): higher-priority work still goes first."""
    await enqueue_one(store, "task", "low", priority=5, run_at=ago(10))
    running = await claim_one(store)
    urgent = await enqueue_one(store, "task", "urgent", priority=-5)
    later_low = await enqueue_one(store, "task", "later low", priority=5)
    await store.rescue(now=later(600))
    order = [j.id for j in await claim(store, limit=3)]
    assert order == [urgent.id, running.id, later_low.id]


async def test_a_rescued_lane_head_runs_before_the_backlog(store: Store) -> None:
    job_id, _ = await _running_job_then_a_backlog(store, user_id="u1")
    await enqueue_one(store, "task", "next in lane", user_id="u1")
    await store.rescue(now=later(600))
    assert (await claim_one(store)).id == job_id


async def test_run_now_on_a_due_job_keeps_its_place(store: Store) -> None:
    """`run_now` makes a scheduled job due now; a job that is already due must not move back behind later ones."""
    due = await enqueue_one(store, "task", "due", run_at=ago(60))
    await enqueue_many(store, 20)
    again = await store.run_now(due.id)
    assert same_instant(again.run_at, due.run_at)
    assert (await claim(store, limit=1))[0].id == due.id
    scheduled = await enqueue_one(store, "task", "scheduled", run_at=later(3600))
    moved = await store.run_now(scheduled.id)
    assert moved.run_at < later(60)
