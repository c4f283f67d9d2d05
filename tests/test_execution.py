"""conveyor.execution: outcome classification of one claimed job (the `Finish` it produces), and GS2 Run details.

These call `execute` directly on jobs claimed from an in-memory store, so every rule of docs/design.md's outcome
table is checked without a worker in the way. End-to-end checks on every store are in
tests/conformance/test_worker_*.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from conveyor import AttemptOutcome, Backoff, Conveyor, Fail, JobStatus, Retry
from conveyor.context import JobCancelled, JobContext
from conveyor.execution import REASON_CANCEL, REASON_SHUTDOWN, execute, run_user_job
from conveyor.model import Finish, Job

NO_JITTER = Backoff(base=10, factor=2, jitter=0)


@pytest.fixture
async def app() -> AsyncIterator[Conveyor]:
    import uuid

    from conveyor.store.memory import MemoryStore

    url = f"memory://exec-{uuid.uuid4().hex}"
    conveyor = Conveyor(url, lease=timedelta(seconds=30))
    await conveyor.aopen()
    try:
        yield conveyor
    finally:
        await conveyor.aclose()
        MemoryStore.forget(url)


async def claim_one(app: Conveyor, task: str, payload: Any = None, **options: Any) -> Job:
    await app.aenqueue(task, payload, **options)
    (job,) = await app.store.claim("test-worker", [options.get("queue", "default")], 1, app.lease)
    return job


async def run(app: Conveyor, job: Job, ctx: JobContext | None = None) -> Finish:
    return (await execute(app, job, ctx or JobContext(job, app, "test-worker"))).finish


def raiser(exc: BaseException) -> Any:
    async def handler(payload: Any) -> None:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("exc", "code", "outcome", "status"),
    [
        (ValueError("x"), 500, AttemptOutcome.RETRY, JobStatus.PENDING),
        (Retry(), 503, AttemptOutcome.RETRY, JobStatus.PENDING),
        (Retry(status_code=429), 429, AttemptOutcome.RETRY, JobStatus.PENDING),
        (Fail("no"), 400, AttemptOutcome.FAILED, JobStatus.FAILED),
        (Fail("gone", status_code=404), 404, AttemptOutcome.FAILED, JobStatus.FAILED),
        (Fail("pay", status_code=402), 402, AttemptOutcome.RETRY, JobStatus.PENDING),
        (Fail("conflict", status_code=409), 409, AttemptOutcome.RETRY, JobStatus.PENDING),
        (Fail("bad gw", status_code=502), 502, AttemptOutcome.RETRY, JobStatus.PENDING),
        (Fail("weird", status_code=5000), 500, AttemptOutcome.RETRY, JobStatus.PENDING),
        (TimeoutError("handler's own timeout"), 500, AttemptOutcome.RETRY, JobStatus.PENDING),
    ],
)
async def test_first_attempt_classification(
    app: Conveyor, exc: BaseException, code: int, outcome: AttemptOutcome, status: JobStatus
) -> None:
    app.register("t", raiser(exc), backoff=NO_JITTER)
    job = await claim_one(app, "t")
    finish = await run(app, job)
    assert finish.attempt is not None
    assert (finish.attempt.status_code, finish.attempt.outcome, finish.status) == (code, outcome, status)
    assert finish.lease == job.lease
    assert finish.error
    if status is JobStatus.PENDING:
        assert finish.run_at is not None
    else:
        assert finish.run_at is None


@pytest.mark.parametrize("exc", [ValueError("x"), Retry(0), Fail("bad gw", status_code=502)])
async def test_retryable_failures_on_the_last_attempt_dead_letter(app: Conveyor, exc: BaseException) -> None:
    app.register("t", raiser(exc))
    job = await claim_one(app, "t", max_attempts=1)
    finish = await run(app, job)
    assert finish.status is JobStatus.FAILED
    assert finish.attempt is not None and finish.attempt.outcome is AttemptOutcome.FAILED
    assert finish.run_at is None


async def test_backoff_and_retry_delay(app: Conveyor) -> None:
    app.register("t", raiser(ValueError("x")), backoff=NO_JITTER)
    app.register("r", raiser(Retry(7.5)))
    job = await claim_one(app, "t")
    finish = await run(app, job)
    assert finish.attempt is not None and finish.run_at is not None
    assert abs((finish.run_at - finish.attempt.finished_at).total_seconds() - 10) < 0.01  # base × 2^0
    job = await claim_one(app, "r")
    finish = await run(app, job)
    assert finish.attempt is not None and finish.run_at is not None
    assert abs((finish.run_at - finish.attempt.finished_at).total_seconds() - 7.5) < 0.01


async def test_success_records_result_traceback_free(app: Conveyor) -> None:
    @app.task("ok")
    def ok(payload: dict[str, int], ctx: JobContext) -> dict[str, Any]:
        return {"double": payload["n"] * 2, "job": ctx.job_id, "try": ctx.try_number, "last": ctx.is_last_attempt}

    job = await claim_one(app, "ok", {"n": 21}, max_attempts=1)
    finish = await run(app, job)
    assert finish.status is JobStatus.COMPLETED
    assert finish.result == {"double": 42, "job": job.id, "try": 1, "last": True}
    assert finish.attempt is not None
    assert finish.attempt.result == finish.result
    assert finish.attempt.worker_id == "test-worker"
    assert finish.error is None and finish.attempt.traceback is None


async def test_error_text_and_traceback(app: Conveyor) -> None:
    @app.task("bad")
    async def bad(payload: None) -> None:
        {}["missing"]

    finish = await run(app, await claim_one(app, "bad"))
    assert finish.attempt is not None
    assert finish.error == "KeyError: 'missing'"
    assert finish.attempt.traceback is not None and "bad" in finish.attempt.traceback


async def test_oversized_result_is_an_error(app: Conveyor) -> None:
    @app.task("big", max_attempts=1)
    async def big(payload: None) -> str:
        return "x" * (5 * 1024 * 1024 + 10)

    finish = await run(app, await claim_one(app, "big"))
    assert finish.status is JobStatus.FAILED
    assert finish.attempt is not None and finish.attempt.status_code == 500
    assert "limit" in (finish.error or "")


async def test_unknown_task(app: Conveyor) -> None:
    finish = await run(app, await claim_one(app, "who"))
    assert finish.attempt is not None and finish.attempt.status_code == 500
    assert finish.status is JobStatus.PENDING
    assert "Register it with @app.task('who')" in (finish.error or "")


async def test_timeout_in_execute(app: Conveyor) -> None:
    @app.task("slow", timeout=0.05)
    async def slow(payload: None) -> None:
        await asyncio.sleep(10)

    finish = await run(app, await claim_one(app, "slow"))
    assert finish.attempt is not None
    assert (finish.attempt.status_code, finish.attempt.outcome) == (504, AttemptOutcome.TIMEOUT)
    assert "exceeded its timeout of 0.05 s" in (finish.error or "")


async def test_cancel_and_shutdown_of_an_async_handler(app: Conveyor) -> None:
    @app.task("hang")
    async def hang(payload: None) -> None:
        await asyncio.sleep(10)

    for reason, expected in ((REASON_CANCEL, JobStatus.CANCELLED), (REASON_SHUTDOWN, JobStatus.PENDING)):
        job = await claim_one(app, "hang")
        ctx = JobContext(job, app, "w")
        task = asyncio.create_task(execute(app, job, ctx))
        await asyncio.sleep(0.01)
        ctx.request_cancel(reason)
        task.cancel()
        finish = (await task).finish
        assert finish.status is expected
        if reason == REASON_SHUTDOWN:
            assert finish.release and finish.attempt is None
        else:
            assert finish.attempt is not None and finish.attempt.status_code == 499


async def test_sync_handler_that_stops_on_the_flag_is_cancelled(app: Conveyor) -> None:
    @app.task("polite")
    def polite(payload: None, ctx: JobContext) -> str:
        while True:
            ctx.raise_if_cancelled()
            if ctx.wait_cancelled_sync(0.01):
                return "returned after the flag"

    @app.task("raiser")
    def raiser_(payload: None, ctx: JobContext) -> None:
        ctx.wait_cancelled_sync(10)
        ctx.raise_if_cancelled()

    for task in ("polite", "raiser"):
        job = await claim_one(app, task)
        ctx = JobContext(job, app, "w")
        running = asyncio.create_task(execute(app, job, ctx))
        await asyncio.sleep(0.05)
        ctx.request_cancel(REASON_CANCEL)
        finish = (await running).finish
        assert finish.status is JobStatus.CANCELLED, task
        assert finish.attempt is not None and finish.attempt.status_code == 499


def test_context_is_cheap_and_lazy() -> None:
    from conveyor.model import NewJob

    job = NewJob.build("t").to_job()
    ctx = JobContext(job)
    assert not ctx.cancelled and ctx.cancel_reason is None
    assert ctx._thread_event is None and ctx._async_event is None and ctx._logger is None
    assert ctx.logger.extra == {"job_id": job.id, "task": "t", "try_number": 0}  # type: ignore[comparison-overlap]
    assert ctx.request_cancel("because")
    assert not ctx.request_cancel("again")
    assert ctx.cancelled and ctx.wait_cancelled_sync(0)
    with pytest.raises(JobCancelled, match="because"):
        ctx.raise_if_cancelled()


async def test_async_cancel_event(app: Conveyor) -> None:
    job = await claim_one(app, "t")
    ctx = JobContext(job, app)
    waiter = asyncio.create_task(ctx.wait_cancelled())
    await asyncio.sleep(0)
    ctx.request_cancel("stop")
    assert await asyncio.wait_for(waiter, 1) == "stop"


async def test_run_keeps_the_lease_of_a_long_handler(app: Conveyor) -> None:
    app.lease = timedelta(seconds=0.3)

    @app.task("long")
    async def long(payload: None) -> str:
        for _ in range(8):
            await asyncio.sleep(0.1)
            await app.store.rescue()  # would give the job back if its lease were not being extended
        return "done"

    await app.aenqueue("long", user_id="u")
    result = await run_user_job(app, "default", "u")
    assert result.attempt is not None and result.attempt.status_code == 200
    assert result.job is not None and result.job.status is JobStatus.COMPLETED
    assert [a.status_code for a in await app.aattempts(result.job.id)] == [200]
