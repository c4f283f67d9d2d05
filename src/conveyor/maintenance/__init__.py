"""Background services a worker runs beside its jobs, all with one shape (`start()`, `async stop()`).

- `Rescuer` — gives expired leases back (a killed worker's jobs run again within about one lease);
- `Pruner` — deletes finished jobs past their retention (SPEC §2.6) so the tables workers scan stay small;
- `Scheduler` — enqueues cron occurrences registered with `app.cron(...)`, each exactly once across processes.

One process runs them at a time, elected through the store (`leader.Elected`, roles "maintenance" for the rescuer
and pruner and "scheduler" for cron): with 50 workers there is one rescuer, not 50. Each operation is still atomic
in the store and idempotent, so the moment of overlap a fail-over can leave (one store round trip) does no harm.
"""

from __future__ import annotations

from collections.abc import Callable

from conveyor.maintenance.base import Service
from conveyor.maintenance.leader import Elected
from conveyor.maintenance.pruner import Pruner
from conveyor.maintenance.rescuer import Rescuer
from conveyor.maintenance.scheduler import CronSchedule, Scheduler, parse_schedule
from conveyor.runtime import SupportsRuntime

__all__ = [
    "CronSchedule",
    "Elected",
    "Pruner",
    "Rescuer",
    "Scheduler",
    "Service",
    "default_services",
    "elected_services",
    "parse_schedule",
]

MAINTENANCE = "maintenance"
SCHEDULER = "scheduler"


def default_services(
    app: SupportsRuntime, *, rescue_interval: float | None = None, worker_id: str = ""
) -> list[Service]:
    """The services a standard worker runs."""
    services: list[Service] = [
        Rescuer(app, interval=rescue_interval),
        Pruner(app),
    ]
    services.append(Scheduler(app, owner=worker_id))  # schedules may be made at runtime: always there
    return services


def elected_services(
    app: SupportsRuntime,
    *,
    candidate: str,
    ttl: float,
    rescue_interval: float | None = None,
    on_change: Callable[[str, bool], None] | None = None,
) -> list[Elected]:
    """The elected roles a standard worker campaigns for: "maintenance" (rescuer, pruner) always, "scheduler" (cron:
    code and runtime schedules) when the app declares schedules in code. An app without code schedules still runs
    the schedules made at runtime: its maintenance leader runs the scheduler too (no second election, which cost a
    Redis worker's shutdown time). Two schedulers may then run at once (one per kind of process): harmless, each
    occurrence is one job by the store's insert. A new scheduler catches up on occurrences missed while no process
    led (a fail-over takes at most one lease); older missed ones follow each schedule's back-fill policy."""

    def maintenance() -> list[Service]:
        services: list[Service] = [Rescuer(app, interval=rescue_interval), Pruner(app)]
        if not app.runtime.schedules:  # runtime schedules only: the maintenance leader runs them (no second role)
            services.append(Scheduler(app, owner=candidate, catch_up=2 * ttl + 2.0))
        return services

    def scheduler() -> list[Service]:
        return [Scheduler(app, owner=candidate, catch_up=2 * ttl + 2.0)]

    roles = [Elected(app, MAINTENANCE, candidate, maintenance, ttl=ttl, on_change=on_change)]
    if app.runtime.schedules:
        roles.append(Elected(app, SCHEDULER, candidate, scheduler, ttl=ttl, on_change=on_change))
    return roles
