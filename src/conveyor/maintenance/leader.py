"""Leader election for the maintenance services: one process runs them, another takes over within one lease.

`Elected` runs a set of services only while this process holds an elected role (`Store.elect`): it renews the role
every ttl/3 and starts fresh services each time it wins a new term. It steps down — stops its services — when
another candidate holds the role, and also when it cannot renew in time (a store outage, a partition), *before*
its lease can lapse in the store and another process be elected. The clock rule that makes that safe:

* The store measures the lease with its own clock, from the moment it writes the renewal, which is after this
  process sent it. So the lease runs at least until `sent + ttl` by *this* process's monotonic clock, whatever the
  offset between the clocks. The holder treats `sent + 0.9 × ttl` as its deadline (10 % for clock-rate drift and
  for stopping), bounds each renewal call by that deadline, and stops its services when it passes unrenewed.
* Candidates that are refused retry when the holder's lease would lapse (`expires_in`, the store's clock), at most
  ttl/3 apart: a killed leader is replaced within one lease, a resigning one within ttl/3.

Services stopped on the way down may have a store call in flight (a rescue, a cron enqueue); each is atomic and
idempotent, and cron's once-per-occurrence rule is the store's (derived job ids), so an overlap of one round trip
does no harm. What the election prevents is two processes running the services on and on.

Roles: "maintenance" (rescuer and pruner: every worker with maintenance on is a candidate) and "scheduler" (cron:
only processes that registered schedules are candidates, so a process without the app's crons never holds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from conveyor.maintenance.base import Service

if TYPE_CHECKING:
    from conveyor.runtime import SupportsRuntime

log = logging.getLogger("conveyor.maintenance")

SAFETY = 0.9  # share of the lease (from the send time of its last renewal) a holder acts on before it steps down


class Elected:
    """Run the services `factory()` builds only while `candidate` holds `role`. Same start/stop shape as a Service.

    `on_change(role, leading)` is called (on the loop) whenever this process takes or gives up the role."""

    def __init__(
        self,
        app: SupportsRuntime,
        role: str,
        candidate: str,
        factory: Callable[[], list[Service]],
        *,
        ttl: float,
        on_change: Callable[[str, bool], None] | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"the election lease must be > 0 seconds, got {ttl!r}")
        self.runtime = app.runtime
        self.role = role
        self.candidate = candidate
        self.factory = factory
        self.ttl = ttl
        self.on_change = on_change
        self.term = 0
        self.terms_won = 0
        self.services: list[Service] = []
        self._leading = False
        self._deadline = 0.0
        self._task: asyncio.Task[None] | None = None
        self._failing_since: float | None = None

    @property
    def leading(self) -> bool:
        """Whether this process holds the role (and runs its services) now."""
        return self._leading

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"conveyor-elect-{self.role}")

    async def stop(self) -> None:
        """Stop campaigning; stop the services and give the role up at once (a graceful shutdown), so that another
        process need not wait for the lease to lapse."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._leading:
            await self._step_down("shutting down")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.runtime.store.resign(self.role, self.candidate), 5.0)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            sent = loop.time()
            bound = self._deadline - sent if self._leading else self.ttl
            try:
                role = await asyncio.wait_for(
                    self.runtime.store.elect(self.role, self.candidate, self.ttl), max(bound, 0)
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                role = None
                self._failed(exc)
            if role is not None:
                self._failing_since = None
            if role is not None and role.held:
                deadline = sent + SAFETY * self.ttl
                if self._leading and role.term != self.term:
                    await self._step_down(f"its lease lapsed before it was renewed (term {self.term} ended)")
                if not self._leading and deadline - loop.time() > 0.1 * self.ttl:
                    self._take_office(role.term)
                if self._leading:
                    self._deadline = deadline
                wait = self.ttl / 3
            elif role is not None:
                if self._leading:
                    await self._step_down(f"{role.holder} holds the role now")
                wait = min(max(role.expires_in, 0.0) + 0.005, self.ttl / 3)
            else:
                wait = min(self.ttl / 6, 1.0)
            if self._leading:
                wait = min(wait, self._deadline - loop.time())
            await asyncio.sleep(max(wait, 0.0))
            if self._leading and loop.time() >= self._deadline:
                await self._step_down("it could not renew its lease in time (is the store reachable?)")

    def _take_office(self, term: int) -> None:
        self.term = term
        self.terms_won += 1
        self._leading = True
        self.services = self.factory()
        for service in self.services:
            service.start()
        log.info("%s is now the %s leader (term %d): running %s", self.candidate, self.role, term, self._names())
        if self.on_change is not None:
            self.on_change(self.role, True)

    async def _step_down(self, why: str) -> None:
        services, self.services = self.services, []
        self._leading = False
        log.warning("%s stops leading %s: %s", self.candidate, self.role, why)
        for service in services:
            with contextlib.suppress(Exception):
                await service.stop()
        if self.on_change is not None:
            self.on_change(self.role, False)

    def _names(self) -> str:
        return ", ".join(s.name for s in self.services) or "nothing"

    def _failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
            what = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            log.warning("%s: election for %s failed (%s); retrying", self.candidate, self.role, what)
