"""Retry delays: exponential backoff with jitter (SPEC §2.4: 1 s × 2^(n−1), ±20 %, capped at 1 h)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry number n (n = the attempt that just failed, from 1).

    Jitter spreads retries of jobs that failed together (a downstream outage) so they do not return as a herd.
    """

    base: float = 1.0
    factor: float = 2.0
    jitter: float = 0.2
    max_delay: float = 3600.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        exponent = max(attempt - 1, 0)
        raw = self.base * self.factor ** min(exponent, 64)
        capped = min(raw, self.max_delay)
        if self.jitter:
            spread = capped * self.jitter
            capped += (rng or random).uniform(-spread, spread)
        return max(0.0, min(capped, self.max_delay))


DEFAULT_BACKOFF = Backoff()
