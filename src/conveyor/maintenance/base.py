"""The shape every maintenance service shares: run `tick()` every `interval` seconds until stopped, and survive
store outages (log a warning, try again next interval) so a flaky database never takes a worker down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

from conveyor.errors import StoreUnavailable

log = logging.getLogger("conveyor.maintenance")


class Service:
    """Subclasses implement `tick()`; `interval` is seconds between ticks (jittered ±10 % so that many workers
    started together do not hit the store in lockstep). `initial_delay` is the wait before the first tick."""

    name = "service"

    def __init__(self, interval: float, *, initial_delay: float = 0.0) -> None:
        self.interval = interval
        self.initial_delay = initial_delay
        self.runs = 0
        self._task: asyncio.Task[None] | None = None
        self._failing_since: float | None = None

    async def tick(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        """Start on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"conveyor-{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def run_once(self) -> None:
        """One tick with the service's error handling (also handy in tests)."""
        try:
            await self.tick()
            self.runs += 1
            if self._failing_since is not None:
                log.info("%s: store reachable again", self.name)
                self._failing_since = None
        except asyncio.CancelledError:
            raise
        except StoreUnavailable as exc:
            if self._failing_since is None:
                self._failing_since = time.monotonic()
                log.warning("%s: store unavailable (%s); will retry", self.name, exc.message)
        except Exception:
            log.exception("%s failed; will retry in %gs", self.name, self.interval)

    async def _loop(self) -> None:
        if self.initial_delay > 0:
            await asyncio.sleep(self.initial_delay)
        while True:
            await self.run_once()
            await asyncio.sleep(self.next_delay())

    def next_delay(self) -> float:
        return self.interval * random.uniform(0.9, 1.1)
