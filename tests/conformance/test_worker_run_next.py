"""Worker conformance: GS2 Run (`app.run_next(namespace, user_id)`) executes the user's next job in the caller,
on every store (SPEC §3)."""

from __future__ import annotations

import asyncio

import pytest

from conveyor import AttemptOutcome, Conflict, Conveyor, JobStatus, Namespace
from tests.conformance.worker_support import worker_app

__all__ = ["worker_app"]


async def test_run_executes_oldest_due_job_and_reports_is_last(worker_app: Conveyor) -> None:
    app = worker_app
    await app.aput_namespace(Namespace("game", auto_run=False))

    @app.task("grant")
    async def grant(payload: dict[str, int]) -> dict[str, int]:
        return {"granted": payload["coins"]}

    first = await app.aenqueue("grant", {"coins": 1}, namespace="game", user_id="p1")
    await app.aenqueue("grant", {"coins": 2}, namespace="game", user_id="p1")
    await app.aenqueue("grant", {"coins": 9}, namespace="game", user_id="p2")

    one = await app.arun_next("game", "p1", worker_id="gs2-run")
    assert one.job is not None and one.job.id == first.id
    assert one.job.status is JobStatus.COMPLETED
    assert one.job.result == {"granted": 1}
    assert one.attempt is not None and one.attempt.status_code == 200
    assert one.attempt.result == {"granted": 1}
    assert one.attempt.worker_id == "gs2-run"
    assert one.is_last is False

    two = await app.arun_next("game", "p1")
    assert two.job is not None and two.job.result == {"granted": 2}
    assert two.is_last is True

    empty = await app.arun_next("game", "p1")
    assert (empty.job, empty.attempt, empty.is_last) == (None, None, True)
    assert len(await app.aattempts(first.id)) == 1


async def test_run_records_failures_like_a_worker(worker_app: Conveyor) -> None:
    app = worker_app

    @app.task("boom", max_attempts=2)
    async def boom(payload: None) -> None:
        raise RuntimeError("exploded")

    job = await app.aenqueue("boom", user_id="p1")
    result = await app.arun_next("default", "p1")
    assert result.attempt is not None
    assert (result.attempt.status_code, result.attempt.outcome) == (500, AttemptOutcome.RETRY)
    assert result.job is not None and result.job.status is JobStatus.PENDING
    assert result.job.id == job.id
    assert result.job.run_at > result.attempt.finished_at  # auto_run on: the task's backoff applies
    assert result.is_last is False  # the retry still waits in the user's queue
    waiting = await app.arun_next("default", "p1")
    assert (waiting.job, waiting.is_last) == (None, False)  # nothing due now, yet something remains


async def test_run_retry_stays_at_the_head_due_at_once_in_a_run_namespace(worker_app: Conveyor) -> None:
    """GS2's flow (issue 11 §1): with auto_run off a retryable failure goes back to the head of the user's queue,
    due at once, so a client looping "Run until isLastJob" runs it again and never stops with jobs queued."""
    app = worker_app
    await app.aput_namespace(Namespace("game", auto_run=False))
    calls: list[str] = []

    @app.task("flaky", max_attempts=3)
    async def flaky(payload: str) -> str:
        calls.append(payload)
        if payload == "a" and calls.count("a") < 2:
            raise RuntimeError("try again")
        return payload

    first = await app.aenqueue("flaky", "a", namespace="game", user_id="p1")
    await app.aenqueue("flaky", "b", namespace="game", user_id="p1")
    answers = []
    for _ in range(10):
        answer = await app.arun_next("game", "p1")
        answers.append((answer.job.id if answer.job else None, answer.attempt.status_code if answer.attempt else None))
        if answer.is_last:
            break
    assert answer.is_last is True
    assert calls == ["a", "a", "b"]  # the failed head ran again before the younger job
    assert answers[0] == (first.id, 500) and answers[1] == (first.id, 200)

    # opting into backoff: the retry waits, the queue is not over, and Run finds nothing due meanwhile
    await app.aput_namespace(Namespace("slow", auto_run=False, run_retry_backoff=True))

    @app.task("down", max_attempts=3)
    async def down(payload: None) -> None:
        raise RuntimeError("down")

    await app.aenqueue("down", namespace="slow", user_id="p2")
    failed = await app.arun_next("slow", "p2")
    assert failed.attempt is not None and failed.attempt.outcome is AttemptOutcome.RETRY
    assert failed.is_last is False
    later = await app.arun_next("slow", "p2")
    assert (later.job, later.is_last) == (None, False)


async def test_run_while_another_job_of_the_user_runs_is_a_conflict(worker_app: Conveyor) -> None:
    app = worker_app
    inside = asyncio.Event()
    release = asyncio.Event()

    @app.task("hold")
    async def hold(payload: None) -> str:
        inside.set()
        await release.wait()
        return "held"

    await app.aenqueue("hold", user_id="p1")
    await app.aenqueue("hold", user_id="p1")
    running = asyncio.create_task(app.arun_next("default", "p1"))
    await asyncio.wait_for(inside.wait(), 10)
    with pytest.raises(Conflict) as info:
        await app.arun_next("default", "p1")
    assert info.value.status_code == 409
    release.set()
    first = await running
    assert first.attempt is not None and first.attempt.result == "held"
    assert first.is_last is False


async def test_run_publishes_a_run_event(worker_app: Conveyor) -> None:
    app = worker_app

    @app.task("noop")
    async def noop(payload: None) -> None:
        return None

    sub = app.events.subscribe(lambda e: e.type == "run")
    try:
        job = await app.aenqueue("noop", user_id="p1")
        await app.arun_next("default", "p1")
        event = await asyncio.wait_for(sub.get(), 5)
    finally:
        sub.close()
    assert event.job_id == job.id
    assert event.attempt is not None and event.attempt.status_code == 200
    assert event.user_id == "p1"
