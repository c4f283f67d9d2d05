"""Cron specs and registrations: when a schedule fires, and what it enqueues (`app.cron(...)`).

The parsing and validation of a schedule live here, below the runtime core, because registering a cron entry
(`Conveyor.cron`, kept in `Runtime.schedules`) checks it at once, while running the schedules is a maintenance
service (`conveyor.maintenance.scheduler`), a layer above: the registration must not import the service.

Specs are 5-field crontab lines, the descriptors `@yearly @annually @monthly @weekly @daily @midnight @hourly`, or
`@every <duration>` (`@every 30s`, `@every 5m`, `@every 1h30m`; occurrences aligned to multiples of the duration
since the Unix epoch, so every process computes the same instants).

Time zones (`timezone="Europe/Berlin"`, any IANA name; UTC by default). A crontab spec is read on the zone's wall
clock; every occurrence is an instant (UTC), and the instants of a schedule strictly increase. The DST rules
(docs/cron.md):

* spring forward — a wall time that does not exist that day (02:30 in Berlin on the last Sunday of March) runs
  once, at the instant it would have had on the old offset: 02:30 CET is 03:30 CEST, one gap-length later. An
  occurrence that lands on an instant the schedule runs at anyway (an hourly schedule's 02:00 → 03:00) runs once.
* fall back — a wall time that happens twice (02:30 on the last Sunday of October) runs once, at the first
  (summer-time) instant, when the spec names its hours; when the hour field is `*` (`*/15 * * * *`, `0 * * * *`)
  the schedule follows elapsed time and runs in both passes of the repeated hour (an hourly schedule runs 25 times
  that day), as Vixie cron does.
* `@every` counts elapsed time: a time zone does not change it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from conveyor.errors import ValidationError
from conveyor.ids import derived_job_id
from conveyor.model import JSON, check_public_task_name, validate_name
from conveyor.tasks import CRON_OPTIONS, check_options

if TYPE_CHECKING:
    from croniter import croniter

_EVERY_RE = re.compile(r"^@every\s+((?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+)$")
_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
UTC_NAME = "UTC"
# Offsets are compared this far around an instant to see whether a transition is near (zones change at most
# once in such a span).
_SHIFT = timedelta(hours=3)
_HOUR_WILDCARD_DESCRIPTORS = frozenset({"@hourly"})


class Backfill(StrEnum):
    """What a scheduler does with occurrences missed while no scheduler ran (docs/cron.md): `none` skips them,
    `latest` enqueues the most recent one, `all` enqueues each of them (within the back-fill window)."""

    NONE = "none"
    LATEST = "latest"
    ALL = "all"


DEFAULT_BACKFILL = Backfill.NONE
DEFAULT_BACKFILL_WINDOW = timedelta(hours=24)
MAX_BACKFILL = 1000
"""At most this many missed occurrences of one schedule are enqueued by one back-fill (`all`)."""


def _croniter() -> type[croniter]:
    """croniter, imported when a crontab spec is first read: it pulls in dateutil's time zones, which an app
    without crontab schedules (and `import conveyor`) need not pay for at start-up."""
    from croniter import croniter

    return croniter


def zone(name: str | None) -> tzinfo:
    """The time zone named `name` (IANA, e.g. "Europe/Berlin"; None or "UTC" is UTC); a clear error naming the field
    for a name the zone database does not know."""
    if name is None or name == UTC_NAME:
        return UTC
    if not isinstance(name, str) or not name or len(name) > 64 or "\x00" in name:
        raise ValidationError(
            f"timezone must be an IANA zone name such as 'Europe/Berlin', got {name!r}", field="timezone"
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationError(
            f"unknown timezone {name!r}: use an IANA zone name such as 'Europe/Berlin', 'America/New_York' or 'UTC'",
            field="timezone",
        ) from None


def check_backfill(backfill: str, window: timedelta | float | None) -> tuple[Backfill, float]:
    """The back-fill policy and window (seconds) of a schedule, validated."""
    try:
        policy = Backfill(backfill)
    except ValueError:
        raise ValidationError(
            f"backfill must be 'none', 'latest' or 'all', got {backfill!r}", field="backfill"
        ) from None
    if window is None:
        seconds = DEFAULT_BACKFILL_WINDOW.total_seconds()
    elif isinstance(window, timedelta):
        seconds = window.total_seconds()
    elif isinstance(window, int | float) and not isinstance(window, bool):
        seconds = float(window)
    else:
        raise ValidationError("backfill_window must be a timedelta or a number of seconds", field="backfill_window")
    if not 0 <= seconds <= 366 * 86400:
        raise ValidationError("backfill_window must be between 0 and 366 days", field="backfill_window")
    return policy, seconds


class Schedule:
    """When a spec fires: `next_after(t)` is the first occurrence strictly after the instant t (module doc for the
    time-zone and DST rules)."""

    def __init__(self, spec: str, timezone: str | None = None) -> None:
        self.spec = spec.strip()
        self.timezone = timezone or UTC_NAME
        self.tz = zone(timezone)
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
        fields = self.spec.split()
        # The hour field is a wildcard: the schedule follows elapsed time through a repeated (fall-back) hour.
        self._both_folds = self.spec in _HOUR_WILDCARD_DESCRIPTORS or (len(fields) >= 2 and fields[1].startswith("*"))

    def next_after(self, after: datetime) -> datetime:
        if after.tzinfo is None:
            raise ValueError("next_after needs an aware datetime (an instant)")
        if self._every is not None:
            elapsed = (after - EPOCH).total_seconds()
            n = int(elapsed // self._every) + 1
            return EPOCH + timedelta(seconds=n * self._every)
        if self.tz is UTC:
            nxt: datetime = _croniter()(self.spec, after.astimezone(UTC).replace(tzinfo=None)).get_next(datetime)
            return nxt.replace(tzinfo=UTC)
        return self._next_local(after.astimezone(UTC))

    def _instants(self, wall: datetime) -> tuple[list[datetime], bool]:
        """The instants (UTC) of the wall time `wall` (naive, on this zone's clock) by the DST rules, and whether
        a later wall time may come earlier (`wall` is in a spring-forward gap, or repeated and run in both passes)."""
        first = wall.replace(tzinfo=self.tz, fold=0)
        at = first.astimezone(UTC)
        if first.utcoffset() == wall.replace(tzinfo=self.tz, fold=1).utcoffset():
            return [at], False  # an ordinary wall time
        if at.astimezone(self.tz).replace(tzinfo=None) != wall:
            return [at], True  # in a gap: fold=0 reads it on the old offset, one gap-length later
        if not self._both_folds:
            return [at], False  # a repeated (fall-back) wall time: its first instant
        second = wall.replace(tzinfo=self.tz, fold=1).astimezone(UTC)
        return [at, second], True  # both passes: a later wall time's first pass comes before this one's second

    def _jump(self, wall: datetime) -> timedelta:
        """How far the clock jumps at the transition `wall` (in a gap or a repeated hour) belongs to."""
        a, b = wall.replace(tzinfo=self.tz, fold=0).utcoffset(), wall.replace(tzinfo=self.tz, fold=1).utcoffset()
        assert a is not None and b is not None
        return abs(a - b)

    def _offset(self, wall: datetime) -> timedelta | None:
        return wall.replace(tzinfo=self.tz).utcoffset()

    def _next_local(self, after: datetime) -> datetime:
        """The earliest instant after `after` among the wall times' instants. Wall order and instant order agree
        except around a transition: there the walk starts earlier (wall times in a gap run later than their
        clock reading), and a candidate from a gap or a repeated hour is compared with the wall times up to the
        transition's jump after it."""
        local = after.astimezone(self.tz).replace(tzinfo=None)
        before, later = self._offset(local - _SHIFT), self._offset(local + _SHIFT)
        assert before is not None and later is not None
        # A wall time W has an instant after `after` only if W > after + (the smaller offset): start there.
        walls = _croniter()(self.spec, after.replace(tzinfo=None) + min(before, later))
        best: datetime | None = None
        limit: datetime | None = None
        while True:
            wall: datetime = walls.get_next(datetime)
            if limit is not None and wall > limit:
                break
            instants, irregular = self._instants(wall)
            for at in instants:
                if at > after and (best is None or at < best):
                    best = at
                    if irregular and limit is None:  # compare with the wall times up to the transition's jump
                        limit = wall + self._jump(wall)
            if best is not None and limit is None:
                break
        assert best is not None
        return best

    def period(self, around: datetime) -> float:
        """Seconds between two occurrences near `around` (for the de-duplication key's ttl)."""
        if self._every is not None:
            return self._every
        first = self.next_after(around)
        return (self.next_after(first) - first).total_seconds()


def parse_schedule(spec: str, timezone: str | None = None) -> Schedule:
    return Schedule(spec, timezone)


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A cron entry: enqueue `task` with `payload` (and enqueue `options`) at each occurrence of `spec` on the
    `timezone`'s wall clock. `source` is "code" (`app.cron`, read-only at runtime) or "runtime" (`app.schedules`,
    kept in the store); `enabled` is False while a runtime schedule is paused."""

    name: str
    spec: str
    task: str
    payload: JSON = None
    options: dict[str, Any] = field(default_factory=dict)
    schedule: Schedule | None = field(default=None, compare=False, repr=False)
    timezone: str = UTC_NAME
    backfill: Backfill = DEFAULT_BACKFILL
    backfill_window: float = DEFAULT_BACKFILL_WINDOW.total_seconds()
    enabled: bool = True
    source: str = "code"
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def next_after(self, after: datetime) -> datetime:
        return (self.schedule or Schedule(self.spec, self.timezone)).next_after(after)

    @property
    def namespace(self) -> str | None:
        value = self.options.get("namespace")
        return None if value is None else str(value)

    @property
    def queue(self) -> str | None:
        value = self.options.get("queue")
        return None if value is None else str(value)


def check_schedule_name(name: str, *, runtime: bool = False) -> str:
    """A schedule's name: 1 to 1024 characters without control characters; one made at runtime (it is a path
    segment of /api/v1/schedules/{name}) also without '/' and at most 200 characters."""
    if not isinstance(name, str) or not name or len(name) > 1024 or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValidationError("schedule name must be 1 to 1024 characters, without control characters", field="name")
    if runtime and (len(name) > 200 or "/" in name):
        raise ValidationError("a runtime schedule's name must be at most 200 characters, without '/'", field="name")
    return name


def make_schedule(
    spec: str,
    task: str,
    payload: JSON = None,
    name: str | None = None,
    options: Mapping[str, Any] | None = None,
    *,
    timezone: str | None = None,
    backfill: str = DEFAULT_BACKFILL,
    backfill_window: timedelta | float | None = None,
    enabled: bool = True,
    source: str = "code",
    created_at: datetime | None = None,
    updated_at: datetime | None = None,
) -> CronSchedule:
    """Validate a cron registration (spec, time zone, name, back-fill, enqueue options) and build it."""
    options = dict(options or {})
    if not isinstance(task, str):
        raise ValidationError("task must be a task name", field="task")
    check_public_task_name(task)
    sched = Schedule(spec, timezone)
    cron_name = check_schedule_name(name or task, runtime=source == "runtime")
    if "namespace" in options:
        validate_name(options["namespace"], "namespace")
    if options.get("queue") is not None:
        validate_name(options["queue"], "queue")
    for bad in ("delay", "run_at", "job_id"):
        if bad in options:
            raise ValidationError(f"{bad} is not allowed for a cron schedule (the schedule decides)", field=bad)
    check_options(options, CRON_OPTIONS, where="cron")
    policy, window = check_backfill(backfill, backfill_window)
    return CronSchedule(
        cron_name,
        sched.spec,
        task,
        payload,
        dict(options),
        sched,
        timezone=sched.timezone,
        backfill=policy,
        backfill_window=window,
        enabled=bool(enabled),
        source=source,
        created_at=created_at,
        updated_at=updated_at,
    )


def occurrence_id(name: str, at: datetime) -> str:
    """The job id of occurrence `at` of the schedule `name`, the same in every process: the store refuses a second
    job with an id already taken, so an occurrence has one job however many schedulers enqueue it."""
    at_ms = int((at - EPOCH) / timedelta(milliseconds=1))
    return derived_job_id(at_ms, f"cron\x00{name}\x00{at.astimezone(UTC).isoformat()}")
