"""The producer (as River's producer.go): it decides when to claim and how much, and feeds the executor's slots.

Whenever slots are free and work may exist, it claims `min(free slots, batch)` jobs in one store call and starts
one per slot. The claim names the tasks this worker registered (a job of any other task is left for a worker that
has it); which namespaces run automatically is decided by the store inside the claim, from the settings as they are
at that moment, never from a copy kept here. It re-claims at once while claims come back full, then sleeps until
woken: by the store (`wait_for_jobs`: an in-process enqueue at once, NOTIFY/pub-sub, or the poll interval), by a
timer to the next due job (`next_due`), or by a slot coming free while the pool was full. While it waits it offers
the store an `IdleClaim`: on stores with hand-off (memory, PostgreSQL, Redis) an enqueue in this process claims for
it in the same round trip and delivers the jobs (`take_handoff`), so they start without a wake-up and a claim of
their own. While handlers are fast (< 5 ms on average) it claims ahead: up to `prefetch` extra jobs wait in its
buffer for the next free slot, so one round trip carries several batches (the claim, not the handler, bounds
throughput then); jobs still waiting after `buffer_wait` are handed back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from conveyor.execution import cancelled_finish
from conveyor.model import Finish, Job, JobStatus, Lease, utcnow
from conveyor.store.base import IdleClaim, Store
from conveyor.worker.completer import MAX_FLUSH, Completer
from conveyor.worker.executor import FAST_JOB, Executor
from conveyor.worker.outage import MAX_BACKOFF, Outage
from conveyor.worker.state import RunState, WorkerSettings

log = logging.getLogger("conveyor.worker")

BUFFER_WAIT = 1.0  # seconds: prefetched jobs still waiting for a slot after this are handed back


async def claim_in_order(
    store: Store,
    order: Sequence[str],
    worker_id: str,
    want: int,
    lease: timedelta,
    *,
    tasks: Sequence[str] | None = None,
    namespaces: Sequence[str] | None = None,
) -> list[Job]:
    """Weighted or strict queues (QueuePlan): fill the claim from the first queue of `order` that has claimable
    jobs, then from the next, one store claim per queue tried (a queue that answers nothing costs a round trip)."""
    jobs: list[Job] = []
    for queue in order:
        jobs += await store.claim(worker_id, [queue], want - len(jobs), lease, tasks=tasks, namespaces=namespaces)
        if len(jobs) >= want:
            break
    return jobs


class Producer:
    """Claims jobs for the executor's slots (and its prefetch buffer)."""

    def __init__(
        self, settings: WorkerSettings, state: RunState, outage: Outage, executor: Executor, completer: Completer
    ) -> None:
        self.settings = settings
        self.state = state
        self.outage = outage
        self.executor = executor
        self.completer = completer
        self.buffer: dict[str, Job] = {}
        """Claimed jobs waiting for a slot (prefetch; only while jobs are fast), oldest first."""
        self.handed_off = 0
        """Jobs an enqueue in this process claimed for this worker while it waited (store hand-off)."""
        self._buffer_since = 0.0  # loop.time() when the buffer last went from empty to non-empty
        self._full = False
        self._offer: IdleClaim | None = None  # while the fetch loop waits, on stores with hand-off
        self._timer: asyncio.TimerHandle | None = None  # wakes the fetch loop when the next known job is due
        self._due_stale = True  # something may have changed when the next job is due: ask next_due again
        self._due_spins = 0
        self._refreshing: asyncio.Task[None] | None = None  # a next_due asked after a hand-off

    # ---- claiming ------------------------------------------------------------------------------------------

    async def fetch_loop(self) -> None:
        """Claim until the shutdown begins."""
        state = self.state
        wake = state.wake
        assert wake is not None
        settings = self.settings
        store = settings.store
        delay = 0.05
        wake.set()  # claim at once on start
        self._due_stale = True
        while not state.stopping:
            if not wake.is_set():
                if self._due_stale and not self._full:
                    await self._refresh_due()
                    if wake.is_set():
                        continue
                self._offer_idle()
            await wake.wait()
            self.withdraw_idle()
            wake.clear()
            while not state.stopping:
                want = self.claim_size()
                if want <= 0:
                    self._full = True
                    break
                if self.completer.backlog > 4 * MAX_FLUSH:  # completer is behind (store slow or down): back off
                    self._full = True
                    break
                try:
                    if settings.queue_plan is None:  # one claim across every queue (the common case)
                        jobs = await store.claim(
                            settings.worker_id,
                            settings.queues,
                            want,
                            settings.lease,
                            tasks=settings.tasks,
                            namespaces=settings.namespaces,
                        )
                    else:
                        jobs = await claim_in_order(
                            store,
                            settings.queue_plan.order(),
                            settings.worker_id,
                            want,
                            settings.lease,
                            tasks=settings.tasks,
                            namespaces=settings.namespaces,
                        )
                except Exception as exc:
                    self.outage.unavailable(exc, "claiming jobs")
                    await state.sleep_or_stop(delay)
                    delay = min(delay * 2, MAX_BACKOFF)
                    continue
                delay = 0.05
                if self.outage.down:
                    self.outage.recovered()
                if jobs:
                    self._due_spins = 0
                    self.start_jobs(jobs)
                if len(jobs) < want:
                    break

    def claim_size(self) -> int:
        """How many jobs to claim now (0: wait until slots free up).

        Claim-ahead: while handlers are fast (moving average under FAST_JOB), the worker holds up to `prefetch`
        claimed jobs ready for the next free slots, and waits until a full `batch_size + prefetch` fits before
        claiming, so each round trip carries as many jobs as possible (the claim, not the handler, is the
        bottleneck then). Slow handlers get no prefetch: a claimed job must not wait behind them while another
        worker could run it; then any free slot is claimed for at once."""
        settings = self.settings
        free = self.executor.free
        if self.executor.avg_run >= FAST_JOB or settings.prefetch == 0:
            return min(free, settings.batch_size) if free > 0 and not self.buffer else 0
        room = free + settings.prefetch - len(self.buffer)
        if room >= settings.batch_size + settings.prefetch or (free > 0 and not self.buffer):
            return min(room, settings.batch_size + settings.prefetch)
        return 0

    def start_jobs(self, jobs: list[Job]) -> None:
        """Jobs just claimed: into free slots, the rest into the buffer (handed back if a shutdown has begun)."""
        if self.state.stopping:  # claimed while the stop began: hand them straight back
            for job in jobs:
                self.completer.complete(Finish(lease=job.lease, status=JobStatus.PENDING, release=True), job)
            return
        free = self.executor.free
        for job in jobs[:free]:
            self.executor.launch(job)
        if len(jobs) > free:
            if not self.buffer:
                assert self.state.loop is not None
                self._buffer_since = self.state.loop.time()
            for job in jobs[free:]:
                self.buffer[job.id] = job

    def slot_freed(self) -> None:
        """A job left its slot: start the next buffered job there, or claim again if the pool was full."""
        buffer = self.buffer
        if buffer and not self.state.stopping:
            self.executor.launch(buffer.pop(next(iter(buffer))))
        if self._full and self.claim_size() > 0:
            self._full = False
            self.state.wake_up()

    # ---- when to claim -------------------------------------------------------------------------------------

    async def _refresh_due(self) -> None:
        """Ask the store when the next job this worker could claim falls due, and set a timer for it: a scheduled
        job or a retry then starts on time instead of at the next poll. Asked after a wake-up (an enqueue here or
        in another process, the poll timeout, a timer) once the claims it caused are done; the answer is measured
        by the store's clock, so a worker whose clock is off still claims when the store thinks the job is due."""
        self._due_stale = False
        settings = self.settings
        try:
            due = await settings.store.next_due(settings.queues, tasks=settings.tasks, namespaces=settings.namespaces)
        except Exception as exc:
            self.outage.unavailable(exc, "reading when the next job is due")
            return
        if due is None:
            return
        if due <= 0:
            # Due already: claim again, once. A second "due now" right after a claim that found nothing means the
            # store counts a job its claim skips (a race with another worker, or a rule this worker's claim adds):
            # wait for the next wake-up or poll rather than spin.
            self._due_spins += 1
            if self._due_spins <= 1 and self.state.wake is not None:
                self._due_stale = True
                self.state.wake.set()
            return
        self._due_spins = 0
        self._arm_timer(due)

    async def waiter_loop(self) -> None:
        """Turn store wake-ups (local enqueue, NOTIFY, pub-sub, or the poll timeout) into fetch-loop wake-ups."""
        state = self.state
        wake = state.wake
        assert wake is not None
        settings = self.settings
        while not state.stopping:
            try:
                await settings.store.wait_for_jobs(settings.poll_interval)
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(settings.poll_interval)
            self._due_stale = True  # whatever woke us may have scheduled jobs: ask for the next due time again
            wake.set()

    def wake_soon(self) -> None:
        """Claim again now, and ask when the next job falls due afterwards (e.g. a lane's next job, due later)."""
        if self.state.wake is not None:
            self._due_stale = True
            self.state.wake.set()

    def wake_at(self, when: datetime) -> bool:
        """Make the fetch loop claim again at `when` (a retry this worker reported). True when it has come."""
        delay = (when - utcnow()).total_seconds()
        if delay <= 0:
            return True
        self._arm_timer(delay)
        return False

    def _arm_timer(self, delay: float) -> None:
        """Wake the fetch loop `delay` seconds from now, unless a timer already fires sooner (one timer: the
        earliest known due time; when it fires the loop claims and asks `next_due` for the one after)."""
        loop = self.state.loop
        if loop is None or self.state.closed:
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
        self.state.wake_up()

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._refreshing is not None:
            self._refreshing.cancel()

    # ---- hand-off ------------------------------------------------------------------------------------------

    def _offer_idle(self) -> None:
        """Tell the store this worker waits, and for what: an enqueue in this process may then claim for it in the
        same round trip and hand the jobs over (`take_handoff`), by the rules of `claim` (the store decides there
        which namespaces run automatically, as in every claim)."""
        settings = self.settings
        if not settings.store.supports_handoff or self.state.stopping:
            return
        want = self.claim_size()
        if want <= 0:
            return
        assert self.state.loop is not None
        offer = IdleClaim(
            worker_id=settings.worker_id,
            queues=tuple(settings.queues),
            limit=want,
            lease=settings.lease,
            namespaces=settings.namespaces,
            exclude_namespaces=(),
            deliver=self.take_handoff,
            loop=self.state.loop,
            tasks=settings.tasks,
        )
        self._offer = offer
        settings.store.offer_idle(offer)

    def withdraw_idle(self) -> None:
        offer, self._offer = self._offer, None
        if offer is not None:
            self.settings.store.withdraw_idle(offer)

    def take_handoff(self, jobs: list[Job]) -> bool:
        """Jobs an enqueue claimed for this worker while it waited. Refused once stopping (the store hands them
        back without counting an attempt). Taken jobs start at once, or wait in the prefetch buffer."""
        if self.state.stopping or self.state.closed:
            return False
        if self.outage.down:
            self.outage.recovered()
        self.handed_off += len(jobs)
        self.start_jobs(jobs)
        offer = self._offer
        if offer is not None:  # still waiting: offer the slots that are left
            self.withdraw_idle()
            self._offer_idle()
        if (offer is None or len(jobs) < offer.limit) and self.state.loop is not None:
            # The enqueue may have left jobs this worker can claim only later (a rate limit's next token, a delay)
            # and, having handed some over, woke nobody: ask when the next one falls due, as after a claim.
            self.state.loop.call_soon_threadsafe(self._refresh_due_soon)
        return True

    def _refresh_due_soon(self) -> None:
        if self.state.stopping or self.state.closed or self._refreshing is not None:
            return
        assert self.state.loop is not None
        self._refreshing = self.state.loop.create_task(self._refresh_due())
        self._refreshing.add_done_callback(self._refreshed)

    def _refreshed(self, task: asyncio.Task[None]) -> None:
        self._refreshing = None

    # ---- the buffer ----------------------------------------------------------------------------------------

    def check_buffer(self, now: float) -> None:
        """Called by the watchdog (`now`: the loop's time). The slots stayed busy (handlers slower than they
        were): give the prefetched jobs back so that another worker can run them, and stop prefetching until
        handlers are fast again."""
        if self.buffer and now - self._buffer_since > self.settings.buffer_wait:
            log.info("handing back %d prefetched job(s): no slot freed up in time", len(self.buffer))
            self.executor.avg_run = max(self.executor.avg_run, now - self._buffer_since)
            self.release_buffer()

    def release_buffer(self) -> None:
        """Hand prefetched jobs back (shutdown, or waiting too long): they never started, so no attempt is
        counted."""
        buffered, self.buffer = self.buffer, {}
        for job in buffered.values():
            self.completer.complete(Finish(lease=job.lease, status=JobStatus.PENDING, release=True), job)

    def leases(self) -> list[Lease]:
        return [job.lease for job in self.buffer.values()]

    def lease_lost(self, job: Job) -> None:
        """The heartbeat found that a buffered job's lease was taken (it never started here)."""
        if self.buffer.pop(job.id, None) is not None:
            log.warning("job %s (%s): lease lost before it started", job.id, job.task)

    def cancel(self, job_id: str, token: str | None) -> bool:
        """A cancel requested for a buffered job (fenced by `token` like the executor's); True if it was here."""
        queued = self.buffer.get(job_id)
        if queued is None:
            return False
        if token is None or queued.lease_token == token:
            self.cancel_buffered(queued)
        return True

    def cancel_buffered(self, job: Job) -> None:
        if self.buffer.pop(job.id, None) is not None:
            log.info("job %s (%s): cancel requested before it started", job.id, job.task)
            self.completer.complete(cancelled_finish(job, self.settings.worker_id), job)
