"""The worker: claims jobs into a pool of slots, runs them, reports their outcomes, and shuts down gracefully.

Shape (after River's producer/completer split):

- **fetch loop** — whenever slots are free and work may exist, claims `min(free slots, batch)` jobs in one store
  call and starts one task per job. The claim names the tasks this worker registered (a job of any other task is
  left for a worker that has it); which namespaces run automatically is decided by the store inside the claim,
  from the settings as they are at that moment, never from a copy kept here. It re-claims at once while claims
  come back full, then sleeps until woken: by the store (`wait_for_jobs`: an in-process enqueue at once,
  NOTIFY/pub-sub, or the poll interval), or by a slot coming free while the pool was full. While it waits it
  offers the store an `IdleClaim`: on stores with hand-off (memory, PostgreSQL, Redis) an enqueue in this process
  claims for it in the same round trip and delivers the jobs (`_take_handoff`), so they start without a wake-up
  and a claim of their own. While handlers are fast (< 5 ms on average) it claims ahead: up to `prefetch` extra
  jobs wait locally for the next free slot, so one round trip carries several batches (the claim, not the handler,
  bounds throughput then); jobs still waiting after 1 s are handed back.
- **completer** — finished jobs leave their slot at once and hand a `Finish` to the completer, which flushes
  everything that accumulated in one `store.finish` call: immediately when idle, batched while a flush is in
  flight. A flush that fails (store down) is retried with backoff until it lands; leases of unflushed jobs keep
  being extended so the rescuer does not take them meanwhile. A report the store refuses (its lease token is no
  longer the job's: rescued, claimed again after a crash of the store, deleted) is logged as a warning with the
  job's state now; the store keeps that try as a LOST record of its own.
- **heartbeat** — every lease/6 extends every held lease in one call, stops jobs whose lease was lost or whose
  cancel was requested elsewhere, and refreshes the worker's registration (ttl 3 × interval).
- **local cancel** — a cancel published on `app.events` in this process stops a job running here at once.
- **shutdown** (SIGTERM/SIGINT or `stop()`) — stop claiming, let running jobs finish within `grace_period`, then
  stop the rest and hand them back with `Finish(release=True)` (no attempt counted), flush, unregister.

Per-job overhead is kept small: one context object, one task, no store round trip of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from conveyor.context import JobContext
from conveyor.errors import StoreUnavailable
from conveyor.events import Event
from conveyor.execution import (
    REASON_CANCEL,
    REASON_LOST,
    REASON_SHUTDOWN,
    REASON_TIMEOUT,
    cancelled_finish,
    execute,
    overrun,
    refused_message,
)
from conveyor.model import DEFAULT_QUEUE, Finish, Job, JobFilter, JobStatus, Lease, WorkerInfo, utcnow
from conveyor.store.base import IdleClaim
from conveyor.webhooks import acquire_dispatcher, register_webhook_task, release_dispatcher

if TYPE_CHECKING:
    from conveyor.app import Conveyor, TaskSpec
    from conveyor.isolation import ProcessPool
    from conveyor.maintenance import Elected

log = logging.getLogger("conveyor.worker")

MAX_FLUSH = 1000  # Finish values per store.finish call
FAST_JOB = 0.005  # seconds: handlers faster than this on average let the worker claim ahead (prefetch)
BUFFER_WAIT = 1.0  # seconds: prefetched jobs still waiting for a slot after this are handed back
_MAX_BACKOFF = 5.0


class Worker:
    """Run jobs from `queues` with `concurrency` slots until stopped.

    >>> worker = Worker(app, queues=["default", "mail"], concurrency=10)
    >>> await worker.run()          # returns after SIGTERM/SIGINT or worker.stop()
    """

    def __init__(
        self,
        app: Conveyor,
        *,
        queues: Sequence[str] = (DEFAULT_QUEUE,),
        namespaces: Sequence[str] | None = None,
        concurrency: int = 10,
        poll_interval: float = 1.0,
        lease: timedelta | float | None = None,
        grace_period: float = 30.0,
        worker_id: str | None = None,
        maintenance: bool = True,
        install_signal_handlers: bool = True,
        batch_size: int | None = None,
        heartbeat_interval: float | None = None,
        rescue_interval: float | None = None,
        prefetch: int | None = None,
        leader_lease: float | None = None,
        isolation: str = "thread",
    ) -> None:
        from conveyor.isolation import validate_isolation

        if concurrency < 1:
            raise ValueError(f"concurrency must be ≥ 1, got {concurrency}")
        validate_isolation(isolation)
        self.isolation = isolation
        """Where sync handlers run unless their task says otherwise: "thread" (the thread pool) or "process"
        (child processes the worker kills on timeout or cancel; see conveyor/isolation.py)."""
        self._pool: ProcessPool | None = None
        if isinstance(queues, str):
            queues = [queues]
        self.app = app
        self.store = app.store
        self.queues: list[str] = list(queues) or [DEFAULT_QUEUE]
        self.namespaces: list[str] | None = list(namespaces) if namespaces is not None else None
        self.tasks: tuple[str, ...] = tuple(app.tasks)
        """The task names this worker claims: those registered on the app when it starts running."""
        self.concurrency = concurrency
        self.batch_size = max(1, batch_size or concurrency)
        self.prefetch = 3 * self.batch_size if prefetch is None else max(0, prefetch)
        self.buffer_wait = BUFFER_WAIT
        self.poll_interval = poll_interval
        if lease is None:
            lease = app.lease
        self.lease: timedelta = lease if isinstance(lease, timedelta) else timedelta(seconds=lease)
        self.grace_period = grace_period
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.maintenance = maintenance
        self.install_signal_handlers = install_signal_handlers
        lease_s = self.lease.total_seconds()
        self.heartbeat_interval = heartbeat_interval or max(lease_s / 6, 0.05)
        self.registration_ttl = max(3 * self.heartbeat_interval, 3.0)
        self.rescue_interval = rescue_interval or max(lease_s / 2, 0.1)
        self.leader_lease = leader_lease or lease_s
        """Seconds an elected maintenance leader holds its role unrenewed: a killed leader is replaced within it."""
        self.started = Signal()
        """Set once the worker is registered and claiming: `await worker.started.wait()` from any loop, or
        `worker.started.wait_sync(timeout)` from a thread."""
        self.stopped = Signal()

        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._force = False
        self._stop_requested = False
        self._wake: asyncio.Event | None = None
        self._stop_event: asyncio.Event | None = None
        self._running: dict[str, JobContext] = {}
        self._buffer: dict[str, Job] = {}  # claimed, waiting for a slot (prefetch; only while jobs are fast)
        self._avg_run = 1.0  # moving average of handler run time (s): prefetch only when it is below FAST_JOB
        self._buffer_since = 0.0  # loop.time() when the buffer last went from empty to non-empty
        register_webhook_task(app)  # every worker delivers its namespaces' webhooks (conveyor.webhooks)
        self._specs: dict[str, TaskSpec] = app.tasks
        self._full = False
        self._offer: IdleClaim | None = None  # while the fetch loop waits, on stores with hand-off
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[tuple[Finish, Job]] = []
        self._flush_task: asyncio.Task[None] | None = None
        self._flush_done: asyncio.Event | None = None
        self._reports: set[asyncio.Task[None]] = set()  # warnings about refused reports being written
        self._services: list[Elected] = []
        self.leading: set[str] = set()
        """The maintenance roles this worker holds now ("maintenance", "scheduler")."""
        self._started_at = utcnow()
        self._unavailable_since: float | None = None
        self._last_warning = 0.0
        self._timer: asyncio.TimerHandle | None = None  # wakes the fetch loop when the next known job is due
        self._due_stale = True  # something may have changed when the next job is due: ask next_due again
        self._due_spins = 0
        self._min_timeout = float("inf")
        self._watch_tick = 0.5
        for spec in app.tasks.values():
            if spec.timeout < self._min_timeout:
                self._set_watch_tick(spec.timeout)
        self.processed = 0
        """Jobs whose outcome was reported (applied or stale), for tests and the bench."""
        self.handed_off = 0
        """Jobs an enqueue in this process claimed for this worker while it waited (store hand-off)."""

    # ---- control -------------------------------------------------------------------------------------------

    def stop(self, *, force: bool = False) -> None:
        """Ask the worker to shut down gracefully (force: without waiting for the grace period). Thread-safe."""
        self._stop_requested = True
        self._force = self._force or force
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._begin_shutdown()
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._begin_shutdown)

    async def wait_started(self, timeout: float | None = None) -> bool:
        """Wait until the worker is claiming (or has stopped); True if it started."""
        waits = [asyncio.ensure_future(self.started.wait()), asyncio.ensure_future(self.stopped.wait())]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        return self.started.is_set()

    @property
    def running_jobs(self) -> list[str]:
        return list(self._running)

    def _begin_shutdown(self) -> None:
        if self._stopping:
            if self._force:
                self._cancel_all(REASON_SHUTDOWN)
            return
        self._stopping = True
        self._withdraw_idle()
        self._release_buffer()
        if self._pool is not None:  # children learn it now (ctx.cancelled); they are killed when the grace is over
            for ctx in self._running.values():
                if self._isolated(self._specs.get(ctx.job.task)) and ctx._request_cancel(REASON_SHUTDOWN):
                    self._pool.notify_stop(ctx.job.id, REASON_SHUTDOWN)
        log.info(
            "worker %s stopping: no new claims; waiting up to %gs for %d running job(s)",
            self.worker_id,
            0 if self._force else self.grace_period,
            len(self._running),
        )
        if self._wake is not None:
            self._wake.set()
        if self._stop_event is not None:
            self._stop_event.set()

    def _on_signal(self, signum: int) -> None:
        if self._stopping:
            log.warning("second %s: stopping running jobs now", signal.Signals(signum).name)
            self._force = True
            self._cancel_all(REASON_SHUTDOWN)
            return
        log.info("received %s", signal.Signals(signum).name)
        self._begin_shutdown()

    # ---- main ----------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until stopped. Never raises for store outages: it logs and keeps retrying.

        The worker runs on the app's home loop (the loop its store's connections belong to); awaited from another
        loop, it is carried there and this call waits for it."""
        here = asyncio.get_running_loop()
        home = self.app._home
        if home is not None and home is not here and home.is_running():
            await self.app._on_home(self.run)
            return
        if self._ran:
            raise RuntimeError("a Worker runs once; create a new Worker to run again")
        self._ran = True
        self.tasks = tuple(self.app.tasks)
        loop = self._loop = here
        self._wake = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._flush_done = asyncio.Event()
        self._flush_done.set()
        # Twice the slots: a sync handler that ignores its timeout keeps its thread, and must not starve the others.
        self._executor = ThreadPoolExecutor(max_workers=2 * self.concurrency, thread_name_prefix="conveyor-job")
        self._running = {}
        self._buffer = {}
        self._pending = []
        signals = self._install_signals(loop)
        self.app.events.add_listener(self._on_event)
        background: list[asyncio.Task[None]] = []
        dispatching = False
        try:
            await self._start_pool()
            if not await self._startup():
                return
            background.append(loop.create_task(self._heartbeat_loop(), name="conveyor-heartbeat"))
            background.append(loop.create_task(self._waiter_loop(), name="conveyor-waiter"))
            background.append(loop.create_task(self._watchdog_loop(), name="conveyor-watchdog"))
            if self.maintenance:
                self._start_services()
            acquire_dispatcher(self.app)
            dispatching = True
            if self._stop_requested:
                self._begin_shutdown()
            self.started.set()
            log.info(
                "worker %s started: queues=%s tasks=%s concurrency=%d store=%s",
                self.worker_id,
                ",".join(self.queues),
                ",".join(self.tasks) or "(none)",
                self.concurrency,
                self.store.scheme,
            )
            await self._fetch_loop()
            await self._drain_running()
            await self._final_flush()
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._stop_services()
            if self._pool is not None:
                await self._pool.close()
            if dispatching:
                await release_dispatcher(self.app)
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            self.app.events.remove_listener(self._on_event)
            self._remove_signals(loop, signals)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.store.unregister_worker(self.worker_id), 5.0)
            self._executor.shutdown(wait=False, cancel_futures=True)
            self.started.clear()
            self.stopped.set()
            log.info("worker %s stopped (%d jobs processed)", self.worker_id, self.processed)

    _closed = False
    _ran = False

    async def _start_pool(self) -> None:
        """Start the child processes of process-isolated tasks (one per slot) before claiming anything; a handler
        that no child could import fails the start with a clear error instead of every job that uses it."""
        from conveyor.isolation import ProcessPool, isolated_handlers

        handlers = isolated_handlers(self._specs, self.isolation)
        if handlers:
            self._pool = ProcessPool(handlers, self.concurrency, worker_id=self.worker_id)
            await self._pool.start()
            log.info(
                "worker %s: %d child process(es) for isolated tasks %s",
                self.worker_id,
                self.concurrency,
                ", ".join(sorted(handlers)),
            )

    def _isolated(self, spec: TaskSpec | None) -> bool:
        from conveyor.isolation import is_isolated

        return self._pool is not None and is_isolated(spec, self.isolation)

    async def _startup(self) -> bool:
        """Open the store and register, retrying while the store is unavailable. False if stopped meanwhile."""
        delay = 0.1
        while True:
            if self._stop_requested:
                return False
            try:
                await self.app._ensure_open()
                await self.store.register_worker(self._info())
                self._recovered()
                return True
            except Exception as exc:
                self._unavailable(exc, "starting")
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)

    # ---- fetching ------------------------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        wake = self._wake
        assert wake is not None
        store = self.store
        delay = 0.05
        wake.set()  # claim at once on start
        self._due_stale = True
        while not self._stopping:
            if not wake.is_set():
                if self._due_stale and not self._full:
                    await self._refresh_due()
                    if wake.is_set():
                        continue
                self._offer_idle()
            await wake.wait()
            self._withdraw_idle()
            wake.clear()
            while not self._stopping:
                want = self._claim_size()
                if want <= 0:
                    self._full = True
                    break
                if len(self._pending) > 4 * MAX_FLUSH:  # completer is behind (store slow or down): back off
                    self._full = True
                    break
                try:
                    jobs = await store.claim(
                        self.worker_id, self.queues, want, self.lease, tasks=self.tasks, namespaces=self.namespaces
                    )
                except Exception as exc:
                    self._unavailable(exc, "claiming jobs")
                    await self._sleep_or_stop(delay)
                    delay = min(delay * 2, _MAX_BACKOFF)
                    continue
                delay = 0.05
                if self._unavailable_since is not None:
                    self._recovered()
                if jobs:
                    self._due_spins = 0
                    self._start_jobs(jobs)
                if len(jobs) < want:
                    break

    async def _refresh_due(self) -> None:
        """Ask the store when the next job this worker could claim falls due, and set a timer for it: a scheduled
        job or a retry then starts on time instead of at the next poll. Asked after a wake-up (an enqueue here or
        in another process, the poll timeout, a timer) once the claims it caused are done; the answer is measured
        by the store's clock, so a worker whose clock is off still claims when the store thinks the job is due."""
        self._due_stale = False
        try:
            due = await self.store.next_due(self.queues, tasks=self.tasks, namespaces=self.namespaces)
        except Exception as exc:
            self._unavailable(exc, "reading when the next job is due")
            return
        if due is None:
            return
        if due <= 0:
            # Due already: claim again, once. A second "due now" right after a claim that found nothing means the
            # store counts a job its claim skips (a race with another worker, or a rule this worker's claim adds):
            # wait for the next wake-up or poll rather than spin.
            self._due_spins += 1
            if self._due_spins <= 1 and self._wake is not None:
                self._due_stale = True
                self._wake.set()
            return
        self._due_spins = 0
        self._arm_timer(due)

    def _offer_idle(self) -> None:
        """Tell the store this worker waits, and for what: an enqueue in this process may then claim for it in the
        same round trip and hand the jobs over (`_take_handoff`), by the rules of `claim` (the store decides there
        which namespaces run automatically, as in every claim)."""
        if not self.store.supports_handoff or self._stopping:
            return
        want = self._claim_size()
        if want <= 0:
            return
        assert self._loop is not None
        offer = IdleClaim(
            worker_id=self.worker_id,
            queues=tuple(self.queues),
            limit=want,
            lease=self.lease,
            namespaces=self.namespaces,
            exclude_namespaces=(),
            deliver=self._take_handoff,
            loop=self._loop,
            tasks=self.tasks,
        )
        self._offer = offer
        self.store.offer_idle(offer)

    def _withdraw_idle(self) -> None:
        offer, self._offer = self._offer, None
        if offer is not None:
            self.store.withdraw_idle(offer)

    def _take_handoff(self, jobs: list[Job]) -> bool:
        """Jobs an enqueue claimed for this worker while it waited. Refused once stopping (the store hands them
        back without counting an attempt). Taken jobs start at once, or wait in the prefetch buffer."""
        if self._stopping or self._closed:
            return False
        if self._unavailable_since is not None:
            self._recovered()
        self.handed_off += len(jobs)
        self._start_jobs(jobs)
        if self._offer is not None:  # still waiting: offer the slots that are left
            self._withdraw_idle()
            self._offer_idle()
        return True

    async def _waiter_loop(self) -> None:
        """Turn store wake-ups (local enqueue, NOTIFY, pub-sub, or the poll timeout) into fetch-loop wake-ups."""
        wake = self._wake
        assert wake is not None
        while not self._stopping:
            try:
                await self.store.wait_for_jobs(self.poll_interval)
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(self.poll_interval)
            self._due_stale = True  # whatever woke us may have scheduled jobs: ask for the next due time again
            wake.set()

    def _claim_size(self) -> int:
        """How many jobs to claim now (0: wait until slots free up).

        Claim-ahead: while handlers are fast (moving average under FAST_JOB), the worker holds up to `prefetch`
        claimed jobs ready for the next free slots, and waits until a full `batch_size + prefetch` fits before
        claiming, so each round trip carries as many jobs as possible (the claim, not the handler, is the
        bottleneck then). Slow handlers get no prefetch: a claimed job must not wait behind them while another
        worker could run it; then any free slot is claimed for at once."""
        free = self.concurrency - len(self._running)
        if self._avg_run >= FAST_JOB or self.prefetch == 0:
            return min(free, self.batch_size) if free > 0 and not self._buffer else 0
        room = free + self.prefetch - len(self._buffer)
        if room >= self.batch_size + self.prefetch or (free > 0 and not self._buffer):
            return min(room, self.batch_size + self.prefetch)
        return 0

    def _start_jobs(self, jobs: list[Job]) -> None:
        if self._stopping:  # claimed while the stop began: hand them straight back
            for job in jobs:
                self._complete(Finish(lease=job.lease, status=JobStatus.PENDING, release=True), job)
            return
        free = self.concurrency - len(self._running)
        for job in jobs[:free]:
            self._launch(job)
        if len(jobs) > free:
            if not self._buffer:
                assert self._loop is not None
                self._buffer_since = self._loop.time()
            for job in jobs[free:]:
                self._buffer[job.id] = job

    def _launch(self, job: Job) -> None:
        loop = self._loop
        assert loop is not None
        ctx = JobContext(job, self.app, self.worker_id)
        spec = self._specs.get(job.task)
        if spec is not None:
            ctx._deadline = loop.time() + spec.timeout
            if spec.timeout < self._min_timeout:
                self._set_watch_tick(spec.timeout)
        self._running[job.id] = ctx
        ctx._task = loop.create_task(self._run_job(job, ctx, spec))

    def _release_buffer(self) -> None:
        """Hand prefetched jobs back (shutdown): they never started, so no attempt is counted."""
        buffered, self._buffer = self._buffer, {}
        for job in buffered.values():
            self._complete(Finish(lease=job.lease, status=JobStatus.PENDING, release=True), job)

    def _set_watch_tick(self, timeout: float) -> None:
        """Deadlines are checked every timeout/20 (≥ 10 ms, ≤ 0.5 s): a job overruns by at most ~5 %."""
        self._min_timeout = timeout
        self._watch_tick = min(0.5, max(0.01, timeout / 20))

    async def _watchdog_loop(self) -> None:
        """Stop jobs past their task timeout. One loop scanning the running jobs replaces a timer per job."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._watch_tick)
            now = loop.time()
            if self._buffer and now - self._buffer_since > self.buffer_wait:
                # The slots stayed busy (handlers slower than they were): give the prefetched jobs back so that
                # another worker can run them, and stop prefetching until handlers are fast again.
                log.info("handing back %d prefetched job(s): no slot freed up in time", len(self._buffer))
                self._avg_run = max(self._avg_run, now - self._buffer_since)
                self._release_buffer()
            for ctx in list(self._running.values()):
                if 0 < ctx._deadline <= now and ctx.cancel_reason is None:
                    log.warning("job %s (%s): exceeded its timeout; stopping it", ctx.job.id, ctx.job.task)
                    self._stop_job(ctx, REASON_TIMEOUT)

    async def _run_job(self, job: Job, ctx: JobContext, spec: TaskSpec | None) -> None:
        loop = self._loop
        assert loop is not None
        began = loop.time()
        try:
            pool = self._pool if self._isolated(spec) else None
            execution = await execute(self.app, job, ctx, self._executor, spec, enforce_timeout=False, pool=pool)
        except BaseException as exc:  # execute classifies everything; this is a last line of defence
            log.exception("internal error running job %s: %s", job.id, exc)
            self._job_done(job)
            return
        self._avg_run += (loop.time() - began - self._avg_run) * 0.2
        self._job_done(job)
        task = ctx._task
        if task is not None and task.cancelling():
            task.uncancel()
        finish = execution.finish
        if ctx.cancel_reason == REASON_LOST:
            # Reported all the same: the store refuses it (the lease is gone) and keeps the try as a LOST record of
            # its own claim, so the history shows this run even when nobody else recorded it (a claim lost in a
            # crash of the store); the completer logs the refusal.
            log.info("job %s (%s): lease lost while running; stopped", job.id, job.task)
        if execution.committed:
            self.processed += 1
            if execution.applied and finish.attempt is not None:
                self.app.events.publish_run(job, finish.attempt.status_code, finish.attempt.outcome.value)
            elif not execution.applied:
                self._log_refused([(finish, job)])
            return
        self._complete(finish, job)

    def _job_done(self, job: Job) -> None:
        self._running.pop(job.id, None)
        buffer = self._buffer
        if buffer and not self._stopping:
            self._launch(buffer.pop(next(iter(buffer))))
        if self._full and self._claim_size() > 0:
            self._full = False
            if self._wake is not None:
                self._wake.set()

    # ---- completer -----------------------------------------------------------------------------------------

    def _complete(self, finish: Finish, job: Job) -> None:
        self._pending.append((finish, job))
        if self._flush_task is None:
            assert self._flush_done is not None
            self._flush_done.clear()
            loop = self._loop
            assert loop is not None
            self._flush_task = loop.create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        """Flush accumulated Finish values until none are left; retry a failed flush with backoff (never drop)."""
        delay = 0.05
        wake_after = False
        try:
            while self._pending:
                batch = self._pending[:MAX_FLUSH]
                try:
                    applied = await self.store.finish([f for f, _ in batch])
                except Exception as exc:
                    self._unavailable(exc, f"reporting {len(batch)} finished job(s)")
                    if self._closed:
                        return
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _MAX_BACKOFF)
                    continue
                delay = 0.05
                if self._unavailable_since is not None:
                    self._recovered()
                del self._pending[: len(batch)]
                self.processed += len(batch)
                events = self.app.events
                publish = events.publish_run if events.is_observed(ignore=self._on_event) else None
                refused: list[tuple[Finish, Job]] = []
                for (finish, job), ok in zip(batch, applied, strict=False):
                    attempt = finish.attempt
                    if ok and attempt is not None and publish is not None:
                        publish(job, attempt.status_code, attempt.outcome.value)
                    if job.group_key is not None or job.user_id is not None:
                        wake_after = True  # the next job of its lane may be claimable now
                    elif finish.status is JobStatus.PENDING and not finish.release and finish.run_at is not None:
                        wake_after = self._wake_at(finish.run_at) or wake_after  # a retry: claim it when due
                    if not ok:
                        refused.append((finish, job))
                if refused:
                    self._log_refused(refused)
        finally:
            self._flush_task = None
            if self._flush_done is not None:
                self._flush_done.set()
            if wake_after and self._wake is not None:
                self._due_stale = True  # e.g. a lane's next job, which may be due later
                self._wake.set()

    def _log_refused(self, refused: list[tuple[Finish, Job]]) -> None:
        """Warn about reports the store refused (stale lease token), each with the job's state now; off the flush
        path (one read of the jobs, in the background)."""
        loop = self._loop
        if loop is None or self._closed:
            for finish, job in refused:
                log.warning("%s", refused_message(finish, job, None, known=False))
            return
        task = loop.create_task(self._write_refused(refused))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _write_refused(self, refused: list[tuple[Finish, Job]]) -> None:
        now: dict[str, Job] = {}
        known = True
        try:
            page = await self.store.list_jobs(JobFilter(ids=[job.id for _, job in refused]), limit=len(refused))
            now = {job.id: job for job in page.items}
        except Exception:  # the store is down again: say what we know
            known = False
        for finish, job in refused:
            log.warning("%s", refused_message(finish, job, now.get(job.id), known=known))

    def _wake_at(self, when: datetime) -> bool:
        """Make the fetch loop claim again at `when` (a retry this worker reported). True when it has come."""
        delay = (when - utcnow()).total_seconds()
        if delay <= 0:
            return True
        self._arm_timer(delay)
        return False

    def _arm_timer(self, delay: float) -> None:
        """Wake the fetch loop `delay` seconds from now, unless a timer already fires sooner (one timer: the
        earliest known due time; when it fires the loop claims and asks `next_due` for the one after)."""
        loop = self._loop
        if loop is None or self._closed:
            return
        due = loop.time() + delay + 0.001  # a hair late rather than early: the claim must find the job due
        timer = self._timer
        if timer is None or timer.cancelled() or due < timer.when():
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(due, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._due_stale = True
        self._due_spins = 0
        if self._wake is not None:
            self._wake.set()

    async def _final_flush(self) -> None:
        """At shutdown: keep flushing for a while if the store is down; then report what could not be sent."""
        deadline = time.monotonic() + max(self.grace_period, 10.0)
        while self._pending or self._flush_task is not None:
            if self._flush_task is None:
                self._flush_task = asyncio.get_running_loop().create_task(self._flush_loop())
            assert self._flush_done is not None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._flush_done.wait()), remaining)
        if self._pending:
            log.error(
                "could not report %d finished job(s) before exiting (store unavailable); "
                "they will be rescued when their leases expire: %s",
                len(self._pending),
                ", ".join(j.id for _, j in self._pending[:20]),
            )
            if self._flush_task is not None:
                self._flush_task.cancel()

    # ---- heartbeats and registration -----------------------------------------------------------------------

    def _info(self) -> WorkerInfo:
        now = utcnow()
        return WorkerInfo(
            id=self.worker_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues=tuple(self.queues),
            concurrency=self.concurrency,
            started_at=self._started_at,
            heartbeat_at=now,
            expires_at=now + timedelta(seconds=self.registration_ttl),
            running=(*self._running, *self._buffer),
            version=_version(),
            tasks=self.tasks,
        )

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            await self._heartbeat()

    async def _heartbeat(self) -> None:
        leases: list[Lease] = [ctx.job.lease for ctx in self._running.values()]
        leases.extend(job.lease for job in self._buffer.values())
        leases.extend(f.lease for f, _ in self._pending)
        try:
            if leases:
                states = await self.store.heartbeat(leases, self.lease)
                for state in states:
                    queued = self._buffer.get(state.lease.job_id)
                    if queued is not None and queued.lease_token == state.lease.token:
                        if not state.held:
                            del self._buffer[queued.id]
                            log.warning("job %s (%s): lease lost before it started", queued.id, queued.task)
                        elif state.cancel_requested:
                            self._cancel_buffered(queued)
                        continue
                    ctx = self._running.get(state.lease.job_id)
                    if ctx is None or ctx.job.lease_token != state.lease.token:
                        continue
                    if not state.held:
                        log.warning("job %s (%s): lease lost; stopping it", ctx.job.id, ctx.job.task)
                        self._stop_job(ctx, REASON_LOST)
                    elif state.cancel_requested:
                        log.info("job %s (%s): cancel requested; stopping it", ctx.job.id, ctx.job.task)
                        self._stop_job(ctx, REASON_CANCEL)
            await self.store.register_worker(self._info())
            if self._unavailable_since is not None:
                self._recovered()
        except Exception as exc:
            self._unavailable(exc, "heartbeating")

    def _stop_job(self, ctx: JobContext, reason: str) -> None:
        """Tell a running job to stop. Async handlers are cancelled at once, and process-isolated ones killed (the
        try is reported once the child is gone). A sync handler in a thread cannot be stopped: it sees
        `ctx.cancelled`; on a cancel request or a timeout the worker keeps waiting for it (and keeps its lease, so
        its retry cannot start beside it); on a shutdown or a lost lease it stops waiting."""
        first = ctx._request_cancel(reason)
        spec = self._specs.get(ctx.job.task)
        task = ctx._task
        if task is None or task.done():
            return
        if self._isolated(spec):
            task.cancel()  # kills the child; classified by ctx.cancel_reason
            return
        if not first:
            return
        if spec is None or spec.is_async:
            task.cancel()
        elif reason == REASON_TIMEOUT:
            assert self._loop is not None
            self._loop.create_task(overrun(self.app, ctx.job, spec))
        elif reason != REASON_CANCEL:
            task.cancel()  # shutdown past its grace, or lease lost: stop waiting for the thread

    def _cancel_all(self, reason: str) -> None:
        for ctx in list(self._running.values()):
            self._stop_job(ctx, reason)

    def _on_event(self, event: Event) -> None:
        """Event-bus listener (runs in the publisher's thread): the local cancel fast path."""
        if self._closed:
            return
        if event.type == "cancel":
            job_id = event.job_id
            if job_id is not None and (job_id in self._running or job_id in self._buffer) and self._loop is not None:
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._cancel_local, job_id, event.lease_token)

    def _cancel_buffered(self, job: Job) -> None:
        if self._buffer.pop(job.id, None) is not None:
            log.info("job %s (%s): cancel requested before it started", job.id, job.task)
            self._complete(cancelled_finish(job, self.worker_id), job)

    def _cancel_local(self, job_id: str, token: str | None = None) -> None:
        """A cancel requested in this process. Fenced like the store's: a cancel meant for another claim of the
        job (`token`: the claim that was processing when it was asked) does not stop the run held here."""
        queued = self._buffer.get(job_id)
        if queued is not None:
            if token is None or queued.lease_token == token:
                self._cancel_buffered(queued)
            return
        ctx = self._running.get(job_id)
        if ctx is not None and (token is None or ctx.job.lease_token == token):
            log.info("job %s (%s): cancel requested; stopping it", job_id, ctx.job.task)
            self._stop_job(ctx, REASON_CANCEL)

    # ---- shutdown ------------------------------------------------------------------------------------------

    async def _sleep_or_stop(self, seconds: float) -> None:
        assert self._stop_event is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)

    async def _drain_running(self) -> None:
        tasks = [ctx._task for ctx in self._running.values() if ctx._task is not None]
        if not tasks:
            return
        if not self._force and self.grace_period > 0:
            _done, pending = await asyncio.wait(tasks, timeout=self.grace_period)
            tasks = list(pending)
        if tasks:
            log.warning(
                "grace period over: handing %d unfinished job(s) back to the queue: %s",
                len(tasks),
                ", ".join(list(self._running)[:20]),
            )
            stuck_sync = [
                ctx.job.id
                for ctx in self._running.values()
                if (spec := self._specs.get(ctx.job.task)) is not None
                and not spec.is_async
                and not self._isolated(spec)
            ]
            self._cancel_all(REASON_SHUTDOWN)
            await asyncio.wait(tasks, timeout=5.0)
            if stuck_sync:
                log.warning(
                    "%d sync handler(s) were still running in threads (%s); they see ctx.cancelled, and the "
                    "process exits once they return",
                    len(stuck_sync),
                    ", ".join(stuck_sync[:20]),
                )

    # ---- services ------------------------------------------------------------------------------------------

    def _start_services(self) -> None:
        """Campaign for the maintenance roles: this worker runs the rescuer, pruner and scheduler only while the
        store has elected it (maintenance/leader.py), so a fleet of workers runs one of each."""
        from conveyor.maintenance import elected_services

        self._services = elected_services(
            self.app,
            candidate=self.worker_id,
            ttl=self.leader_lease,
            rescue_interval=self.rescue_interval,
            on_change=self._leadership_changed,
        )
        for role in self._services:
            role.start()

    def _leadership_changed(self, role: str, leading: bool) -> None:
        if leading:
            self.leading.add(role)
        else:
            self.leading.discard(role)

    async def _stop_services(self) -> None:
        for role in self._services:
            with contextlib.suppress(Exception):
                await role.stop()
        self._services = []

    # ---- signals -------------------------------------------------------------------------------------------

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> list[int]:
        if not self.install_signal_handlers or threading.current_thread() is not threading.main_thread():
            return []
        installed: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, int(sig))
                installed.append(int(sig))
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        return installed

    @staticmethod
    def _remove_signals(loop: asyncio.AbstractEventLoop, signals: list[int]) -> None:
        for sig in signals:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)

    # ---- store outages -------------------------------------------------------------------------------------

    def _unavailable(self, exc: BaseException, doing: str) -> None:
        now = time.monotonic()
        first = self._unavailable_since is None
        if first:
            self._unavailable_since = now
        if first or now - self._last_warning > 30.0:
            self._last_warning = now
            if isinstance(exc, StoreUnavailable):
                log.warning("store unavailable while %s (%s); retrying", doing, exc.message)
            else:
                log.error("error while %s; retrying", doing, exc_info=exc)

    def _recovered(self) -> None:
        if self._unavailable_since is not None:
            log.warning("store reachable again after %.1fs", time.monotonic() - self._unavailable_since)
        self._unavailable_since = None


class Signal:
    """A set-once-style event usable from every loop and thread: `await sig.wait()` (any loop), `sig.wait_sync()`
    (threads), `sig.is_set()`. The worker's loop is not the caller's loop when the worker runs on an app's home
    loop, so a plain asyncio.Event would not do."""

    def __init__(self) -> None:
        self._flag = threading.Event()
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def is_set(self) -> bool:
        return self._flag.is_set()

    def set(self) -> None:
        with self._lock:
            self._flag.set()
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, fut)

    def clear(self) -> None:
        self._flag.clear()

    async def wait(self) -> bool:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._flag.is_set():
                return True
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, fut))
        try:
            await fut
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._waiters.remove((loop, fut))
        return True

    def wait_sync(self, timeout: float | None = None) -> bool:
        return self._flag.wait(timeout)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _version() -> str:
    try:
        from conveyor import __version__

        return __version__
    except Exception:  # pragma: no cover
        return ""


def run(app: Conveyor, **options: Any) -> None:
    """Run a worker in the foreground (convenience for scripts): `conveyor.worker.run(app, concurrency=20)`."""
    app.run_worker(**options)
