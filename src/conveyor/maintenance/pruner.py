"""The pruner: deletes finished jobs (and their attempt records) past their retention, SPEC §2.6.

`Store.prune` takes one cut-off per kind, not one per namespace, so the pruner uses the *longest* retention any
namespace asks for (and at least the worker's defaults): a job is never deleted before its namespace allows it; a
namespace with a shorter retention keeps its jobs a little longer than asked.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from conveyor.maintenance.base import Service
from conveyor.model import utcnow

if TYPE_CHECKING:
    from conveyor.app import Conveyor

log = logging.getLogger("conveyor.maintenance")

DEFAULT_COMPLETED_RETENTION = 7 * 86400.0
DEFAULT_FAILED_RETENTION = 30 * 86400.0


class Pruner(Service):
    name = "pruner"

    def __init__(
        self,
        app: Conveyor,
        *,
        interval: float = 60.0,
        completed_retention: float | None = None,
        failed_retention: float | None = None,
        limit: int = 10_000,
        initial_delay: float = 5.0,
    ) -> None:
        super().__init__(interval, initial_delay=initial_delay)
        self.app = app
        self.completed_retention = completed_retention
        self.failed_retention = failed_retention
        self.limit = limit
        self.pruned = 0

    async def retentions(self) -> tuple[float, float]:
        """(completed, failed) retention in seconds: explicit settings win, else the longest namespace setting."""
        completed, failed = self.completed_retention, self.failed_retention
        if completed is None or failed is None:
            spaces = await self.app.store.list_namespaces()
            if completed is None:
                completed = max([ns.completed_retention for ns in spaces], default=DEFAULT_COMPLETED_RETENTION)
            if failed is None:
                failed = max([ns.failed_retention for ns in spaces], default=DEFAULT_FAILED_RETENTION)
        return completed, failed

    async def tick(self) -> None:
        completed, failed = await self.retentions()
        now = utcnow()
        while True:
            n = await self.app.store.prune(
                now - timedelta(seconds=completed), now - timedelta(seconds=failed), limit=self.limit
            )
            self.pruned += n
            if n:
                log.info("pruned %d finished job(s) past retention", n)
            if n < self.limit:
                return
