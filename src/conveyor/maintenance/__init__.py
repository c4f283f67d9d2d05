"""Background services a worker runs beside its jobs, all with one shape (`start()`, `async stop()`).

- `Rescuer` — gives expired leases back (a killed worker's jobs run again within about one lease);
- `Pruner` — deletes finished jobs past their retention (SPEC §2.6) so the tables workers scan stay small;
- `Scheduler` — enqueues cron occurrences registered with `app.cron(...)`, each exactly once across processes.

Every worker runs them (maintenance=True): each operation is atomic in the store and idempotent, so running them
in many processes is safe and needs no leader election.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.maintenance.base import Service
from conveyor.maintenance.pruner import Pruner
from conveyor.maintenance.rescuer import Rescuer
from conveyor.maintenance.scheduler import CronSchedule, Scheduler, parse_schedule

if TYPE_CHECKING:
    from conveyor.app import Conveyor

__all__ = ["CronSchedule", "Pruner", "Rescuer", "Scheduler", "Service", "default_services", "parse_schedule"]


def default_services(app: Conveyor, *, rescue_interval: float | None = None, worker_id: str = "") -> list[Service]:
    """The services a standard worker runs."""
    services: list[Service] = [
        Rescuer(app, interval=rescue_interval),
        Pruner(app),
    ]
    if getattr(app, "schedules", None):
        services.append(Scheduler(app, owner=worker_id))
    return services
