"""The rescuer: jobs whose worker stopped heartbeating (killed, frozen, partitioned) go back to the queue.

The store records the lost try (status code 0) and re-queues or dead-letters the job atomically. When to look: after
each rescue the store says when the earliest lease of a processing job runs out (`Store.next_lease_expiry`, by its
own clock) and the rescuer sleeps until then, never longer than `interval` (lease/2; a job claimed meanwhile under a
shorter lease than the rest is still found within it). A killed worker's job is therefore given back when its lease
expires — at most one lease after the kill, not up to half a lease later at the next periodic tick — and a newly
elected leader rescues at once (a Service ticks when it starts). The election lease is a third of the job lease (at
least 2 s; worker/lifecycle.py), so a kill of the leader adds at most that: recovery within about 1.33 leases,
whatever process was killed (issue 9)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from conveyor.maintenance.base import Service

if TYPE_CHECKING:
    from conveyor.runtime import SupportsRuntime

log = logging.getLogger("conveyor.maintenance")

LATE = 0.01
"""Seconds the rescuer wakes after the earliest lease runs out: a hair late rather than early, so `rescue` finds it
expired."""
MIN_RETRY = 0.01
"""Seconds before looking again at a lease that has expired but was not rescued (a row locked by a finish or a
heartbeat in flight, which decides it); doubled on each repeat, up to `interval`, so nothing spins."""
OUTAGE_RETRY = 0.25
"""Seconds before the next try after a tick that failed (store unavailable); doubled on each failure, up to
`interval`. Not the interval itself: leases that ran out during an outage are rescued soon after it ends (the fault
run saw a rescue wait half a lease behind a Redis crash-restart of 0.4 s)."""


class Rescuer(Service):
    name = "rescuer"

    def __init__(self, app: SupportsRuntime, *, interval: float | None = None, limit: int = 1000) -> None:
        super().__init__(interval or max(app.runtime.lease.total_seconds() / 2, 0.1))
        self.runtime = app.runtime
        self.limit = limit
        self.rescued = 0
        self.next_expiry: float | None = None
        """Seconds until the earliest lease ran out, as the store said after the last tick (None: no job was
        processing, or the store could not be asked)."""
        self._stale = 0  # consecutive ticks that found an expired lease they could not rescue
        self._failures = 0  # consecutive ticks that did not finish (the store was unavailable)

    async def tick(self) -> None:
        self.next_expiry = None
        self._failures += 1
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
                break
        self.next_expiry = await self.runtime.store.next_lease_expiry()
        self._failures = 0

    def next_delay(self) -> float:
        """Until the earliest lease runs out, at most the (jittered) interval; soon again after a failed tick."""
        periodic = super().next_delay()
        if self._failures:
            return min(periodic, OUTAGE_RETRY * 2.0 ** min(self._failures - 1, 20))
        left = self.next_expiry
        if left is None:
            self._stale = 0
            return periodic
        if left <= 0:
            self._stale += 1
            return min(periodic, MIN_RETRY * 2.0 ** min(self._stale, 20))
        self._stale = 0
        return min(periodic, left + LATE)
