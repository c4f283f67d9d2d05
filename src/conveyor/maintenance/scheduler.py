"""Cron: enqueue a task on a schedule, each occurrence exactly once however many processes run the scheduler.

Register with `app.cron("*/5 * * * *", "task", payload, name=None, **enqueue_options)`. Specs are 5-field crontab
lines, the descriptors `@yearly @annually @monthly @weekly @daily @midnight @hourly`, or `@every <duration>`
(`@every 30s`, `@every 5m`, `@every 1h30m`; occurrences aligned to multiples of the duration since the Unix epoch,
so every process computes the same instants). Times are UTC.

Once per occurrence, guaranteed by the store: the job of occurrence `t` of schedule `name` has an id derived from
(`t`, `name`) (`ids.derived_job_id`), and every store refuses a second job with an id already taken, whatever state
the first one is in (conformance: test_store_enqueue). So however many schedulers try to enqueue an occurrence — a
leader and a new one during a fail-over, two after a partition — one job is stored, and nothing rests on timing.
The id is also crash-safe: there is no "claimed, not yet enqueued" state that a crash could strand.

One scheduler runs at a time (the elected "scheduler" role, maintenance/leader.py). After each occurrence it
records the last one enqueued (`cron:last:<name>` in the store's key-value space), and a scheduler that starts
resumes after it, catching up on occurrences missed during a fail-over; never further back than `catch_up` seconds
(a cluster that was down for a day does not flood the queue with missed runs), and a schedule without a record
starts from now.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from conveyor.cron import EPOCH, CronSchedule, Schedule, make_schedule, parse_schedule
from conveyor.enqueue import enqueue
from conveyor.errors import ValidationError
from conveyor.ids import derived_job_id
from conveyor.maintenance.base import Service
from conveyor.model import utcnow
from conveyor.runtime import SupportsRuntime

__all__ = ["CronSchedule", "Schedule", "Scheduler", "last_key", "make_schedule", "occurrence_id", "parse_schedule"]

log = logging.getLogger("conveyor.scheduler")


class Scheduler(Service):
    """Enqueues due occurrences of the runtime's `schedules` (`app.cron`). Ticks every `interval` seconds (1 s by
    default)."""

    name = "scheduler"

    def __init__(
        self,
        app: SupportsRuntime,
        *,
        interval: float = 1.0,
        owner: str = "",
        now: datetime | None = None,
        catch_up: float = 0.0,
    ) -> None:
        super().__init__(interval)
        self.runtime = app.runtime
        self.owner = owner or "scheduler"
        start = now or utcnow()
        self._next: dict[str, datetime] = {}
        self._start = start
        self.catch_up = catch_up
        self.enqueued = 0
        self.duplicates = 0

    def _schedules(self) -> dict[str, CronSchedule]:
        return self.runtime.schedules

    async def tick(self, now: datetime | None = None) -> None:
        now = now or utcnow()
        for name, cron in list(self._schedules().items()):
            nxt = self._next.get(name)
            if nxt is None:
                nxt = self._next[name] = cron.next_after(await self._resume_point(name, now))
            while nxt <= now:
                await self._fire(cron, nxt)
                nxt = self._next[name] = cron.next_after(nxt)

    async def _resume_point(self, name: str, now: datetime) -> datetime:
        """Where this scheduler starts for a schedule: after the last occurrence any scheduler enqueued, if that is
        within `catch_up` seconds, else at its own start."""
        start = self._start
        if self.catch_up <= 0:
            return start
        recorded = await self.runtime.store.kv_get(last_key(name))
        if recorded is None:
            return start
        try:
            last = datetime.fromisoformat(recorded)
        except ValueError:
            return start
        return max(last, start - timedelta(seconds=self.catch_up))

    async def _fire(self, cron: CronSchedule, at: datetime) -> None:
        job_id = occurrence_id(cron.name, at)
        try:
            job = await enqueue(self.runtime, cron.task, cron.payload, {**cron.options, "job_id": job_id})
        except ValidationError as exc:
            if exc.field != "id":
                raise
            self.duplicates += 1  # this occurrence's job exists already: another scheduler enqueued it
            log.debug("cron %s: occurrence %s was enqueued already (job %s)", cron.name, at.isoformat(), job_id)
        else:
            self.enqueued += 1
            log.info("cron %s: enqueued %s for %s (job %s)", cron.name, cron.task, at.isoformat(), job.id)
        await self.runtime.store.kv_set(last_key(cron.name), at.isoformat())


def occurrence_id(name: str, at: datetime) -> str:
    """The job id of occurrence `at` of the schedule `name` (the same in every process)."""
    at_ms = int((at - EPOCH) / timedelta(milliseconds=1))
    return derived_job_id(at_ms, f"cron\x00{name}\x00{at.isoformat()}")


def last_key(name: str) -> str:
    """The key-value entry holding the last occurrence of `name` that a scheduler enqueued."""
    return f"cron:last:{name}"
