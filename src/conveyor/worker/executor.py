"""The executor (as River's internal/jobexecutor): the worker's slots. It starts a claimed job in a slot, runs
it (`conveyor.execution.execute`: the handler in the loop, a thread, or a child process), stops it on a timeout
(one watchdog scan instead of a timer per job), a cancel or a lost lease, and hands its outcome to the completer.
A slot coming free is told to the producer (`on_slot_free`), which fills it from its buffer or claims."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from conveyor.context import JobContext
from conveyor.execution import REASON_CANCEL, REASON_LOST, REASON_TIMEOUT, execute, log_outcome, overrun
from conveyor.isolation import ProcessPool, is_isolated, isolated_handlers
from conveyor.model import Job
from conveyor.worker.completer import Completer
from conveyor.worker.state import RunState, WorkerSettings

if TYPE_CHECKING:
    from conveyor.tasks import TaskSpec

log = logging.getLogger("conveyor.worker")

FAST_JOB = 0.005  # seconds: handlers faster than this on average let the worker claim ahead (prefetch)


class Executor:
    """Runs jobs in at most `concurrency` slots."""

    def __init__(
        self,
        settings: WorkerSettings,
        state: RunState,
        completer: Completer,
        *,
        on_slot_free: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.state = state
        self.completer = completer
        self.on_slot_free = on_slot_free
        self.running: dict[str, JobContext] = {}
        """The jobs in a slot, by id."""
        self.avg_run = 1.0
        """Moving average of handler run time (s): the producer prefetches only while it is below FAST_JOB."""
        self.process_pool: ProcessPool | None = None
        """The child processes of process-isolated tasks, once started (`start_pool`)."""
        self.committed = 0
        """Jobs whose outcome was written with the handler's own transaction (not through the completer)."""
        self._threads: ThreadPoolExecutor | None = None
        self._min_timeout = float("inf")
        self.watch_tick = 0.5
        """Seconds between two scans for jobs past their timeout."""
        for spec in settings.specs.values():
            if spec.timeout < self._min_timeout:
                self._set_watch_tick(spec.timeout)

    @property
    def free(self) -> int:
        """Slots free now."""
        return self.settings.concurrency - len(self.running)

    def start(self) -> None:
        """Called on the worker's loop as it starts."""
        # Twice the slots: a sync handler that ignores its timeout keeps its thread, and must not starve the others.
        self._threads = ThreadPoolExecutor(max_workers=2 * self.settings.concurrency, thread_name_prefix="conveyor-job")
        self.running = {}

    async def start_pool(self) -> None:
        """Start the child processes of process-isolated tasks (one per slot) before claiming anything; a handler
        that no child could import fails the start with a clear error instead of every job that uses it."""
        settings = self.settings
        handlers = isolated_handlers(settings.specs, settings.isolation)
        if handlers:
            self.process_pool = ProcessPool(handlers, settings.concurrency, worker_id=settings.worker_id)
            await self.process_pool.start()
            log.info(
                "worker %s: %d child process(es) for isolated tasks %s",
                settings.worker_id,
                settings.concurrency,
                ", ".join(sorted(handlers)),
            )

    async def close_pool(self) -> None:
        if self.process_pool is not None:
            await self.process_pool.close()

    def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)

    def isolated(self, spec: TaskSpec | None) -> bool:
        """Whether `spec`'s handler runs in a child process here."""
        return self.process_pool is not None and is_isolated(spec, self.settings.isolation)

    # ---- running -------------------------------------------------------------------------------------------

    def launch(self, job: Job) -> None:
        """Start `job` in a free slot."""
        loop = self.state.loop
        assert loop is not None
        settings = self.settings
        ctx = JobContext(job, settings.runtime, settings.worker_id)
        spec = settings.specs.get(job.task)
        if spec is not None:
            ctx.deadline = loop.time() + spec.timeout
            if spec.timeout < self._min_timeout:
                self._set_watch_tick(spec.timeout)
        self.running[job.id] = ctx
        ctx.run_task = loop.create_task(self._run_job(job, ctx, spec))

    def _set_watch_tick(self, timeout: float) -> None:
        """Deadlines are checked every timeout/20 (≥ 10 ms, ≤ 0.5 s): a job overruns by at most ~5 %."""
        self._min_timeout = timeout
        self.watch_tick = min(0.5, max(0.01, timeout / 20))

    async def _run_job(self, job: Job, ctx: JobContext, spec: TaskSpec | None) -> None:
        loop = self.state.loop
        assert loop is not None
        runtime = self.settings.runtime
        began = loop.time()
        try:
            pool = self.process_pool if self.isolated(spec) else None
            execution = await execute(runtime, job, ctx, self._threads, spec, enforce_timeout=False, pool=pool)
        except BaseException as exc:  # execute classifies everything; this is a last line of defence
            log.exception("internal error running job %s: %s", job.id, exc)
            self._job_done(job)
            return
        self.avg_run += (loop.time() - began - self.avg_run) * 0.2
        self._job_done(job)
        task = ctx.run_task
        if task is not None and task.cancelling():
            task.uncancel()
        finish = execution.finish
        if ctx.cancel_reason == REASON_LOST:
            # Reported all the same: the store refuses it (the lease is gone) and keeps the try as a LOST record of
            # its own claim, so the history shows this run even when nobody else recorded it (a claim lost in a
            # crash of the store); the completer logs the refusal.
            log.warning(
                "job %s (%s) try %d: lease lost while running; stopped (another worker has it, or will)",
                job.id,
                job.task,
                job.attempts,
                extra={"job_id": job.id, "task": job.task, "try": job.attempts, "outcome": "lost"},
            )
        if execution.committed:
            self.committed += 1
            if execution.applied and finish.attempt is not None:
                log_outcome(finish, job)
                runtime.events.publish_run(job, finish.attempt)
            elif not execution.applied:
                self.completer.log_refused([(finish, job)])
            return
        self.completer.complete(finish, job)

    def _job_done(self, job: Job) -> None:
        self.running.pop(job.id, None)
        self.on_slot_free()

    # ---- stopping ------------------------------------------------------------------------------------------

    def check_deadlines(self, now: float) -> None:
        """Stop jobs past their task timeout (`now`: the loop's time); called by the watchdog every `watch_tick`."""
        for ctx in list(self.running.values()):
            if 0 < ctx.deadline <= now and ctx.cancel_reason is None:
                log.warning("job %s (%s): exceeded its timeout; stopping it", ctx.job.id, ctx.job.task)
                self.stop_job(ctx, REASON_TIMEOUT)

    def stop_job(self, ctx: JobContext, reason: str) -> None:
        """Tell a running job to stop. Async handlers are cancelled at once, and process-isolated ones killed (the
        try is reported once the child is gone). A sync handler in a thread cannot be stopped: it sees
        `ctx.cancelled`; on a cancel request or a timeout the worker keeps waiting for it (and keeps its lease, so
        its retry cannot start beside it); on a shutdown or a lost lease it stops waiting."""
        first = ctx.request_cancel(reason)
        spec = self.settings.specs.get(ctx.job.task)
        task = ctx.run_task
        if task is None or task.done():
            return
        if self.isolated(spec):
            task.cancel()  # kills the child; classified by ctx.cancel_reason
            return
        if not first:
            return
        if spec is None or spec.is_async:
            task.cancel()
        elif reason == REASON_TIMEOUT:
            assert self.state.loop is not None
            self.state.loop.create_task(overrun(self.settings.runtime, ctx.job, spec))
        elif reason != REASON_CANCEL:
            task.cancel()  # shutdown past its grace, or lost lease: stop waiting for the thread

    def stop_all(self, reason: str) -> None:
        for ctx in list(self.running.values()):
            self.stop_job(ctx, reason)

    def cancel(self, job_id: str, token: str | None) -> None:
        """A cancel requested in this process, fenced like the store's: a cancel meant for another claim of the
        job (`token`: the claim that was processing when it was asked) does not stop the run held here."""
        ctx = self.running.get(job_id)
        if ctx is not None and (token is None or ctx.job.lease_token == token):
            log.info("job %s (%s): cancel requested; stopping it", job_id, ctx.job.task)
            self.stop_job(ctx, REASON_CANCEL)

    def notify_shutdown(self, reason: str) -> None:
        """Process-isolated jobs learn of a shutdown at once (ctx.cancelled); they are killed when the grace ends."""
        pool = self.process_pool
        if pool is None:
            return
        for ctx in self.running.values():
            if self.isolated(self.settings.specs.get(ctx.job.task)) and ctx.request_cancel(reason):
                pool.notify_stop(ctx.job.id, reason)

    async def drain(self, reason: str) -> None:
        """At shutdown: let the running jobs finish within the grace period (none if forced), then stop them."""
        tasks = [ctx.run_task for ctx in self.running.values() if ctx.run_task is not None]
        if not tasks:
            return
        grace = self.settings.grace_period
        if not self.state.force and grace > 0:
            _done, pending = await asyncio.wait(tasks, timeout=grace)
            tasks = list(pending)
        if tasks:
            log.warning(
                "grace period over: handing %d unfinished job(s) back to the queue: %s",
                len(tasks),
                ", ".join(list(self.running)[:20]),
            )
            specs = self.settings.specs
            stuck_sync = [
                ctx.job.id
                for ctx in self.running.values()
                if (spec := specs.get(ctx.job.task)) is not None and not spec.is_async and not self.isolated(spec)
            ]
            self.stop_all(reason)
            await asyncio.wait(tasks, timeout=5.0)
            if stuck_sync:
                log.warning(
                    "%d sync handler(s) were still running in threads (%s); they see ctx.cancelled, and the "
                    "process exits once they return",
                    len(stuck_sync),
                    ", ".join(stuck_sync[:20]),
                )
