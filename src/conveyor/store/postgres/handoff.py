"""Hand-off: an enqueue made while a worker of this process waits for jobs (`offer_idle`) claims for that worker in
its own transaction, by the rules of `claim`, in the same round trip, and hands it the jobs (store/base.py
"Hand-off")."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg.errors

from conveyor.model import Finish, Job, JobStatus, NewJob, utcnow
from conveyor.store.base import IdleClaim
from conveyor.store.handoff import IdleClaims, covers, hand_over
from conveyor.store.postgres.copy import use_copy
from conveyor.store.postgres.enqueue import PgEnqueue, duplicate_id
from conveyor.store.postgres.params import claim_params, enqueue_params
from conveyor.store.postgres.pool import DRIVER_ERRORS
from conveyor.store.postgres.rows import claim_order, decode_job
from conveyor.store.wake import LocalWaker

__all__ = ["PgHandOff"]

logger = logging.getLogger("conveyor.store.postgres")


class PgHandOff(PgEnqueue):
    """The hand-off half of the PostgreSQL store's enqueue."""

    _idle: IdleClaims  # workers of this process waiting for jobs
    _handoffs: set[asyncio.Future[list[Job]]]  # hand-off enqueues under way; close() waits for them
    waker: LocalWaker

    def offer_idle(self, claim: IdleClaim) -> None:
        if not self._closed:
            self._idle.offer(claim)

    def withdraw_idle(self, claim: IdleClaim) -> None:
        self._idle.withdraw(claim)

    async def _enqueue_handing_off(self, jobs: Sequence[NewJob], idle: IdleClaim) -> list[Job]:
        """`enqueue` for a batch an idle worker of this process serves: insert, claim for the worker by the rules
        of `claim`, commit once (as durably as any enqueue), then deliver the claimed jobs to it.

        The work runs in a task of its own that the caller awaits through `shield`: a caller cancelled after the
        commit went out (a timeout, a client that hung up) must not strand the claimed jobs in `processing` — the
        task still delivers them. Only when that task itself is cancelled (the event loop shutting down) or the
        connection dies mid-commit can it stay unknown whether the commit happened; then the claimed jobs, if any,
        are never delivered, their lease expires and the rescuer gives them back (a LOST attempt)."""
        task = asyncio.ensure_future(self._hand_off(jobs, idle))
        self._handoffs.add(task)
        task.add_done_callback(self._hand_off_done)
        return await asyncio.shield(task)

    def _hand_off_done(self, task: asyncio.Future[list[Job]]) -> None:
        self._handoffs.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller cancelled meanwhile no longer awaits it (nothing to log twice)

    async def _hand_off(self, jobs: Sequence[NewJob], idle: IdleClaim) -> list[Job]:
        tries = 0

        async def go(conn: psycopg.AsyncConnection[Any]) -> _HandOff:
            nonlocal tries
            tries += 1
            if tries == 1:
                return await self._enqueue_and_claim(conn, jobs, idle)
            # A retry after a lost connection: if the first try committed, its claim did too, and those jobs come
            # back through lease expiry and rescue. Store what is missing; the worker claims for itself.
            return _HandOff.unclaimed(await self._enqueue_again(conn, jobs))

        try:
            done = await self._run(go)
        except BaseException:
            hand_over(idle, [])  # nothing to deliver: the worker offers again (and claims when woken)
            raise
        if not hand_over(idle, done.claimed) and done.claimed:
            await self._hand_back(idle, done.claimed)
        if done.woke and done.inserted:
            self.waker.notify()
        if done.jobs is not None:
            return done.jobs
        # Jobs skipped for a held unique key are looked up (and stored after all when the holder just finished) the
        # way every enqueue does it: after the commit, on its own, and once the worker has its jobs.
        inserted = done.inserted
        return await self._run_enqueue(jobs, lambda conn: self._aenqueue(conn, jobs, inserted=inserted))

    async def _enqueue_and_claim(
        self, conn: psycopg.AsyncConnection[Any], jobs: Sequence[NewJob], idle: IdleClaim
    ) -> _HandOff:
        """Insert `jobs` and claim for `idle` in one transaction. The claim may lose a lane race to another
        claimer (jobs_lane_running, as in `claim`): that rolls the whole transaction back, so it is tried again,
        and in the end the jobs are stored without a claim."""
        params = claim_params(
            idle.worker_id,
            idle.queues,
            idle.limit,
            idle.lease,
            idle.tasks,
            idle.namespaces,
            idle.exclude_namespaces,
            None,
        )
        # Jobs for later wake every waiter (they re-read next_due), even those the idle worker covers.
        now = utcnow()
        params["covered"] = covers(idle, jobs) and all(job.run_at <= now for job in jobs)
        for _ in range(5):
            try:
                if use_copy(jobs):
                    return await self._copy_and_claim(conn, jobs, params)
                return await self._insert_and_claim(conn, jobs, params)
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.constraint_name != "jobs_lane_running":
                    raise duplicate_id(exc) from None
        return _HandOff.unclaimed(await self._aenqueue(conn, jobs))

    async def _insert_and_claim(
        self, conn: psycopg.AsyncConnection[Any], jobs: Sequence[NewJob], params: dict[str, Any]
    ) -> _HandOff:
        """One round trip: the statements of a pipeline up to its Sync run as one implicit transaction, which
        PostgreSQL commits at the Sync, or rolls back entirely when one of them fails (protocol docs, "Pipelining").
        So the claim sees the new rows, and the jobs and the claim commit together or not at all."""
        q = self._q
        async with conn.pipeline():
            await conn.execute(q.HANDOFF_SETUP)
            inserted = await conn.execute(q.ENQUEUE, enqueue_params(jobs))
            claimed = await conn.execute(
                q.HANDOFF_CLAIM_ANY_TASK if params["tasks"] is None else q.HANDOFF_CLAIM, params
            )
        ids = {row[0] for row in await inserted.fetchall()}
        handed, woke = _handed_off(await claimed.fetchall())
        return _HandOff(ids, handed, woke, [j.to_job() for j in jobs] if len(ids) == len(jobs) else None)

    async def _copy_and_claim(
        self, conn: psycopg.AsyncConnection[Any], jobs: Sequence[NewJob], params: dict[str, Any]
    ) -> _HandOff:
        """A large batch: COPY cannot be pipelined and ends an implicit transaction, so this one is explicit
        (three round trips, nothing next to a batch's COPY)."""
        q = self._q
        try:
            await conn.execute(q.BEGIN_HANDOFF)
            out = await self._aenqueue(conn, jobs)
            async with conn.pipeline():
                claimed = await conn.execute(
                    q.HANDOFF_CLAIM_ANY_TASK if params["tasks"] is None else q.HANDOFF_CLAIM, params
                )
                await conn.execute(q.COMMIT)
        except Exception:
            if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                try:
                    await conn.rollback()
                except DRIVER_ERRORS:
                    pass
            raise
        handed, woke = _handed_off(await claimed.fetchall())
        return _HandOff({j.id for j in jobs}, handed, woke, out)

    async def _hand_back(self, idle: IdleClaim, jobs: list[Job]) -> None:
        """The worker refused the jobs claimed for it (it is stopping): back to pending without counting an attempt,
        and wake other processes, which the enqueue may not have woken. Never raises: the jobs are stored."""
        try:
            await self.finish([Finish(j.lease, JobStatus.PENDING, release=True) for j in jobs])
            await self._run(lambda conn: conn.execute(self._q.NOTIFY_JOBS))
        except Exception as exc:
            logger.warning(
                "could not hand back %d job(s) refused by worker %s (%s); they return when their lease expires",
                len(jobs),
                idle.worker_id,
                exc,
            )


@dataclass
class _HandOff:
    """What an enqueue with hand-off did: the ids it stored, the jobs it claimed for the idle worker, whether it
    woke the other waiters (a NOTIFY went out), and the enqueue's answer — None while jobs skipped for a held
    unique key still have to be looked up."""

    inserted: set[str]
    claimed: list[Job]
    woke: bool
    jobs: list[Job] | None

    @classmethod
    def unclaimed(cls, jobs: list[Job]) -> _HandOff:
        """Stored without a claim (and with the trigger's NOTIFY): the worker is told "nothing" and is woken."""
        return cls({j.id for j in jobs if not j.duplicate}, [], True, jobs)


def _handed_off(rows: Sequence[Sequence[Any]]) -> tuple[list[Job], bool]:
    """HANDOFF_CLAIM's rows: (woke, job columns…), one row with NULL job columns when nothing was claimed."""
    claimed = sorted((decode_job(row[1:]) for row in rows if row[1] is not None), key=claim_order)
    return claimed, bool(rows[0][0]) if rows else True
