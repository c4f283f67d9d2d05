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
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from croniter import croniter

from conveyor.errors import ValidationError
from conveyor.maintenance.base import Service
from conveyor.model import JSON, check_public_task_name, utcnow, validate_name

if TYPE_CHECKING:
    from conveyor.app import Conveyor

log = logging.getLogger("conveyor.scheduler")

_EVERY_RE = re.compile(r"^@every\s+((?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+)$")
_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Schedule:
    """When a spec fires: `next_after(t)` is the first occurrence strictly after t."""

    def __init__(self, spec: str) -> None:
        self.spec = spec.strip()
        self._every: float | None = None
        match = _EVERY_RE.match(self.spec)
        if match:
            seconds = sum(float(n) * _UNITS[u] for n, u in _PART_RE.findall(match.group(1)))
            if seconds < 1:
                raise ValidationError(f"cron spec {spec!r}: @every needs at least 1s", field="spec")
            self._every = seconds
        elif not croniter.is_valid(self.spec):
            raise ValidationError(
                f"invalid cron spec {spec!r}: use 5 fields (minute hour day month weekday, e.g. '*/5 * * * *'), "
                "a descriptor (@hourly, @daily, @weekly, @monthly, @yearly) or '@every 10m'",
                field="spec",
            )

    def next_after(self, after: datetime) -> datetime:
        if self._every is not None:
            elapsed = (after - _EPOCH).total_seconds()
            n = int(elapsed // self._every) + 1
            return _EPOCH + timedelta(seconds=n * self._every)
        nxt: datetime = croniter(self.spec, after.astimezone(UTC)).get_next(datetime)
        return nxt.astimezone(UTC)

    def period(self, around: datetime) -> float:
        """Seconds between two occurrences near `around` (for the de-duplication key's ttl)."""
        if self._every is not None:
            return self._every
        first = self.next_after(around)
        return (self.next_after(first) - first).total_seconds()


def parse_schedule(spec: str) -> Schedule:
    return Schedule(spec)


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A registered cron entry: enqueue `task` with `payload` (and enqueue `options`) at each occurrence."""

    name: str
    spec: str
    task: str
    payload: JSON = None
    options: dict[str, Any] = field(default_factory=dict)
    schedule: Schedule | None = field(default=None, compare=False, repr=False)

    def next_after(self, after: datetime) -> datetime:
        return (self.schedule or Schedule(self.spec)).next_after(after)


def make_schedule(spec: str, task: str, payload: JSON = None, name: str | None = None, **options: Any) -> CronSchedule:
    """Validate a cron registration (spec, name, enqueue options) and build it."""
    check_public_task_name(task)
    sched = Schedule(spec)
    cron_name = name or task
    if not cron_name or len(cron_name) > 1024:
        raise ValidationError("cron name must be 1 to 1024 characters", field="name")
    if "namespace" in options:
        validate_name(options["namespace"], "namespace")
    for bad in ("delay", "run_at", "job_id"):
        if bad in options:
            raise ValidationError(f"{bad} is not allowed for a cron schedule (the schedule decides)", field=bad)
    return CronSchedule(cron_name, sched.spec, task, payload, dict(options), sched)


class Scheduler(Service):
    """Enqueues due occurrences of `app.schedules`. Ticks every `interval` seconds (1 s by default)."""

    name = "scheduler"

    def __init__(
        self,
        app: Conveyor,
        *,
        interval: float = 1.0,
        owner: str = "",
        now: datetime | None = None,
        catch_up: float = 0.0,
    ) -> None:
        super().__init__(interval)
        self.app = app
        self.owner = owner or "scheduler"
        start = now or utcnow()
        self._next: dict[str, datetime] = {}
        self._start = start
        self.catch_up = catch_up
        self.enqueued = 0
        self.duplicates = 0

    def _schedules(self) -> dict[str, CronSchedule]:
        schedules: dict[str, CronSchedule] = getattr(self.app, "schedules", {})
        return schedules

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
        recorded = await self.app.store.kv_get(last_key(name))
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
            job = await self.app.aenqueue(cron.task, cron.payload, job_id=job_id, **cron.options)
        except ValidationError as exc:
            if exc.field != "id":
                raise
            self.duplicates += 1  # this occurrence's job exists already: another scheduler enqueued it
            log.debug("cron %s: occurrence %s was enqueued already (job %s)", cron.name, at.isoformat(), job_id)
        else:
            self.enqueued += 1
            log.info("cron %s: enqueued %s for %s (job %s)", cron.name, cron.task, at.isoformat(), job.id)
        await self.app.store.kv_set(last_key(cron.name), at.isoformat())


def occurrence_id(name: str, at: datetime) -> str:
    """The job id of occurrence `at` of the schedule `name` (the same in every process)."""
    from conveyor.ids import derived_job_id

    at_ms = int((at - _EPOCH) / timedelta(milliseconds=1))
    return derived_job_id(at_ms, f"cron\x00{name}\x00{at.isoformat()}")


def last_key(name: str) -> str:
    """The key-value entry holding the last occurrence of `name` that a scheduler enqueued."""
    return f"cron:last:{name}"
