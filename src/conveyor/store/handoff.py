"""Hand-off bookkeeping shared by the stores that claim inside an enqueue (memory, PostgreSQL, Redis): which
workers of this process wait for jobs, which of them an enqueue may claim for, and delivery that never strands a
job.

Why it exists: with an idle worker in the same process, enqueue → wake → claim costs two round trips and a few
event-loop hops before the job starts. Claiming in the enqueue's own atomic step and handing the jobs over costs
one. See `IdleClaim` in store/base.py for the contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from conveyor.model import Job, NewJob, utcnow
from conveyor.store.base import IdleClaim

log = logging.getLogger("conveyor.store")


class IdleClaims:
    """The offers of one store object, oldest first; an enqueue takes at most one."""

    def __init__(self) -> None:
        self._offers: list[IdleClaim] = []

    def __bool__(self) -> bool:
        return bool(self._offers)

    def offer(self, claim: IdleClaim) -> None:
        if claim.limit > 0 and claim not in self._offers:
            self._offers.append(claim)

    def withdraw(self, claim: IdleClaim) -> None:
        with contextlib.suppress(ValueError):
            self._offers.remove(claim)

    def clear(self) -> None:
        self._offers.clear()

    def take(self, jobs: Sequence[NewJob]) -> IdleClaim | None:
        """The oldest offer, made on this event loop, that would claim one of `jobs` now; removed from the offers.
        None when no job is due now (a scheduled job is not worth a claim) or nobody on this loop serves them."""
        if not self._offers:
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        now = utcnow()
        due = [j for j in jobs if j.run_at <= now]
        if not due:
            return None
        for i, claim in enumerate(self._offers):
            if claim.loop is not loop:
                continue
            if any(serves(claim, j) for j in due):
                del self._offers[i]
                return claim
        return None


def serves(claim: IdleClaim, job: NewJob) -> bool:
    """Whether the idle worker's claim covers the job's (namespace, queue, task)."""
    if job.queue not in claim.queues or job.namespace in claim.exclude_namespaces:
        return False
    if claim.tasks is not None and job.task not in claim.tasks:
        return False
    return claim.namespaces is None or job.namespace in claim.namespaces


def covers(claim: IdleClaim, jobs: Sequence[NewJob]) -> bool:
    """Whether the idle worker serves every job's (namespace, queue, task). Then, when it took fewer jobs than its
    limit, nothing is left that another worker could claim (lanes, pauses, caps, namespace settings: the same for
    every claimer), and no wake-up is needed."""
    return all(serves(claim, j) for j in jobs)


def hand_over(claim: IdleClaim, jobs: list[Job]) -> bool:
    """Give claimed jobs to the waiting worker, even none (it then offers again). False when it refused them (or
    broke): the caller releases them."""
    try:
        return bool(claim.deliver(jobs))
    except Exception:
        log.exception("worker %s failed to take %d handed-off job(s); handing them back", claim.worker_id, len(jobs))
        return False
