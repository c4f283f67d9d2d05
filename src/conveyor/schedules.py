"""Cron schedules as one list: those declared in code (`app.cron`, read-only at runtime) and those made at runtime
(`app.schedules.create(...)`, the REST API, the CLI, the admin UI), which the store keeps (`Store.put_schedule`).

`Schedules` is what `app.schedules` returns. It reads like the mapping of code schedules it used to be
(`app.schedules["nightly"]`, `.values()`), and manages the runtime ones:

    app.schedules.create("reset-berlin", "30 2 * * *", "reset", {"scope": "daily"}, timezone="Europe/Berlin")
    app.schedules.update("reset-berlin", spec="0 3 * * *", queue="maintenance")
    app.schedules.pause("reset-berlin"); app.schedules.resume("reset-berlin")
    app.schedules.trigger("reset-berlin")        # one job now, in the history as a manual run
    app.schedules.list(); app.schedules.runs("reset-berlin"); app.schedules.delete("reset-berlin")

Every method has an async twin (`acreate`, `aupdate`, …). A runtime schedule may not take the name of a code one
(ScheduleExists), and a code schedule cannot be updated, paused or deleted at runtime (ScheduleDeclaredInCode).
The elected scheduler (maintenance/scheduler.py) reads the store's schedules at each tick, so a change takes effect
within about a second in whichever process leads.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Literal, TypeVar

from conveyor.cron import CronSchedule, check_schedule_name, make_schedule
from conveyor.enqueue import build_job, enqueue
from conveyor.errors import ScheduleDeclaredInCode, ScheduleExists, ScheduleNotFound, ValidationError
from conveyor.model import JSON, Job, ScheduleRecord, ScheduleRun, utcnow
from conveyor.runtime import Runtime

__all__ = ["CODE", "RUNTIME", "UNSET", "ScheduleInfo", "Schedules", "all_schedules", "from_record"]

log = logging.getLogger("conveyor.scheduler")
_REPORTED: set[tuple[str, datetime]] = set()

CODE = "code"
RUNTIME = "runtime"
T = TypeVar("T")


class _Unset(Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET
"""An argument of `update` that was not given (None is a value: no queue, a null payload)."""


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A schedule as surfaces show it: its definition, where it comes from (`source`: "code" or "runtime"), its
    last run (the newest occurrence that created a job) and its next one (None while paused)."""

    schedule: CronSchedule
    last_run_at: datetime | None
    next_run_at: datetime | None

    @property
    def name(self) -> str:
        return self.schedule.name

    @property
    def source(self) -> str:
        return self.schedule.source

    @property
    def paused(self) -> bool:
        return not self.schedule.enabled

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the REST API and `conveyor schedules list --json`."""
        s = self.schedule
        return {
            "name": s.name,
            "spec": s.spec,
            "timezone": s.timezone,
            "task": s.task,
            "payload": s.payload,
            "namespace": s.namespace or "default",
            "queue": s.queue,
            "options": {k: v for k, v in s.options.items() if k not in ("namespace", "queue")},
            "backfill": s.backfill.value,
            "backfill_window": s.backfill_window,
            "paused": not s.enabled,
            "source": s.source,
            "created_at": _iso(s.created_at),
            "updated_at": _iso(s.updated_at),
            "last_run_at": _iso(self.last_run_at),
            "next_run_at": _iso(self.next_run_at),
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def from_record(record: ScheduleRecord) -> CronSchedule:
    """The schedule a stored runtime record describes (validated again: a record is data from the store)."""
    return make_schedule(
        record.spec,
        record.task,
        record.payload,
        record.name,
        record.options,
        timezone=record.timezone,
        backfill=record.backfill,
        backfill_window=record.backfill_window,
        enabled=record.enabled,
        source=RUNTIME,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def to_record(schedule: CronSchedule) -> ScheduleRecord:
    assert schedule.created_at is not None and schedule.updated_at is not None
    return ScheduleRecord(
        name=schedule.name,
        spec=schedule.spec,
        task=schedule.task,
        payload=schedule.payload,
        timezone=schedule.timezone,
        options=dict(schedule.options),
        backfill=schedule.backfill.value,
        backfill_window=schedule.backfill_window,
        enabled=schedule.enabled,
        created_at=schedule.created_at,
        updated_at=schedule.updated_at,
    )


async def all_schedules(rt: Runtime) -> list[CronSchedule]:
    """Code schedules and the store's runtime ones, by name (a stored record that no longer validates, e.g. its
    zone left the zone database, is left out, and the error log says why)."""
    merged: dict[str, CronSchedule] = dict(rt.schedules)
    for record in await rt.store.list_schedules():
        if record.name in merged:
            continue  # a code schedule took the name after the runtime one was made: code wins
        try:
            merged[record.name] = from_record(record)
        except (ValidationError, TypeError) as exc:
            key = (record.name, record.updated_at)
            if key not in _REPORTED:  # once per stored version, not at every tick
                _REPORTED.add(key)
                log.error("runtime schedule %r left out: its stored definition is invalid (%s)", record.name, exc)
    return [merged[name] for name in sorted(merged)]


class Schedules(Mapping[str, CronSchedule]):
    """`app.schedules`: the code schedules as a mapping (name → CronSchedule), and the management of all of them
    (module doc). Sync methods may not be called from the app's own event loop: use the `a…` twins there."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    # ---- the mapping of code schedules ------------------------------------------------------------------------

    def __getitem__(self, name: str) -> CronSchedule:
        return self._rt.schedules[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rt.schedules)

    def __len__(self) -> int:
        return len(self._rt.schedules)

    # ---- reading ---------------------------------------------------------------------------------------------

    async def alist(self, *, now: datetime | None = None) -> list[ScheduleInfo]:
        """Every schedule, code and runtime, by name, with its last and next run."""
        return await self._home(lambda: self._list(now))

    async def _list(self, now: datetime | None) -> list[ScheduleInfo]:
        now = now or utcnow()
        return [await self._info(s, now) for s in await all_schedules(self._rt)]

    async def _info(self, schedule: CronSchedule, now: datetime) -> ScheduleInfo:
        last = None
        for run in await self._rt.store.schedule_runs(schedule.name, limit=10):
            if run.job_id is not None:
                last = run.occurrence
                break
        nxt = schedule.next_after(now) if schedule.enabled else None
        return ScheduleInfo(schedule, last, nxt)

    async def adescribe(self, name: str, *, now: datetime | None = None) -> ScheduleInfo:
        """One schedule (ScheduleNotFound when there is none of that name)."""

        async def go() -> ScheduleInfo:
            return await self._info(await self._find(name), now or utcnow())

        return await self._home(go)

    async def _find(self, name: str) -> CronSchedule:
        code = self._rt.schedules.get(name)
        if code is not None:
            return code
        record = await self._rt.store.get_schedule(name)
        if record is None:
            raise ScheduleNotFound(name)
        return from_record(record)

    async def aruns(self, name: str, limit: int = 20) -> list[ScheduleRun]:
        """The schedule's runs, newest occurrence first: each occurrence a scheduler handled (its job, or why it
        was skipped) and each manual trigger."""
        if not 1 <= limit <= 200:
            raise ValidationError("limit must be between 1 and 200", field="limit")

        async def go() -> list[ScheduleRun]:
            await self._find(name)
            return await self._rt.store.schedule_runs(name, limit)

        return await self._home(go)

    # ---- changing ---------------------------------------------------------------------------------------------

    async def acreate(
        self,
        name: str,
        spec: str,
        task: str,
        payload: JSON = None,
        *,
        timezone: str | None = None,
        backfill: Literal["none", "latest", "all"] = "none",
        backfill_window: timedelta | float | None = None,
        paused: bool = False,
        namespace: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
    ) -> ScheduleInfo:
        """Make a schedule at runtime, kept in the store: enqueue `task` with `payload` at each occurrence of `spec`
        on `timezone`'s wall clock (docs/cron.md). ScheduleExists when the name is taken (by a runtime schedule or
        one declared in code)."""
        check_schedule_name(name, runtime=True)
        options = _options(namespace=namespace, queue=queue, priority=priority, max_attempts=max_attempts)
        now = utcnow()
        schedule = make_schedule(
            spec,
            task,
            payload,
            name,
            options,
            timezone=timezone,
            backfill=backfill,
            backfill_window=backfill_window,
            enabled=not paused,
            source=RUNTIME,
            created_at=now,
            updated_at=now,
        )
        build_job(self._rt, schedule.task, schedule.payload, schedule.options)  # every enqueue rule, now
        if name in self._rt.schedules:
            raise ScheduleExists(name, in_code=True)

        async def go() -> ScheduleInfo:
            if not await self._rt.store.put_schedule(to_record(schedule), create=True):
                raise ScheduleExists(name)
            return await self._info(schedule, now)

        return await self._home(go)

    async def aupdate(
        self,
        name: str,
        *,
        spec: str | None = None,
        timezone: str | None = None,
        task: str | None = None,
        payload: JSON | _Unset = UNSET,
        namespace: str | None = None,
        queue: str | _Unset | None = UNSET,
        priority: int | _Unset | None = UNSET,
        max_attempts: int | _Unset | None = UNSET,
        backfill: Literal["none", "latest", "all"] | None = None,
        backfill_window: timedelta | float | None = None,
        paused: bool | None = None,
    ) -> ScheduleInfo:
        """Change a runtime schedule: only the arguments given change (`queue=None` clears the queue, a payload of
        None is a null payload). A change of `spec`, `timezone` or a resume counts occurrences from now: nothing
        before it is back-filled."""
        self._refuse_code(name, "updated")

        async def go() -> ScheduleInfo:
            record = await self._rt.store.get_schedule(name)
            if record is None:
                raise ScheduleNotFound(name)
            options = dict(record.options)
            for key, value in (("queue", queue), ("priority", priority), ("max_attempts", max_attempts)):
                if value is not UNSET:
                    if value is None:
                        options.pop(key, None)
                    else:
                        options[key] = value
            if namespace is not None:
                options["namespace"] = namespace
            new_payload = record.payload if payload is UNSET else payload
            now = utcnow()
            schedule = make_schedule(
                record.spec if spec is None else spec,
                record.task if task is None else task,
                new_payload,
                name,
                options,
                timezone=record.timezone if timezone is None else timezone,
                backfill=record.backfill if backfill is None else backfill,
                backfill_window=record.backfill_window if backfill_window is None else backfill_window,
                enabled=record.enabled if paused is None else not paused,
                source=RUNTIME,
                created_at=record.created_at,
                updated_at=now,
            )
            build_job(self._rt, schedule.task, schedule.payload, schedule.options)
            if not await self._rt.store.put_schedule(to_record(schedule), create=False):
                raise ScheduleNotFound(name)  # deleted meanwhile
            return await self._info(schedule, now)

        return await self._home(go)

    async def apause(self, name: str) -> ScheduleInfo:
        """Stop enqueueing a runtime schedule's occurrences until `resume` (those in between are not back-filled)."""
        return await self.aupdate(name, paused=True)

    async def aresume(self, name: str) -> ScheduleInfo:
        return await self.aupdate(name, paused=False)

    async def adelete(self, name: str) -> None:
        """Delete a runtime schedule and its run records (its jobs stay)."""
        self._refuse_code(name, "deleted")

        async def go() -> None:
            if not await self._rt.store.delete_schedule(name):
                raise ScheduleNotFound(name)

        await self._home(go)

    async def atrigger(self, name: str) -> Job:
        """Enqueue one job of the schedule now (code or runtime, paused or not), recorded in its history as a
        manual run; the regular occurrences stay as they were."""

        async def go() -> Job:
            schedule = await self._find(name)
            job = await enqueue(self._rt, schedule.task, schedule.payload, dict(schedule.options))
            await self._rt.store.record_schedule_run(ScheduleRun(name, job.created, job_id=job.id, manual=True))
            return job

        return await self._home(go)

    def _refuse_code(self, name: str, action: str) -> None:
        if name in self._rt.schedules:
            raise ScheduleDeclaredInCode(name, action)

    async def _home(self, factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
        return await self._rt.on_home(factory)

    # ---- sync twins --------------------------------------------------------------------------------------------

    def list(self, *, now: datetime | None = None) -> list[ScheduleInfo]:
        return self._rt.call_sync(lambda: self.alist(now=now))

    def describe(self, name: str, *, now: datetime | None = None) -> ScheduleInfo:
        return self._rt.call_sync(lambda: self.adescribe(name, now=now))

    def runs(self, name: str, limit: int = 20) -> builtins.list[ScheduleRun]:
        return self._rt.call_sync(lambda: self.aruns(name, limit))

    def create(
        self,
        name: str,
        spec: str,
        task: str,
        payload: JSON = None,
        *,
        timezone: str | None = None,
        backfill: Literal["none", "latest", "all"] = "none",
        backfill_window: timedelta | float | None = None,
        paused: bool = False,
        namespace: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
    ) -> ScheduleInfo:
        return self._rt.call_sync(
            lambda: self.acreate(
                name,
                spec,
                task,
                payload,
                timezone=timezone,
                backfill=backfill,
                backfill_window=backfill_window,
                paused=paused,
                namespace=namespace,
                queue=queue,
                priority=priority,
                max_attempts=max_attempts,
            )
        )

    def update(
        self,
        name: str,
        *,
        spec: str | None = None,
        timezone: str | None = None,
        task: str | None = None,
        payload: JSON | _Unset = UNSET,
        namespace: str | None = None,
        queue: str | _Unset | None = UNSET,
        priority: int | _Unset | None = UNSET,
        max_attempts: int | _Unset | None = UNSET,
        backfill: Literal["none", "latest", "all"] | None = None,
        backfill_window: timedelta | float | None = None,
        paused: bool | None = None,
    ) -> ScheduleInfo:
        return self._rt.call_sync(
            lambda: self.aupdate(
                name,
                spec=spec,
                timezone=timezone,
                task=task,
                payload=payload,
                namespace=namespace,
                queue=queue,
                priority=priority,
                max_attempts=max_attempts,
                backfill=backfill,
                backfill_window=backfill_window,
                paused=paused,
            )
        )

    def pause(self, name: str) -> ScheduleInfo:
        return self._rt.call_sync(lambda: self.apause(name))

    def resume(self, name: str) -> ScheduleInfo:
        return self._rt.call_sync(lambda: self.aresume(name))

    def delete(self, name: str) -> None:
        self._rt.call_sync(lambda: self.adelete(name))

    def trigger(self, name: str) -> Job:
        return self._rt.call_sync(lambda: self.atrigger(name))


def _options(
    *, namespace: str | None, queue: str | None, priority: int | None, max_attempts: int | None
) -> dict[str, Any]:
    given = {"namespace": namespace, "queue": queue, "priority": priority, "max_attempts": max_attempts}
    return {k: v for k, v in given.items() if v is not None}
