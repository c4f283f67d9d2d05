"""The pruner: deletes finished jobs (and their attempt records) past their retention, SPEC §2.6.

Retention is a namespace setting, so the pruner works namespace by namespace: each one with its own
`completed_retention` / `failed_retention` (a namespace that has jobs but no stored settings gets the defaults,
7 and 30 days). A Pruner built with explicit retentions applies them to every namespace.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from conveyor.maintenance.base import Service
from conveyor.model import utcnow

if TYPE_CHECKING:
    from conveyor.runtime import SupportsRuntime

log = logging.getLogger("conveyor.maintenance")

DEFAULT_COMPLETED_RETENTION = 7 * 86400.0
DEFAULT_FAILED_RETENTION = 30 * 86400.0


class Pruner(Service):
    name = "pruner"

    def __init__(
        self,
        app: SupportsRuntime,
        *,
        interval: float = 60.0,
        completed_retention: float | None = None,
        failed_retention: float | None = None,
        limit: int = 10_000,
        initial_delay: float = 5.0,
    ) -> None:
        super().__init__(interval, initial_delay=initial_delay)
        self.runtime = app.runtime
        self.completed_retention = completed_retention
        self.failed_retention = failed_retention
        self.limit = limit
        self.pruned = 0

    async def plan(self) -> list[tuple[str, float, float]]:
        """(namespace, completed retention, failed retention) in seconds, for every namespace that has jobs or
        settings. Explicit settings of this Pruner win over the namespaces' own."""
        store = self.runtime.store
        spaces = {ns.name: ns for ns in await store.list_namespaces()}
        names = set(spaces) | {q.namespace for q in await store.list_queues()}
        plan: list[tuple[str, float, float]] = []
        for name in sorted(names):
            ns = spaces.get(name)
            completed = self.completed_retention
            if completed is None:
                completed = ns.completed_retention if ns is not None else DEFAULT_COMPLETED_RETENTION
            failed = self.failed_retention
            if failed is None:
                failed = ns.failed_retention if ns is not None else DEFAULT_FAILED_RETENTION
            plan.append((name, completed, failed))
        return plan

    async def tick(self) -> None:
        now = utcnow()
        for namespace, completed, failed in await self.plan():
            while True:
                n = await self.runtime.store.prune(
                    now - timedelta(seconds=completed),
                    now - timedelta(seconds=failed),
                    limit=self.limit,
                    namespace=namespace,
                )
                self.pruned += n
                if n:
                    log.info("pruned %d finished job(s) of namespace %s past retention", n, namespace)
                if n < self.limit:
                    break
