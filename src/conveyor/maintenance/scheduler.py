"""Cron: enqueue a task on a schedule, each occurrence exactly once however many processes run the scheduler.

Register with `app.cron("*/5 * * * *", "task", payload, name=None, **enqueue_options)`. Specs are 5-field crontab
lines, the descriptors `@yearly @annually @monthly @weekly @daily @midnight @hourly`, or `@every <duration>`
(`@every 30s`, `@every 5m`, `@every 1h30m`; occurrences aligned to multiples of the duration since the Unix epoch,
so every process computes the same instants). Times are UTC.

De-duplication: before enqueueing occurrence `t` of schedule `name`, a process must win
`store.kv_set(f"cron:{name}:{t.isoformat()}", owner, ttl=…, only_if_absent=True)` — an atomic test-and-set in
every store — so one process enqueues it and the others skip it. A scheduler does not back-fill occurrences from
before it started (a worker that was down does not flood the queue with missed runs).
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
from conveyor.model import JSON, utcnow, validate_name

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
    sched = Schedule(spec)
    cron_name = name or task
    if not cron_name or len(cron_name) > 1024:
        raise ValidationError("cron name must be 1 to 1024 characters", field="name")
    if "namespace" in options:
        validate_name(options["namespace"], "namespace")
    for bad in ("delay", "run_at"):
        if bad in options:
            raise ValidationError(f"{bad} is not allowed for a cron schedule (the schedule decides)", field=bad)
    return CronSchedule(cron_name, sched.spec, task, payload, dict(options), sched)


class Scheduler(Service):
    """Enqueues due occurrences of `app.schedules`. Ticks every `interval` seconds (1 s by default)."""

    name = "scheduler"

    def __init__(self, app: Conveyor, *, interval: float = 1.0, owner: str = "", now: datetime | None = None) -> None:
        super().__init__(interval)
        self.app = app
        self.owner = owner or "scheduler"
        start = now or utcnow()
        self._next: dict[str, datetime] = {}
        self._start = start
        self.enqueued = 0

    def _schedules(self) -> dict[str, CronSchedule]:
        schedules: dict[str, CronSchedule] = getattr(self.app, "schedules", {})
        return schedules

    async def tick(self, now: datetime | None = None) -> None:
        now = now or utcnow()
        for name, cron in list(self._schedules().items()):
            nxt = self._next.get(name)
            if nxt is None:
                nxt = self._next[name] = cron.next_after(self._start)
            while nxt <= now:
                await self._fire(cron, nxt, now)
                nxt = self._next[name] = cron.next_after(nxt)

    async def _fire(self, cron: CronSchedule, at: datetime, now: datetime) -> None:
        schedule = cron.schedule or Schedule(cron.spec)
        ttl = max(3600.0, 3 * schedule.period(at))
        key = f"cron:{cron.name}:{at.isoformat()}"
        if not await self.app.store.kv_set(key, self.owner, ttl=ttl, only_if_absent=True):
            return  # another process enqueued this occurrence
        try:
            job = await self.app.aenqueue(cron.task, cron.payload, **cron.options)
        except Exception:
            # Give the occurrence back so another process (or our next tick) can try again.
            try:
                await self.app.store.kv_delete(key)
            finally:
                raise
        self.enqueued += 1
        log.info("cron %s: enqueued %s for %s (job %s)", cron.name, cron.task, at.isoformat(), job.id)
