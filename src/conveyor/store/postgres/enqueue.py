"""Storing jobs: on the store's own connections (a pipelined INSERT from one JSON array, COPY for a large batch,
unique keys answered with their holder) and on the caller's connection (transactional enqueue)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg
import psycopg.errors

from conveyor.errors import ValidationError
from conveyor.model import Job, JobStatus, NewJob
from conveyor.store.caller import check_sqlalchemy
from conveyor.store.postgres.caller import caller_failed, check_caller, unwrap_async
from conveyor.store.postgres.copy import copy_text, use_copy
from conveyor.store.postgres.params import (
    enqueue_params,
    enqueue_unique_params,
    existing_params,
    replace_params,
    unique_existing_params,
)
from conveyor.store.postgres.pool import PgConnections
from conveyor.store.postgres.rows import collect_existing, collect_inserted, decode_job

__all__ = ["PgEnqueue", "duplicate_id"]


class PgEnqueue(PgConnections):
    """The enqueue paths of the PostgreSQL store (its `enqueue` itself, which may hand off, is in store.py)."""

    async def _run_enqueue(
        self, jobs: Sequence[NewJob], first: Callable[[psycopg.AsyncConnection[Any]], Awaitable[list[Job]]]
    ) -> list[Job]:
        """Run `first` (which stores `jobs`) on a pooled connection; a retry after a lost connection stores what
        the first try did not (`_enqueue_again`)."""
        tries = 0

        async def go(conn: psycopg.AsyncConnection[Any]) -> list[Job]:
            nonlocal tries
            tries += 1
            return await (first(conn) if tries == 1 else self._enqueue_again(conn, jobs))

        return await self._run(go)

    async def _enqueue_again(self, conn: psycopg.AsyncConnection[Any], jobs: Sequence[NewJob]) -> list[Job]:
        """A retry after a lost connection: the first try may have committed before its answer was lost. Jobs
        already stored under their id with the same task and creation instant are ours; store the rest."""
        rows = await (await conn.execute(self._q.JOBS_BY_ID, {"ids": [j.id for j in jobs]})).fetchall()
        stored = {row[0]: decode_job(row) for row in rows}
        ours = {
            j.id for j in jobs if j.id in stored and (stored[j.id].task, stored[j.id].created) == (j.task, j.created)
        }
        rest = [j for j in jobs if j.id not in ours]
        done = {job.id: job for job in await self._aenqueue(conn, rest)} if rest else {}
        return [j.to_job() if j.id in ours else done[j.id] for j in jobs]

    async def _aenqueue(
        self, conn: psycopg.AsyncConnection[Any], jobs: Sequence[NewJob], *, inserted: set[str] | None = None
    ) -> list[Job]:
        """Store `jobs`. `inserted`: the ids a first ENQUEUE of them already stored (the hand-off's pipeline);
        only the jobs it skipped for a held unique key are left to resolve."""
        q = self._q
        if inserted is None and any(j.unique_hash is not None for j in jobs):
            async with conn.transaction():  # all or nothing, as one statement is
                plain = [j for j in jobs if j.unique_hash is None]
                done = {job.id: job for job in await self._aenqueue(conn, plain)} if plain else {}
                unique = [j for j in jobs if j.unique_hash is not None]
                done.update(await self._aenqueue_unique(conn, unique))
            return [done[j.id] for j in jobs]
        if inserted is None and use_copy(jobs):
            try:
                async with conn.cursor() as cur, cur.copy(q.ENQUEUE_COPY) as copy:
                    await copy.write(copy_text(jobs))
            except psycopg.errors.UniqueViolation as exc:
                raise duplicate_id(exc) from None
            return [j.to_job() for j in jobs]
        found: dict[str, Job] = {}
        todo = list(jobs)
        for _ in range(3):  # a matched unique key may finish before we read it back: insert those again
            if inserted is None:
                try:
                    cur = await conn.execute(q.ENQUEUE, enqueue_params(todo))
                except psycopg.errors.UniqueViolation as exc:
                    raise duplicate_id(exc) from None
                inserted = {row[0] for row in await cur.fetchall()}
            todo = collect_inserted(todo, inserted, found)
            inserted = None
            if not todo:
                break
            cur = await conn.execute(q.ENQUEUE_EXISTING, existing_params(todo))
            todo = collect_existing(todo, await cur.fetchall(), found)
            if not todo:
                break
        return [found[j.id] for j in jobs]

    async def _aenqueue_unique(self, conn: psycopg.AsyncConnection[Any], jobs: Sequence[NewJob]) -> dict[str, Job]:
        """Store jobs with `unique=`: ON CONFLICT on jobs_unique_hash skips a job whose hash is held; it is answered
        with the holder (after `unique.replace` on a pending one). A holder that left its states before we read it
        (finished, deleted) frees the hash: those jobs are inserted again."""
        q = self._q
        found: dict[str, Job] = {}
        todo = list(jobs)
        for _ in range(3):
            try:
                cur = await conn.execute(q.ENQUEUE_UNIQUE, enqueue_unique_params(todo))
            except psycopg.errors.UniqueViolation as exc:
                raise duplicate_id(exc) from None
            todo = collect_inserted(todo, {row[0] for row in await cur.fetchall()}, found)
            if not todo:
                break
            cur = await conn.execute(q.ENQUEUE_UNIQUE_EXISTING, unique_existing_params(todo))
            holders = {(row[1], row[-1]): row[:-1] for row in await cur.fetchall()}
            rest: list[NewJob] = []
            replaced = False
            for j in todo:
                row = holders.get((j.namespace, j.unique_hash))
                if row is None:
                    rest.append(j)
                    continue
                holder = decode_job(row, duplicate=True)
                if j.unique_replace and holder.status is JobStatus.PENDING:
                    cur = await conn.execute(q.REPLACE_PENDING, replace_params(holder.id, j))
                    new_row = await cur.fetchone()
                    if new_row is not None:
                        holder = decode_job(new_row, duplicate=True)
                        holders[(j.namespace, j.unique_hash)] = new_row
                        replaced = True
                found[j.id] = holder
            if replaced:
                await conn.execute(q.NOTIFY_JOBS)  # a sooner run_at: idle workers elsewhere re-read next_due
            todo = rest
            if not todo:
                break
        return found

    def _enqueue_unique_sync(self, cur: psycopg.Cursor[Any], jobs: Sequence[NewJob]) -> dict[str, Job]:
        """_aenqueue_unique on a caller's (sync) connection."""
        q = self._q
        found: dict[str, Job] = {}
        todo = list(jobs)
        for _ in range(3):
            try:
                cur.execute(q.ENQUEUE_UNIQUE, enqueue_unique_params(todo))
            except psycopg.errors.UniqueViolation as exc:
                raise duplicate_id(exc) from None
            todo = collect_inserted(todo, {row[0] for row in cur.fetchall()}, found)
            if not todo:
                break
            cur.execute(q.ENQUEUE_UNIQUE_EXISTING, unique_existing_params(todo))
            holders = {(row[1], row[-1]): row[:-1] for row in cur.fetchall()}
            rest: list[NewJob] = []
            for j in todo:
                row = holders.get((j.namespace, j.unique_hash))
                if row is None:
                    rest.append(j)
                    continue
                holder = decode_job(row, duplicate=True)
                if j.unique_replace and holder.status is JobStatus.PENDING:
                    cur.execute(q.REPLACE_PENDING, replace_params(holder.id, j))
                    new_row = cur.fetchone()
                    if new_row is not None:
                        holder = decode_job(new_row, duplicate=True)
                        holders[(j.namespace, j.unique_hash)] = new_row
                found[j.id] = holder
            todo = rest
            if not todo:
                break
        return found

    def enqueue_on_connection(
        self, connection: Any, jobs: Sequence[NewJob], *, require_transaction: bool = True
    ) -> list[Job]:
        if not isinstance(connection, psycopg.Connection):
            raise ValidationError(
                f"enqueue on a connection needs a psycopg (3) Connection, or an SQLAlchemy Session/Connection "
                f"on postgresql+psycopg://; got {type(connection).__name__}",
                field="connection",
            )
        check_caller(connection, require_transaction)
        if not jobs:
            return []
        q = self._q
        found: dict[str, Job] = {}
        todo = list(jobs)
        try:
            if use_copy(jobs):
                try:
                    with connection.cursor() as cur, cur.copy(q.ENQUEUE_COPY) as copy:
                        copy.write(copy_text(jobs))
                except psycopg.errors.UniqueViolation as exc:
                    raise duplicate_id(exc) from None
                return [j.to_job() for j in jobs]
            with connection.cursor() as cur:
                if any(j.unique_hash is not None for j in jobs):
                    found.update(self._enqueue_unique_sync(cur, [j for j in jobs if j.unique_hash is not None]))
                    todo = [j for j in jobs if j.unique_hash is None]
                for _ in range(3):
                    if not todo:
                        break
                    try:
                        cur.execute(q.ENQUEUE, enqueue_params(todo))
                    except psycopg.errors.UniqueViolation as exc:
                        raise duplicate_id(exc) from None
                    todo = collect_inserted(todo, {row[0] for row in cur.fetchall()}, found)
                    if not todo:
                        break
                    cur.execute(q.ENQUEUE_EXISTING, existing_params(todo))
                    todo = collect_existing(todo, cur.fetchall(), found)
                    if not todo:
                        break
        except psycopg.Error as exc:
            raise caller_failed(exc) from None
        return [found[j.id] for j in jobs]

    async def aenqueue_on_connection(
        self, connection: Any, jobs: Sequence[NewJob], *, require_transaction: bool = True
    ) -> list[Job]:
        if check_sqlalchemy(connection, require_transaction):
            require_transaction = False  # checked at SQLAlchemy's level, whose transaction the driver's follows
        connection = await unwrap_async(connection)
        if not isinstance(connection, psycopg.AsyncConnection):
            raise ValidationError(
                f"aenqueue on a connection needs a psycopg (3) AsyncConnection, or an SQLAlchemy AsyncSession/"
                f"AsyncConnection on postgresql+psycopg://; got {type(connection).__name__}",
                field="connection",
            )
        check_caller(connection, require_transaction)
        if not jobs:
            return []
        try:
            return await self._aenqueue(connection, jobs)
        except psycopg.Error as exc:
            raise caller_failed(exc) from None


def duplicate_id(exc: psycopg.errors.UniqueViolation) -> ValidationError:
    detail = exc.diag.message_detail or str(exc)
    return ValidationError(f"a job with this id already exists ({detail})", field="id")
