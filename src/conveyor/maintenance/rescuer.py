"""The rescuer: jobs whose worker stopped heartbeating (killed, frozen, partitioned) go back to the queue.

The store records the lost try (status code 0) and re-queues or dead-letters the job atomically; running it every
lease/2 bounds the time a crashed worker's job waits to about 1.5 leases."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from conveyor.maintenance.base import Service

if TYPE_CHECKING:
    from conveyor.runtime import SupportsRuntime

log = logging.getLogger("conveyor.maintenance")


class Rescuer(Service):
    name = "rescuer"

    def __init__(self, app: SupportsRuntime, *, interval: float | None = None, limit: int = 1000) -> None:
        super().__init__(interval or max(app.runtime.lease.total_seconds() / 2, 0.1))
        self.runtime = app.runtime
        self.limit = limit
        self.rescued = 0

    async def tick(self) -> None:
        while True:
            jobs = await self.runtime.store.rescue(limit=self.limit)
            if jobs:
                self.rescued += len(jobs)
                log.warning(
                    "rescued %d job(s) whose lease expired (worker stopped heartbeating): %s",
                    len(jobs),
                    ", ".join(f"{j.id} ({j.task}) → {j.status.value}" for j in jobs[:10]),
                )
            if len(jobs) < self.limit:
                return
