"""Run ONE claimed job and decide what happens next: handler call, timeout, outcome classification → `Finish`.

The worker owns policy (docs/design.md): the store only applies the `Finish` computed here. Classification, SPEC §2.3:

- returns `v` → attempt 200 COMPLETED, job `completed` with result `v`;
- raises `Retry(delay)` → attempt with its status code (503 by default) RETRY, job `pending` at now + delay (the
  task's backoff when delay is None); it counts as an attempt;
- raises or returns `Snooze(seconds)` → attempt 202 SNOOZED, job `pending` at now + seconds; it does not count as
  an attempt (max_attempts), try_number moves on;
- raises `Fail(status_code=c)` → c not retryable: attempt c FAILED, job `failed` at once; c retryable
  (402, 409, 500, 502, 503, 504): an ordinary retryable failure;
- raises anything else → 500 with error text and traceback, retry with backoff;
- exceeds the task timeout → 504 TIMEOUT, retry;
- stopped on a cancel request → 499 CANCELLED, job `cancelled`;
- stopped by a worker shutdown → `Finish(release=True)` (no attempt recorded, attempt not counted);
- a retryable failure on the last allowed attempt → attempt outcome FAILED, job `failed` (dead letter).

This module is on the hot path of every job, so the success path of an async handler does one `asyncio.timeout`
and no extra task, thread hop or store call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import socket
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from conveyor.backoff import DEFAULT_BACKOFF
from conveyor.context import JobCancelled, JobContext
from conveyor.errors import Fail, Retry, Snooze, StoreUnavailable, TaskNotRegistered
from conveyor.isolation import ChildDied, ProcessPool, RemoteError
from conveyor.logsafe import printable
from conveyor.model import (
    JSON,
    LOST_STATUS_CODE,
    MAX_RESULT_BYTES,
    RETRYABLE_STATUS_CODES,
    Attempt,
    AttemptOutcome,
    Finish,
    Job,
    JobStatus,
    encode_result,
    utcnow,
)
from conveyor.runtime import Runtime, SupportsRuntime
from conveyor.tasks import PROCESS, RunResult, TaskSpec

log = logging.getLogger("conveyor.worker")

STATUS_OK = 200
STATUS_ERROR = 500
STATUS_TIMEOUT = 504
STATUS_CANCELLED = 499
STATUS_SNOOZED = 202  # accepted, to be run later
MAX_STATUS_CODE = 1000

# Why a running job was told to stop (JobContext.cancel_reason).
REASON_CANCEL = "cancel requested"
REASON_TIMEOUT = "timeout"
REASON_SHUTDOWN = "worker shutting down"
REASON_LOST = "lease lost"

_SIMPLE_RESULTS = (str, int, float, bool, type(None))
_LONG_STRING = MAX_RESULT_BYTES // 6  # a shorter str cannot exceed the cap even with every char escaped


class Execution(NamedTuple):
    """What running a job produced. `committed` is True when the Finish was already applied inside the handler's
    own transaction (transactional tasks), so the caller must not send it again; `applied` says whether it landed."""

    finish: Finish
    committed: bool = False
    applied: bool = True


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# ---- running a handler ----------------------------------------------------------------------------------------


async def execute(
    app: SupportsRuntime,
    job: Job,
    ctx: JobContext,
    executor: Executor | None = None,
    spec: TaskSpec | None = None,
    *,
    enforce_timeout: bool = True,
    pool: ProcessPool | None = None,
) -> Execution:
    """Run `job`'s handler and classify the outcome. Never raises for a handler's error (that becomes the
    Finish); a CancelledError caused by the caller's own cancellation is classified from `ctx.cancel_reason`.

    `enforce_timeout=False` is for callers that police deadlines themselves (the worker's watchdog cancels
    overdue jobs with reason "timeout"), which saves arming a timer per job. `pool`: run the (sync) handler in one
    of its child processes (process isolation); cancelling this call then kills the child."""
    rt = app.runtime
    if spec is None:
        spec = rt.tasks.get(job.task)
    started = utcnow()
    if spec is None:
        return Execution(_failure(job, started, ctx.worker_id, TaskNotRegistered(job.task), STATUS_ERROR, None))
    if spec.transactional:
        return await _execute_transactional(rt, job, ctx, executor, spec, started, enforce_timeout)
    try:
        if enforce_timeout:
            value = await _call(job, ctx, executor, spec, pool)
        else:
            value = await _invoke(job, ctx, executor, spec, pool)
    except BaseException as exc:
        return Execution(_classify_error(job, spec, ctx, started, exc))
    return Execution(_success(job, spec, ctx, started, value))


async def _call(
    job: Job, ctx: JobContext, executor: Executor | None, spec: TaskSpec, pool: ProcessPool | None = None
) -> Any:
    """Call the handler under the task's timeout: async ones on this loop (cancelled at the deadline), isolated
    ones in a child process (killed at the deadline), other sync ones in the executor — and a thread cannot be
    stopped, so past the deadline it is told to stop (`ctx.cancelled`) and waited for: the try reports 504 only
    once its thread has ended, so its retry never runs beside it."""
    if pool is None and not spec.is_async:
        loop = asyncio.get_running_loop()
        args = (job.payload, ctx) if spec.takes_context else (job.payload,)
        running = loop.run_in_executor(executor, spec.fn, *args)
        try:
            return await asyncio.wait_for(asyncio.shield(running), spec.timeout)
        except TimeoutError:
            if ctx.cancel_reason is not None:
                raise
            ctx.request_cancel(REASON_TIMEOUT)
            await overrun(ctx.runtime, job, spec)
            with contextlib.suppress(BaseException):
                await running
            raise TimeoutError(f"task {job.task!r} exceeded its timeout") from None
    deadline = asyncio.timeout(spec.timeout)
    try:
        async with deadline:
            return await _invoke(job, ctx, executor, spec, pool)
    except TimeoutError:
        if deadline.expired() and ctx.cancel_reason is None:
            ctx.request_cancel(REASON_TIMEOUT)
        raise


async def overrun(app: SupportsRuntime | None, job: Job, spec: TaskSpec) -> None:
    """A thread-run handler passed its timeout and runs on: say so in the log, and record it on the job
    (`Store.mark_timed_out`: API, UI and CLI show "timed out, still running") while its lease is kept."""
    log.warning(
        "job %s (%s) exceeded its timeout of %g s and its thread is still running (a plain function cannot be "
        "stopped: it sees ctx.cancelled); the job keeps its lease and retries once the thread ends. Use "
        "isolation='process' for a hard timeout.",
        job.id,
        job.task,
        spec.timeout,
    )
    if app is None:
        return
    try:
        await app.runtime.store.mark_timed_out(job.lease)
    except Exception as exc:  # only the display depends on it; the lease and the retry do not
        log.warning("job %s: could not record that it timed out (%s)", job.id, exc)


async def _invoke(
    job: Job, ctx: JobContext, executor: Executor | None, spec: TaskSpec, pool: ProcessPool | None = None
) -> Any:
    """The bare handler call: async handlers on this loop, sync ones in the executor (never blocking the loop), or
    in a child process of `pool`."""
    if pool is not None:
        return await pool.run(job, ctx)
    fn = spec.fn
    if spec.is_async:
        if spec.takes_context:
            return await fn(job.payload, ctx)
        return await fn(job.payload)
    loop = asyncio.get_running_loop()
    if spec.takes_context:
        return await loop.run_in_executor(executor, fn, job.payload, ctx)
    return await loop.run_in_executor(executor, fn, job.payload)


async def _execute_transactional(
    rt: Runtime,
    job: Job,
    ctx: JobContext,
    executor: Executor | None,
    spec: TaskSpec,
    started: datetime,
    enforce_timeout: bool = True,
) -> Execution:
    """Run the handler inside the store's transaction and commit its writes together with the completion. On any
    failure the transaction rolls back (the handler's writes vanish) and the failure is reported normally."""
    entered = False
    try:
        async with rt.store.handler_transaction(job) as tx:
            entered = True
            ctx.connection = tx.connection
            if enforce_timeout:
                value = await _call(job, ctx, executor, spec)
            else:
                value = await _invoke(job, ctx, executor, spec)
            finish = _success(job, spec, ctx, started, value)
            if finish.status is not JobStatus.COMPLETED:  # result not encodable: roll back, report the error
                raise _ResultRejected(finish)
            applied = await tx.finish(finish)
            return Execution(finish, committed=True, applied=applied)
    except _ResultRejected as rejected:
        return Execution(rejected.finish)
    except BaseException as exc:
        if not entered and isinstance(exc, StoreUnavailable):
            # No transaction could be opened, so the handler never ran: hand the job back, count nothing.
            return Execution(Finish(lease=job.lease, status=JobStatus.PENDING, release=True))
        return Execution(_classify_error(job, spec, ctx, started, exc))
    finally:
        ctx.connection = None


class _ResultRejected(Exception):
    def __init__(self, finish: Finish) -> None:
        super().__init__("result rejected")
        self.finish = finish


# ---- classification -------------------------------------------------------------------------------------------


def _success(job: Job, spec: TaskSpec, ctx: JobContext, started: datetime, value: Any) -> Finish:
    if ctx.cancel_reason == REASON_CANCEL and not spec.is_async:
        # A sync handler cannot be interrupted; when it ends after a cancel request it ended because of it.
        return _cancelled(job, started, ctx.worker_id)
    if ctx.cancel_reason == REASON_TIMEOUT and not spec.is_async:
        return _timed_out(job, spec, ctx, started)  # it returned, but only after its timeout: the try timed out
    if not isinstance(value, _SIMPLE_RESULTS) or (
        isinstance(value, str) and (len(value) > _LONG_STRING or not value.isascii())
    ):
        if isinstance(value, Snooze):
            return _snoozed(job, started, ctx.worker_id, value)
        try:
            value = json.loads(encode_result(value))  # normalise (datetimes → str) and enforce the 5 MiB cap
        except Exception as exc:
            return _failure(job, started, ctx.worker_id, exc, STATUS_ERROR, spec, with_traceback=False)
    elif isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return _failure(
            job, started, ctx.worker_id, ValueError(f"task result {value} is not valid JSON"), STATUS_ERROR, spec
        )
    finished = utcnow()
    return Finish(
        lease=job.lease,
        status=JobStatus.COMPLETED,
        attempt=_attempt(job, started, finished, ctx.worker_id, AttemptOutcome.COMPLETED, STATUS_OK, result=value),
        result=value,
    )


def _attempt(
    job: Job,
    started: datetime,
    finished: datetime,
    worker_id: str | None,
    outcome: AttemptOutcome,
    status_code: int,
    *,
    result: JSON = None,
    error: str | None = None,
    tb: str | None = None,
) -> Attempt:
    """The record of this claim's try, whatever its outcome: the job's try number and the claim's fencing token
    (the store files it under that token, so a stale report lands on its own claim, never on another's)."""
    return Attempt(
        job_id=job.id,
        try_number=job.try_number,
        outcome=outcome,
        status_code=status_code,
        started_at=started,
        finished_at=finished,
        worker_id=worker_id,
        result=result,
        error=error,
        traceback=tb,
        lease_token=job.lease_token,
    )


def _classify_error(job: Job, spec: TaskSpec, ctx: JobContext, started: datetime, exc: BaseException) -> Finish:
    reason = ctx.cancel_reason
    if isinstance(exc, asyncio.CancelledError) or (reason is not None and isinstance(exc, JobCancelled)):
        if reason == REASON_SHUTDOWN:
            return Finish(lease=job.lease, status=JobStatus.PENDING, release=True)
        if reason == REASON_CANCEL:
            return _cancelled(job, started, ctx.worker_id)
        if reason == REASON_TIMEOUT:  # the worker's watchdog stopped an overdue job
            return _timed_out(job, spec, ctx, started)
        if reason == REASON_LOST:
            return lost_finish(job, started, ctx.worker_id)
        if reason is None:
            # Cancelled from outside without a reason (e.g. the event loop is shutting down): hand the job back.
            return Finish(lease=job.lease, status=JobStatus.PENDING, release=True)
    if reason == REASON_TIMEOUT and (isinstance(exc, TimeoutError) or not spec.is_async):
        return _timed_out(job, spec, ctx, started)  # a thread that ended (however) after its timeout: 504
    if reason == REASON_CANCEL and not spec.is_async:
        return _cancelled(job, started, ctx.worker_id)
    if isinstance(exc, ChildDied):
        return _failure(job, started, ctx.worker_id, exc, STATUS_ERROR, spec, with_traceback=False)
    if isinstance(exc, Snooze):
        return _snoozed(job, started, ctx.worker_id, exc)
    if isinstance(exc, Retry):
        delay = exc.delay
        return _failure(
            job,
            started,
            ctx.worker_id,
            exc,
            _clamp_code(exc.status_code),
            spec,
            with_traceback=False,
            delay=delay,
            forced_retry=True,
        )
    if isinstance(exc, Fail):
        return _failure(job, started, ctx.worker_id, exc, _clamp_code(exc.status_code), spec, result=exc.result)
    return _failure(job, started, ctx.worker_id, exc, STATUS_ERROR, spec)


def _snoozed(job: Job, started: datetime, worker_id: str | None, snooze: Snooze) -> Finish:
    """The handler asked to run again later: pending at now + seconds, the try recorded (SNOOZED) but not counted."""
    finished = utcnow()
    return Finish(
        lease=job.lease,
        status=JobStatus.PENDING,
        attempt=_attempt(
            job,
            started,
            finished,
            worker_id,
            AttemptOutcome.SNOOZED,
            STATUS_SNOOZED,
            error=f"{snooze.reason} for {snooze.seconds:g} s",
        ),
        run_at=finished + timedelta(seconds=snooze.seconds),
        snooze=True,
    )


def _timed_out(job: Job, spec: TaskSpec, ctx: JobContext, started: datetime) -> Finish:
    text = f"task {job.task!r} exceeded its timeout of {spec.timeout:g} s"
    ran = (utcnow() - started).total_seconds()
    if not spec.is_async and ran > spec.timeout + 0.05:
        text += f"; its thread ran {ran:.2f} s in all, and the retry waited for it to end"
    return _failure(job, started, ctx.worker_id, TimeoutError(text), STATUS_TIMEOUT, spec, with_traceback=False)


def _clamp_code(code: object) -> int:
    if isinstance(code, int) and not isinstance(code, bool) and 0 <= code <= MAX_STATUS_CODE:
        return code
    return STATUS_ERROR


def _error_text(exc: BaseException) -> str:
    """The error recorded on the attempt. Lone surrogates (which no store can encode) become U+FFFD, so that a
    handler's odd exception text can never keep its attempt from being recorded."""
    if isinstance(exc, Retry | Fail):
        text = str(exc.reason)
    elif isinstance(exc, RemoteError | ChildDied):
        text = str(exc)  # what the handler raised in its child process / how the child died
    else:
        message = str(exc)
        name = type(exc).__name__
        text = f"{name}: {message}" if message else name
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


def _failure(
    job: Job,
    started: datetime,
    worker_id: str | None,
    exc: BaseException,
    status_code: int,
    spec: TaskSpec | None,
    *,
    with_traceback: bool = True,
    delay: float | None = None,
    forced_retry: bool = False,
    result: JSON = None,
) -> Finish:
    """A failed try: retry (with backoff or the given delay) when the code is retryable and attempts remain,
    else dead-letter. `Retry` is always retryable whatever its status code."""
    finished = utcnow()
    error = _error_text(exc)
    if isinstance(exc, RemoteError):
        tb: str | None = exc.remote_traceback if with_traceback else None
    else:
        tb = "".join(traceback.format_exception(exc)) if with_traceback else None
    if tb is not None and not tb.isascii():
        tb = tb.encode("utf-8", "replace").decode("utf-8")
    retryable = forced_retry or status_code in RETRYABLE_STATUS_CODES or status_code == LOST_STATUS_CODE
    if retryable and job.attempts < job.max_attempts:
        if delay is None:
            backoff = spec.backoff if spec is not None else None
            delay = backoff.delay(job.attempts) if backoff is not None else _default_delay(job.attempts)
        outcome = AttemptOutcome.TIMEOUT if status_code == STATUS_TIMEOUT else AttemptOutcome.RETRY
        status = JobStatus.PENDING
        run_at: datetime | None = finished + timedelta(seconds=max(0.0, float(delay)))
    else:
        outcome = AttemptOutcome.FAILED
        status = JobStatus.FAILED
        run_at = None
    return Finish(
        lease=job.lease,
        status=status,
        attempt=_attempt(
            job, started, finished, worker_id, outcome, status_code, result=_safe_result(result), error=error, tb=tb
        ),
        run_at=run_at,
        error=error,
    )


def _default_delay(attempt: int) -> float:
    return DEFAULT_BACKOFF.delay(attempt)


def _safe_result(value: JSON) -> JSON:
    if value is None or isinstance(value, _SIMPLE_RESULTS):
        return value
    try:
        return json.loads(encode_result(value))
    except Exception:
        return None


def lost_finish(job: Job, started: datetime, worker_id: str | None) -> Finish:
    """The report of a run stopped because its lease was lost (rescued, or claimed again after a crash of the store).
    The store refuses it — the lease is gone — and keeps its attempt as the LOST record of this claim."""
    error = "lease lost while running: stopped by its worker (the job had been rescued or claimed again)"
    return Finish(
        lease=job.lease,
        status=JobStatus.PENDING,
        attempt=_attempt(job, started, utcnow(), worker_id, AttemptOutcome.LOST, LOST_STATUS_CODE, error=error),
        error=error,
    )


def cancelled_finish(job: Job, worker_id: str | None) -> Finish:
    """The report for a job cancelled on request before its handler started (e.g. while prefetched)."""
    return _cancelled(job, utcnow(), worker_id)


def _cancelled(job: Job, started: datetime, worker_id: str | None) -> Finish:
    error = "cancelled on request while running"
    return Finish(
        lease=job.lease,
        status=JobStatus.CANCELLED,
        attempt=_attempt(job, started, utcnow(), worker_id, AttemptOutcome.CANCELLED, STATUS_CANCELLED, error=error),
        error=error,
    )


def log_outcome(finish: Finish, job: Job) -> None:
    """Say what became of a failed try once the store has recorded it: a retry at INFO, a dead letter at WARNING,
    with the job's id, task, try and error both in the message and as fields (`extra`: the JSON log format writes
    them as keys). Successes, snoozes and cancels say nothing here (they are not problems; DEBUG shows the rest)."""
    attempt = finish.attempt
    if attempt is None or attempt.outcome not in _LOGGED_OUTCOMES:
        return
    fields = {
        "job_id": job.id,
        "task": job.task,
        "queue": job.queue,
        "namespace": job.namespace,
        "try": attempt.try_number,
        "max_attempts": job.max_attempts,
        "status_code": attempt.status_code,
        "outcome": attempt.outcome.value,
        "error": finish.error,
    }
    where = f"job {job.id} ({job.task}) try {attempt.try_number}/{job.max_attempts}"
    error = printable(finish.error or f"status {attempt.status_code}")
    if finish.status is JobStatus.FAILED:
        log.warning("%s failed for good: %s; moved to the dead letters", where, error, extra=fields)
    elif finish.run_at is None:
        log.info("%s failed: %s; retrying now", where, error, extra={**fields, "retry_at": None})
    else:
        when = finish.run_at.isoformat(timespec="milliseconds")
        log.info("%s failed: %s; retrying at %s", where, error, when, extra={**fields, "retry_at": when})


_LOGGED_OUTCOMES = frozenset({AttemptOutcome.RETRY, AttemptOutcome.TIMEOUT, AttemptOutcome.FAILED})


def refused_message(finish: Finish, job: Job, now: Job | None, *, known: bool = True) -> str:
    """The warning for a report the store refused: the job, its task, the stale claim, and the job as it is now."""
    attempt = finish.attempt
    if finish.release:
        what = "hand-back"
    elif attempt is not None:
        what = f"outcome ({attempt.status_code} {attempt.outcome.value})"
    else:
        what = f"report ({finish.status.value})"
    stale = f"try {job.try_number}, worker {job.worker_id}, lease {(job.lease_token or '?')[:8]}…"
    if not known:
        current = "its state now is unknown (store unavailable)"
    elif now is None:
        current = "the job has been deleted since"
    else:
        holder = f" by worker {now.worker_id}" if now.worker_id else ""
        current = f"the job is now {now.status.value} at try {now.try_number}{holder}"
    kept = "; this try is kept as a lost attempt" if attempt is not None and now is not None else ""
    return f"job {job.id} ({job.task}): {what} of a stale claim refused ({stale}): its lease was lost — {current}{kept}"


# ---- GS2 Run ---------------------------------------------------------------------------------------------------


async def run_user_job(
    app: SupportsRuntime,
    namespace: str,
    user_id: str,
    worker_id: str | None = None,
    *,
    pool: Callable[[], Awaitable[ProcessPool]] | None = None,
) -> RunResult:
    """GS2 Run: claim the user's next due job, execute it here, record the attempt, and report `is_last`: no pending
    job of the user remains (due or scheduled).

    Raises Conflict (409) while another job of the user is processing (from `Store.claim_user`). While the handler
    runs, the lease is extended in the background so a long handler is not rescued from under us. `pool` gives
    the child processes a process-isolated task runs in (the app's own, started on first use)."""
    rt = app.runtime
    store = rt.store
    wid = worker_id or f"run:{default_worker_id()}"
    job = await store.claim_user(namespace, user_id, wid, rt.lease)
    if job is None:  # nothing due: the queue may still hold a job scheduled for later (then is_last is False)
        return RunResult(job=None, attempt=None, is_last=not await store.has_pending_job(namespace, user_id))
    ctx = JobContext(job, rt, wid)
    keeper = asyncio.create_task(_keep_lease(rt, job, ctx))
    try:
        spec = rt.tasks.get(job.task)
        try:
            isolated = spec is not None and spec.isolation == PROCESS
            if isolated and pool is None:
                raise RuntimeError(f"task {job.task!r} runs in a child process, and no process pool was given")
            children = await pool() if isolated and pool is not None else None
        except Exception as exc:  # e.g. a handler no child can import: the try fails, with that reason
            execution = Execution(_failure(job, utcnow(), wid, exc, STATUS_ERROR, spec, with_traceback=False))
        else:
            execution = await execute(rt, job, ctx, spec=spec, pool=children)
    finally:
        keeper.cancel()
        try:
            await keeper
        except asyncio.CancelledError:
            pass
    finish = execution.finish
    if not execution.committed and finish.status is JobStatus.PENDING and not finish.release:
        finish = await _run_retry_policy(rt, namespace, finish)
    applied = execution.applied
    if not execution.committed:
        applied = await _finish_with_retries(rt, finish)
    if not applied:
        log.warning("%s", refused_message(finish, job, await store.get_job(job.id)))
    elif finish.attempt is not None:
        log_outcome(finish, job)
        rt.events.publish_run(job, finish.attempt)
    is_last = not await store.has_pending_job(namespace, user_id)
    after = await store.get_job(job.id)
    return RunResult(job=after or job, attempt=finish.attempt, is_last=is_last)


async def _run_retry_policy(rt: Runtime, namespace: str, finish: Finish) -> Finish:
    """GS2's flow sends a failed job back to the queue for the next Run: in a namespace consumed by Run (auto_run
    off) a retry stays at the head of the user's queue and is due at once (`run_at=None`: the store's own now, so
    no clock skew can make the next Run miss it), unless the namespace opts into backoff (`run_retry_backoff`).
    Read only on this failure path, so a successful Run costs no extra round trip."""
    ns = await rt.store.get_namespace(namespace)
    if ns is None or ns.auto_run or ns.run_retry_backoff:
        return finish
    return dataclasses.replace(finish, run_at=None)


async def _finish_with_retries(rt: Runtime, finish: Finish, tries: int = 4) -> bool:
    """Report a Run's outcome, riding out a short store hiccup (the job ran: its result should not be lost to a
    blip); whether it applied. If the store stays down the error propagates and the rescuer re-runs the job after
    its lease."""
    delay = 0.1
    for attempt in range(tries):
        try:
            (applied,) = await rt.store.finish([finish])
            return applied
        except StoreUnavailable:
            if attempt == tries - 1:
                raise
            await asyncio.sleep(delay)
            delay *= 3
    return False  # pragma: no cover - the loop returns or raises


async def _keep_lease(rt: Runtime, job: Job, ctx: JobContext) -> None:
    """Heartbeat for a job run in the caller (Run): extend every lease/3, stop it if cancelled or lost."""
    interval = max(rt.lease.total_seconds() / 3, 0.05)
    while True:
        await asyncio.sleep(interval)
        try:
            (state,) = await rt.store.heartbeat([job.lease], rt.lease)
        except Exception:  # a store hiccup: try again next time, the lease has slack
            continue
        if not state.held:
            ctx.request_cancel(REASON_LOST)
            return
        if state.cancel_requested:
            ctx.request_cancel(REASON_CANCEL)
            return
