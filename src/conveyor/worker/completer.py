"""The completer (as River's internal/jobcompleter): finished jobs leave their slot at once and hand a `Finish`
here; everything that accumulated is written in one `store.finish` call — immediately when idle, batched while a
flush is in flight. A flush that fails (store down) is retried with backoff until it lands; the heartbeat keeps
extending the leases of unflushed jobs (`leases()`) so the rescuer does not take them meanwhile. A report the
store refuses (its lease token is no longer the job's: rescued, claimed again after a crash of the store, deleted)
is logged as a warning with the job's state now; the store keeps that try as a LOST record of its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from conveyor.events import Event
from conveyor.execution import log_outcome, refused_message
from conveyor.model import Finish, Job, JobFilter, JobStatus, Lease
from conveyor.worker.outage import MAX_BACKOFF, Outage
from conveyor.worker.state import RunState, WorkerSettings

log = logging.getLogger("conveyor.worker")

MAX_FLUSH = 1000  # Finish values per store.finish call


class Completer:
    """Batches the outcomes of finished jobs into `store.finish` calls; never drops one while the process lives."""

    def __init__(
        self,
        settings: WorkerSettings,
        state: RunState,
        outage: Outage,
        *,
        listener: Callable[[Event], Any],
        wake_at: Callable[[datetime], bool],
        wake: Callable[[], None],
    ) -> None:
        """`listener`: the worker's own event listener (its events need not be built for it alone); `wake_at(t)`:
        have the fetch loop claim at t (a retry reported here), True if t has come; `wake()`: claim again now."""
        self.settings = settings
        self.state = state
        self.outage = outage
        self.listener = listener
        self.wake_at = wake_at
        self.wake = wake
        self.pending: list[tuple[Finish, Job]] = []
        """Outcomes not written yet, oldest first."""
        self.reported = 0
        """Outcomes the store answered (applied or refused)."""
        self._flush_task: asyncio.Task[None] | None = None
        self._flush_done: asyncio.Event | None = None
        self._reports: set[asyncio.Task[None]] = set()  # warnings about refused reports being written

    def start(self) -> None:
        """Called on the worker's loop as it starts."""
        self._flush_done = asyncio.Event()
        self._flush_done.set()
        self.pending = []

    @property
    def backlog(self) -> int:
        return len(self.pending)

    def leases(self) -> Iterator[Lease]:
        return (finish.lease for finish, _ in self.pending)

    def complete(self, finish: Finish, job: Job) -> None:
        self.pending.append((finish, job))
        if self._flush_task is None:
            assert self._flush_done is not None
            self._flush_done.clear()
            loop = self.state.loop
            assert loop is not None
            self._flush_task = loop.create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        """Flush accumulated Finish values until none are left; retry a failed flush with backoff (never drop)."""
        delay = 0.05
        wake_after = False
        store = self.settings.store
        try:
            while self.pending:
                batch = self.pending[:MAX_FLUSH]
                try:
                    applied = await store.finish([f for f, _ in batch])
                except Exception as exc:
                    self.outage.unavailable(exc, f"reporting {len(batch)} finished job(s)")
                    if self.state.closed:
                        return
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, MAX_BACKOFF)
                    continue
                delay = 0.05
                if self.outage.down:
                    self.outage.recovered()
                del self.pending[: len(batch)]
                self.reported += len(batch)
                events = self.settings.runtime.events
                publish = events.publish_run if events.is_observed(ignore=self.listener) else None
                refused: list[tuple[Finish, Job]] = []
                for (finish, job), ok in zip(batch, applied, strict=False):
                    attempt = finish.attempt
                    if ok and attempt is not None:
                        log_outcome(finish, job)
                        if publish is not None:
                            publish(job, attempt)
                    if job.group_key is not None or job.user_id is not None or job.concurrency_key is not None:
                        wake_after = True  # the next job of its lane, or of its concurrency key, may be claimable now
                    elif finish.status is JobStatus.PENDING and not finish.release and finish.run_at is not None:
                        wake_after = self.wake_at(finish.run_at) or wake_after  # a retry: claim it when due
                    if not ok:
                        refused.append((finish, job))
                if refused:
                    self.log_refused(refused)
        finally:
            self._flush_task = None
            if self._flush_done is not None:
                self._flush_done.set()
            if wake_after:
                self.wake()  # e.g. a lane's next job, which may be due later

    def log_refused(self, refused: list[tuple[Finish, Job]]) -> None:
        """Warn about reports the store refused (stale lease token), each with the job's state now; off the flush
        path (one read of the jobs, in the background)."""
        loop = self.state.loop
        if loop is None or self.state.closed:
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
            page = await self.settings.store.list_jobs(
                JobFilter(ids=[job.id for _, job in refused]), limit=len(refused)
            )
            now = {job.id: job for job in page.items}
        except Exception:  # the store is down again: say what we know
            known = False
        for finish, job in refused:
            log.warning("%s", refused_message(finish, job, now.get(job.id), known=known))

    async def final_flush(self) -> None:
        """At shutdown: keep flushing for a while if the store is down; then report what could not be sent."""
        deadline = time.monotonic() + max(self.settings.grace_period, 10.0)
        while self.pending or self._flush_task is not None:
            if self._flush_task is None:
                self._flush_task = asyncio.get_running_loop().create_task(self._flush_loop())
            assert self._flush_done is not None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._flush_done.wait()), remaining)
        if self.pending:
            log.error(
                "could not report %d finished job(s) before exiting (store unavailable); "
                "they will be rescued when their leases expire: %s",
                len(self.pending),
                ", ".join(j.id for _, j in self.pending[:20]),
            )
            if self._flush_task is not None:
                self._flush_task.cancel()
