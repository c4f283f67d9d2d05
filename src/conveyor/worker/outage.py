"""Store outages as the worker sees them: every part (claims, flushes, heartbeats) reports a failed store call
here, and the first success after one; the log says once that the store is down (again every 30 s), and once how
long it was down, however many parts noticed."""

from __future__ import annotations

import logging
import time

from conveyor.errors import StoreUnavailable

log = logging.getLogger("conveyor.worker")

MAX_BACKOFF = 5.0
"""Seconds: the longest wait between retries of a failed store call."""


class Outage:
    """Whether the store is unavailable to this worker now, and since when."""

    def __init__(self) -> None:
        self.since: float | None = None
        """time.monotonic() of the first failure of the current outage; None while the store answers."""
        self._last_warning = 0.0

    @property
    def down(self) -> bool:
        return self.since is not None

    def unavailable(self, exc: BaseException, doing: str) -> None:
        now = time.monotonic()
        first = self.since is None
        if first:
            self.since = now
        if first or now - self._last_warning > 30.0:
            self._last_warning = now
            if isinstance(exc, StoreUnavailable):
                log.warning("store unavailable while %s (%s); retrying", doing, exc.message)
            else:
                log.error("error while %s; retrying", doing, exc_info=exc)

    def recovered(self) -> None:
        if self.since is not None:
            log.warning("store reachable again after %.1fs", time.monotonic() - self.since)
        self.since = None
