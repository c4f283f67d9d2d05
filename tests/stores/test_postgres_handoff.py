"""PostgreSQL hand-off: an enqueue made while a worker of this process waits claims for it in the enqueue's own
transaction (store/base.py "Hand-off"; docs/postgres.md "Hand-off"). The shared rules are checked by
tests/conformance/test_store_handoff.py; these tests check what only PostgreSQL can get wrong: one transaction
for the jobs and the claim (a failure stores nothing and claims nothing), the enqueue's durability, the NOTIFY that
is skipped only when nobody else could find work, the transactional enqueue that never hands off, and a caller
cancelled mid-enqueue, which never leaves a job stuck."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from tests.backends import postgres as backend

from conveyor.conformance.helpers import Taker, eventually
from conveyor.conformance.helpers import offer as shared_offer
from conveyor.errors import ValidationError
from conveyor.model import Job, JobStatus, NewJob
from conveyor.store.base import IdleClaim
from conveyor.store.postgres import PostgresStore, parse_url

pytestmark = pytest.mark.skipif(
    "postgresql" not in os.environ.get("CONVEYOR_TEST_STORES", "postgresql"),
    reason="PostgreSQL not selected in CONVEYOR_TEST_STORES",
)

LEASE = timedelta(seconds=30)


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    u = backend.fresh_url(tmp_path)
    try:
        yield u
    finally:
        await backend.cleanup(u)


@pytest.fixture
async def store(url: str) -> AsyncIterator[PostgresStore]:
    s = PostgresStore(url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def offer(store: PostgresStore, taker: Taker, **options: Any) -> IdleClaim:
    """An idle worker of the default namespace (what a Worker offers when only `default` is known)."""
    options.setdefault("namespaces", ("default",))
    return shared_offer(store, taker, **options)


def _new(**options: Any) -> NewJob:
    return NewJob.build("task", options.pop("payload", None), **options)


async def _execute(store: PostgresStore, text: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
    """Run SQL on the test server with `{s}` standing for the store's quoted schema."""
    async with await psycopg.AsyncConnection.connect(backend.SERVER_URL, autocommit=True) as conn:
        cur = await conn.execute(sql.SQL(text).format(s=sql.Identifier(store.schema)), params)
        return await cur.fetchall() if cur.description else []


async def _status(store: PostgresStore, job_id: str) -> JobStatus | None:
    job = await store.get_job(job_id)
    return None if job is None else job.status


# ---- one transaction ------------------------------------------------------------------------------------------


async def test_the_jobs_and_the_claim_commit_in_one_durable_transaction(store: PostgresStore) -> None:
    """The INSERT and the claim's UPDATE run in the same transaction, and with fast_worker_commits on (the default)
    that transaction still commits durably: the claim does not turn the enqueue's commit asynchronous."""
    await _execute(
        store,
        """
        CREATE TABLE {s}.tx_log (op text, xid bigint, synchronous_commit text);
        CREATE FUNCTION {s}.log_tx() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO {s}.tx_log VALUES (TG_OP, txid_current(), current_setting('synchronous_commit'));
            RETURN NULL;
        END $$;
        CREATE TRIGGER log_tx AFTER INSERT OR UPDATE ON {s}.jobs FOR EACH STATEMENT EXECUTE FUNCTION {s}.log_tx();
        """,
    )
    taker = Taker()
    offer(store, taker)
    (job,) = await store.enqueue([_new()])
    assert [j.id for j in taker.jobs] == [job.id]
    log = await _execute(store, "SELECT op, xid, synchronous_commit FROM {s}.tx_log ORDER BY op")
    assert [(op, sc) for op, _, sc in log] == [("INSERT", "on"), ("UPDATE", "on")]
    assert log[0][1] == log[1][1]  # one transaction id: stored and claimed together
    # an ordinary claim still commits asynchronously in its own transaction
    await store.enqueue([_new()])
    await store.claim("w", ["default"], 1, LEASE)
    last = await _execute(store, "SELECT synchronous_commit FROM {s}.tx_log WHERE op = 'UPDATE' ORDER BY xid DESC")
    assert last[0] == ("off",)


async def test_a_duplicate_id_rolls_back_the_enqueue_and_its_claim(store: PostgresStore) -> None:
    (older,) = await store.enqueue([_new(payload="older")])  # the claim would take this one first
    taker = Taker()
    offer(store, taker)
    fresh = _new(payload="fresh")
    with pytest.raises(ValidationError, match="already exists"):
        await store.enqueue([fresh, dataclasses.replace(_new(), id=older.id)])
    assert taker.jobs == []  # told "nothing" (it offers again), never handed a job of a rolled-back claim
    assert await store.get_job(fresh.id) is None
    got = await store.get_job(older.id)
    assert got is not None and got.status is JobStatus.PENDING and got.attempts == 0
    assert (await store.stats()).processing == 0
    taker2 = Taker()
    offer(store, taker2, limit=1)
    (after,) = await store.enqueue([_new()])  # the connection is clean and hand-off works again
    assert [j.id for j in taker2.jobs] == [older.id]
    assert await _status(store, after.id) is JobStatus.PENDING


async def test_a_failing_claim_rolls_back_the_jobs_too(store: PostgresStore) -> None:
    await _execute(
        store,
        """
        CREATE FUNCTION {s}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'claims refused'; END $$;
        CREATE TRIGGER refuse BEFORE UPDATE ON {s}.jobs FOR EACH ROW EXECUTE FUNCTION {s}.refuse();
        """,
    )
    taker = Taker()
    offer(store, taker)
    job = _new()
    with pytest.raises(psycopg.Error, match="claims refused"):
        await store.enqueue([job])
    assert await store.get_job(job.id) is None
    assert taker.jobs == []


async def test_a_lost_lane_race_is_claimed_again_and_never_fails_the_enqueue(store: PostgresStore) -> None:
    """A hand-off claim can lose a lane race like any claim (jobs_lane_running): that rolls the transaction back,
    so it is tried again; when it keeps losing, the jobs are stored without a claim."""
    await _execute(
        store,
        """
        CREATE SEQUENCE {s}.races;
        CREATE FUNCTION {s}.race() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF nextval((TG_TABLE_SCHEMA || '.races')::regclass) <= TG_ARGV[0]::int THEN
                RAISE unique_violation USING MESSAGE = 'lane race', CONSTRAINT = 'jobs_lane_running';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER race BEFORE UPDATE ON {s}.jobs FOR EACH ROW EXECUTE FUNCTION {s}.race('2');
        """,
    )
    taker = Taker()
    offer(store, taker)
    (job,) = await store.enqueue([_new(user_id="u1")])
    assert [j.id for j in taker.jobs] == [job.id]  # the third try won
    await _execute(
        store,
        """
        DROP TRIGGER race ON {s}.jobs;
        CREATE TRIGGER race BEFORE UPDATE ON {s}.jobs FOR EACH ROW EXECUTE FUNCTION {s}.race('1000000');
        """,
    )
    taker2 = Taker()
    offer(store, taker2)
    (kept,) = await store.enqueue([_new(user_id="u2")])
    assert taker2.deliveries == [[]]
    assert await _status(store, kept.id) is JobStatus.PENDING


# ---- batches, unique keys, and where hand-off does not apply --------------------------------------------------


async def test_a_copy_batch_hands_off_up_to_the_limit(store: PostgresStore) -> None:
    taker = Taker()
    offer(store, taker, limit=5)
    news = [_new(payload=i) for i in range(100)]  # ≥ 64 jobs without unique keys: COPY, explicit transaction
    out = await store.enqueue(news)
    assert [j.id for j in out] == [n.id for n in news]
    assert [j.id for j in taker.jobs] == [n.id for n in news[:5]]
    stats = await store.stats()
    assert (stats.processing, stats.pending) == (5, 95)
    taker2 = Taker()
    offer(store, taker2, limit=5)
    with pytest.raises(ValidationError):  # a repeated id: nothing of the batch stored, nothing claimed
        await store.enqueue([_new() for _ in range(70)] + [news[0]])
    assert taker2.jobs == []
    stats = await store.stats()
    assert (stats.processing, stats.pending) == (5, 95)


async def test_unique_keys_answer_duplicates_and_hand_off_the_rest(store: PostgresStore) -> None:
    (holder,) = await store.enqueue([_new(unique_key="k", priority=5)])
    taker = Taker()
    offer(store, taker, limit=10)
    dup, fresh, twin = await store.enqueue([_new(unique_key="k"), _new(unique_key="n"), _new(unique_key="n")])
    assert dup.duplicate and dup.id == holder.id
    assert not fresh.duplicate
    assert twin.duplicate and twin.id == fresh.id  # the first of equal keys in a batch wins
    assert [j.id for j in taker.jobs] == [fresh.id, holder.id]  # claim order: priority 0 before 5


async def test_enqueue_on_the_callers_connection_never_hands_off(store: PostgresStore, url: str) -> None:
    """The caller's transaction may roll back: a claim inside it would hand a worker a job that never existed."""
    taker = Taker()
    offer(store, taker, limit=1)
    conninfo, _ = parse_url(url)
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        await conn.execute("SELECT 1")  # the caller's transaction is open
        (job,) = await store.aenqueue_on_connection(conn, [_new()])
        await conn.commit()
    assert taker.deliveries == []
    assert await _status(store, job.id) is JobStatus.PENDING
    (later,) = await store.enqueue([_new()])  # the offer is still there for an ordinary enqueue
    assert [j.id for j in taker.jobs] == [job.id]
    assert await _status(store, later.id) is JobStatus.PENDING


# ---- NOTIFY --------------------------------------------------------------------------------------------------


async def _woken(url: str, store: PostgresStore, enqueue: Any, *, within: float = 5.0) -> bool:
    """Whether a waiter in another store instance (another process, in effect) is woken by `enqueue()` within
    `within` seconds."""
    waiter = PostgresStore(url)
    await waiter.open()
    try:
        await asyncio.wait_for(waiter.listening.wait(), 10)
        wait = asyncio.create_task(waiter.wait_for_jobs(10.0))
        await asyncio.sleep(0.05)
        await enqueue()
        try:
            await asyncio.wait_for(asyncio.shield(wait), within)
        except TimeoutError:
            wait.cancel()
            return False
        return True
    finally:
        await waiter.close()


async def test_no_notify_when_the_idle_worker_took_all_it_could(store: PostgresStore, url: str) -> None:
    taker = Taker()
    offer(store, taker, limit=5)
    assert not await _woken(url, store, lambda: store.enqueue([_new(), _new()]), within=1.0)
    assert len(taker.jobs) == 2


async def test_notify_when_the_idle_worker_took_its_limit(store: PostgresStore, url: str) -> None:
    taker = Taker()
    offer(store, taker, limit=1)
    assert await _woken(url, store, lambda: store.enqueue([_new(), _new()]))  # one is left for the others
    assert len(taker.jobs) == 1


async def test_notify_when_a_job_is_for_a_queue_or_namespace_the_idle_worker_does_not_serve(
    store: PostgresStore, url: str
) -> None:
    taker = Taker()
    offer(store, taker, limit=5)
    assert await _woken(url, store, lambda: store.enqueue([_new(), _new(queue="mail")]))
    assert len(taker.jobs) == 1
    taker2 = Taker()
    offer(store, taker2, limit=5)
    assert await _woken(url, store, lambda: store.enqueue([_new(), _new(namespace="other")]))
    assert len(taker2.jobs) == 1


async def test_a_refused_handoff_wakes_the_others(store: PostgresStore, url: str) -> None:
    """The enqueue skipped its NOTIFY (the idle worker took everything); the worker then refused (stopping): the
    jobs go back to pending and other processes are woken for them."""
    taker = Taker(accept=False)
    offer(store, taker, limit=5)
    jobs: list[Job] = []

    async def enqueue() -> None:
        jobs.extend(await store.enqueue([_new()]))

    assert await _woken(url, store, enqueue)
    got = await store.get_job(jobs[0].id)
    assert got is not None and got.status is JobStatus.PENDING and got.attempts == 0


# ---- cancellation -----------------------------------------------------------------------------------------------


async def _slow_inserts(store: PostgresStore, seconds: float) -> None:
    await _execute(
        store,
        f"""
        CREATE FUNCTION {{s}}.slow() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_sleep({seconds}); RETURN NULL; END $$;
        CREATE TRIGGER slow AFTER INSERT ON {{s}}.jobs FOR EACH STATEMENT EXECUTE FUNCTION {{s}}.slow();
        """,
    )


@pytest.mark.parametrize("accept", [True, False])
async def test_a_caller_cancelled_mid_enqueue_still_delivers(store: PostgresStore, accept: bool) -> None:
    """The transaction runs shielded from the caller: cancelled while the database works, the enqueue still
    commits and the worker still gets the job (or, refusing it, the job goes back to pending)."""
    await _slow_inserts(store, 0.3)
    taker = Taker(accept=accept)
    offer(store, taker)
    job = _new()
    call = asyncio.create_task(store.enqueue([job]))
    await asyncio.sleep(0.1)  # the pipeline is at the server, inside the INSERT
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await eventually(lambda: asyncio.sleep(0, bool(taker.deliveries)), what="the delivery")
    assert [j.id for j in taker.jobs] == [job.id]
    want = JobStatus.PROCESSING if accept else JobStatus.PENDING

    async def settled() -> bool:
        got = await store.get_job(job.id)
        return got is not None and got.status is want and got.attempts == (1 if accept else 0)

    await eventually(settled, what=f"the job {want.value}")


async def test_close_waits_for_a_handoff_under_way(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    await _slow_inserts(store, 0.3)
    taker = Taker(accept=False)
    offer(store, taker)
    job = _new()
    call = asyncio.create_task(store.enqueue([job]))
    await asyncio.sleep(0.1)
    call.cancel()
    await store.close()  # waits for the enqueue, its delivery and the hand-back of the refused job
    assert [j.id for j in taker.jobs] == [job.id]
    check = PostgresStore(url)
    await check.open()
    try:
        got = await check.get_job(job.id)
        assert got is not None and got.status is JobStatus.PENDING and got.attempts == 0
    finally:
        await check.close()


async def test_a_connection_lost_mid_enqueue_leaves_the_job_claimable(store: PostgresStore) -> None:
    """The transaction dies with its connection: the enqueue is retried once on a fresh connection, which stores
    the job without a claim; the worker is told "nothing" and claims it itself when woken."""
    await _slow_inserts(store, 1.0)
    taker = Taker()
    offer(store, taker)
    job = _new()
    call = asyncio.create_task(store.enqueue([job]))
    await asyncio.sleep(0.3)  # the pipeline is at the server, inside the INSERT
    killed = await _execute(
        store,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s",
        [f'%INSERT INTO "{store.schema}".jobs%'],
    )
    assert killed == [(True,)]
    (stored,) = await asyncio.wait_for(call, 10)
    assert stored.id == job.id
    assert taker.deliveries == [[]]
    claimed = await store.claim("w", ["default"], 10, LEASE)
    assert [j.id for j in claimed] == [job.id]


async def test_a_handoff_cut_off_after_its_commit_comes_back_through_rescue(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the hand-off task itself is cancelled right after the commit (the event loop shutting down), nobody
    delivers the claimed job: it is not stuck, its lease expires and the rescuer gives it back."""
    from conveyor.store.postgres import handoff as pg

    def cut_off(claim: IdleClaim, jobs: list[Job]) -> bool:
        raise asyncio.CancelledError

    monkeypatch.setattr(pg, "hand_over", cut_off)
    taker = Taker()
    offer(store, taker, lease=timedelta(milliseconds=200))
    job = _new()
    with pytest.raises(asyncio.CancelledError):
        await store.enqueue([job])
    assert await _status(store, job.id) is JobStatus.PROCESSING
    await asyncio.sleep(0.3)
    (rescued,) = await store.rescue()
    assert rescued.id == job.id and rescued.status is JobStatus.PENDING
