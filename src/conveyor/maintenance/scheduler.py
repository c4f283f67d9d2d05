"""Cron: enqueue a task on a schedule, each occurrence exactly once however many processes run the scheduler.

Schedules come from two places: declared in code (`app.cron("30 2 * * *", "reset", timezone="Europe/Berlin")`)
and made at runtime (`app.schedules.create(...)`, REST, CLI, UI), which the store keeps; the scheduler reads both
at every tick (conveyor/schedules.py), so a runtime change takes effect within a tick. Specs, time zones and the
DST rules: conveyor/cron.py and docs/cron.md.

Once per occurrence, guaranteed by the store: the job of occurrence `t` of schedule `name` has an id derived from
(`name`, `t`) (`cron.occurrence_id`), and every store refuses a second job with an id already taken, whatever state
the first one is in (conformance: test_store_enqueue, test_store_schedules). So however many schedulers try to
enqueue an occurrence — a leader and a new one during a fail-over, two after a partition, four with their clocks
apart — one job is stored, and nothing rests on timing. The id is also crash-safe: there is no "claimed, not yet
enqueued" state that a crash could strand. After the job, the scheduler records the run (`Store.record_schedule_run`,
keyed by (schedule, occurrence): the history the API, CLI and UI show) and the last occurrence it handled
(`cron:last:<name>` in the store's key-value space).

One scheduler runs at a time in a normal deployment (the elected "scheduler" role, maintenance/leader.py). When a
scheduler first sees a schedule (it starts, takes over, or the schedule was made, changed or resumed), it resumes
after the last occurrence any scheduler handled:

* occurrences within the fail-over grace (`catch_up` seconds before this scheduler started: about two election
  leases) are always enqueued — a hand-over is not an outage;
* older missed ones — nothing ran — follow the schedule's back-fill policy: `none` (the default, and what Conveyor
  always did) skips them and records one skipped run saying how many; `latest` enqueues the most recent one; `all`
  enqueues each of them. Only occurrences within `backfill_window` of now count (24 h by default), and `all`
  enqueues at most MAX_BACKFILL of them (the newest);
* a schedule without a record, or made, changed or resumed after its last record, starts from then: no occurrence
  before its creation, its last change or its resume is back-filled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from conveyor.cron import (
    EPOCH,
    MAX_BACKFILL,
    Backfill,
    CronSchedule,
    Schedule,
    make_schedule,
    occurrence_id,
    parse_schedule,
)
from conveyor.enqueue import enqueue
from conveyor.errors import ConveyorError, StoreUnavailable, ValidationError
from conveyor.maintenance.base import Service
from conveyor.model import ScheduleRun, utcnow
from conveyor.runtime import SupportsRuntime
from conveyor.schedules import all_schedules

__all__ = [
    "EPOCH",
    "CronSchedule",
    "Schedule",
    "Scheduler",
    "last_key",
    "make_schedule",
    "occurrence_id",
    "parse_schedule",
]

log = logging.getLogger("conveyor.scheduler")

MAX_WALK = 200_000
"""Occurrences walked at most when looking back over a back-fill window (an `@every 1s` schedule over 24 h)."""
MAX_COUNT = 10_000
"""Missed occurrences older than the window are counted up to this many (for the skipped run's note)."""


@dataclass(slots=True)
class _Plan:
    """What this scheduler will fire next for one schedule: back-filled occurrences first, then `next`."""

    version: tuple[object, ...]
    backlog: list[datetime]
    next: datetime


class Scheduler(Service):
    """Enqueues due occurrences of every schedule (`app.cron` and the store's runtime ones). Ticks every
    `interval` seconds (1 s by default). `catch_up`: the fail-over grace in seconds (module doc)."""

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
        self._start = now or utcnow()
        self._plans: dict[str, _Plan] = {}
        self.catch_up = catch_up
        self.enqueued = 0
        self.duplicates = 0
        self.skipped = 0

    async def tick(self, now: datetime | None = None) -> None:
        now = now or utcnow()
        schedules = await all_schedules(self.runtime)
        live = {s.name for s in schedules if s.enabled}
        for name in [n for n in self._plans if n not in live]:
            del self._plans[name]  # deleted or paused: a resume plans afresh (from the resume)
        for cron in schedules:
            if not cron.enabled:
                continue
            try:
                await self._run_schedule(cron, now)
            except StoreUnavailable:
                raise
            except Exception:
                log.exception("cron %s: could not be scheduled; trying again next tick", cron.name)

    async def _run_schedule(self, cron: CronSchedule, now: datetime) -> None:
        version = (cron.spec, cron.timezone, cron.updated_at)
        plan = self._plans.get(cron.name)
        if plan is None or plan.version != version:
            plan = self._plans[cron.name] = await self._plan(cron, now, version)
        while plan.backlog:
            await self._fire(cron, plan.backlog[0])
            plan.backlog.pop(0)
        while plan.next <= now:
            await self._fire(cron, plan.next)
            plan.next = cron.next_after(plan.next)

    async def _plan(self, cron: CronSchedule, now: datetime, version: tuple[object, ...]) -> _Plan:
        """Where this scheduler starts for a schedule (module doc): the back-filled occurrences and the next one."""
        last = await self._last(cron.name)
        since = last
        if cron.updated_at is not None and (since is None or since < cron.updated_at):
            since = cron.updated_at  # made, changed or resumed after its last run: nothing before that is missed
        if since is None:
            return _Plan(version, [], cron.next_after(self._start))
        grace = self._start - timedelta(seconds=self.catch_up)
        if since >= grace:
            return _Plan(version, [], cron.next_after(since))
        # Occurrences in (since, grace] were missed while no scheduler ran: the back-fill policy decides.
        window_from = max(since, now - timedelta(seconds=cron.backfill_window))
        missed = self._occurrences(cron, window_from, grace)
        backlog: list[datetime] = []
        if cron.backfill is Backfill.ALL:
            backlog = missed[-MAX_BACKFILL:]
        elif cron.backfill is Backfill.LATEST:
            backlog = missed[-1:]
        skipped = len(missed) - len(backlog) + self._count_before(cron, since, window_from)
        if skipped:
            self.skipped += skipped
            at = (missed[: -len(backlog)] if backlog else missed)[-1:] or [grace]
            note = f"skipped {skipped} missed occurrence{'s' if skipped != 1 else ''} (back-fill {cron.backfill.value})"
            log.info("cron %s: %s", cron.name, note)
            await self.runtime.store.record_schedule_run(ScheduleRun(cron.name, at[0], job_id=None, note=note))
        return _Plan(version, backlog, cron.next_after(max(since, grace)))

    def _occurrences(
        self, cron: CronSchedule, after: datetime, until: datetime, limit: int = MAX_WALK
    ) -> list[datetime]:
        found: list[datetime] = []
        at = after
        for _ in range(limit):
            at = cron.next_after(at)
            if at > until:
                break
            found.append(at)
        return found

    def _count_before(self, cron: CronSchedule, since: datetime, window_from: datetime) -> int:
        """Missed occurrences older than the back-fill window (counted for the skipped note, up to MAX_COUNT)."""
        if window_from <= since:
            return 0
        return len(self._occurrences(cron, since, window_from, MAX_COUNT))

    async def _last(self, name: str) -> datetime | None:
        recorded = await self.runtime.store.kv_get(last_key(name))
        if recorded is None:
            return None
        try:
            return datetime.fromisoformat(recorded)
        except ValueError:
            return None

    async def _fire(self, cron: CronSchedule, at: datetime) -> None:
        job_id = occurrence_id(cron.name, at)
        note = None
        try:
            job = await enqueue(self.runtime, cron.task, cron.payload, {**cron.options, "job_id": job_id})
        except ValidationError as exc:
            if exc.field != "id":
                note = f"not enqueued: {exc}"
                log.error("cron %s: occurrence %s not enqueued: %s", cron.name, at.isoformat(), exc)
            else:
                self.duplicates += 1  # this occurrence's job exists already: another scheduler enqueued it
                log.debug("cron %s: occurrence %s was enqueued already (job %s)", cron.name, at.isoformat(), job_id)
        except StoreUnavailable:
            raise
        except ConveyorError as exc:
            note = f"not enqueued: {exc}"
            log.error("cron %s: occurrence %s not enqueued: %s", cron.name, at.isoformat(), exc)
        else:
            self.enqueued += 1
            log.info("cron %s: enqueued %s for %s (job %s)", cron.name, cron.task, at.isoformat(), job.id)
        run = ScheduleRun(cron.name, at, job_id=None if note else job_id, note=note)
        await self.runtime.store.record_schedule_run(run)
        await self.runtime.store.kv_set(last_key(cron.name), at.isoformat())


def last_key(name: str) -> str:
    """The key-value entry holding the last occurrence of `name` that a scheduler handled."""
    return f"cron:last:{name}"
