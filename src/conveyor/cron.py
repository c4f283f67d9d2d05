"""Cron specs and registrations: when a schedule fires, and what it enqueues (`app.cron(...)`).

The parsing and validation of a schedule live here, below the runtime core, because registering a cron entry
(`Conveyor.cron`, kept in `Runtime.schedules`) checks it at once, while running the schedules is a maintenance
service (`conveyor.maintenance.scheduler`), a layer above: the registration must not import the service.

Specs are 5-field crontab lines, the descriptors `@yearly @annually @monthly @weekly @daily @midnight @hourly`, or
`@every <duration>` (`@every 30s`, `@every 5m`, `@every 1h30m`; occurrences aligned to multiples of the duration
since the Unix epoch, so every process computes the same instants). Times are UTC.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from conveyor.errors import ValidationError
from conveyor.model import JSON, check_public_task_name, validate_name
from conveyor.tasks import CRON_OPTIONS, check_options

if TYPE_CHECKING:
    from croniter import croniter

_EVERY_RE = re.compile(r"^@every\s+((?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+)$")
_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _croniter() -> type[croniter]:
    """croniter, imported when a crontab spec is first read: it pulls in dateutil's time zones, which an app
    without crontab schedules (and `import conveyor`) need not pay for at start-up."""
    from croniter import croniter

    return croniter


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
        elif not _croniter().is_valid(self.spec):
            raise ValidationError(
                f"invalid cron spec {spec!r}: use 5 fields (minute hour day month weekday, e.g. '*/5 * * * *'), "
                "a descriptor (@hourly, @daily, @weekly, @monthly, @yearly) or '@every 10m'",
                field="spec",
            )

    def next_after(self, after: datetime) -> datetime:
        if self._every is not None:
            elapsed = (after - EPOCH).total_seconds()
            n = int(elapsed // self._every) + 1
            return EPOCH + timedelta(seconds=n * self._every)
        nxt: datetime = _croniter()(self.spec, after.astimezone(UTC)).get_next(datetime)
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


def make_schedule(
    spec: str, task: str, payload: JSON = None, name: str | None = None, options: Mapping[str, Any] | None = None
) -> CronSchedule:
    """Validate a cron registration (spec, name, enqueue options) and build it."""
    options = dict(options or {})
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
    check_options(options, CRON_OPTIONS, where="cron")
    return CronSchedule(cron_name, sched.spec, task, payload, dict(options), sched)
