"""Redis-specific tests: key layout and prefix isolation, the index invariants every Lua script keeps, wake-ups
across store instances through Redis, self-expiring worker registrations, script reloading and the eviction
warning. Shared behaviour is in tests/conformance; outages are in test_redis_outage.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from tests.backends.redis import cleanup, fresh_url
from tests.stores.redis_server import PrivateRedis

from conveyor.errors import ConveyorError
from conveyor.model import (
    Attempt,
    AttemptOutcome,
    Finish,
    Job,
    JobFilter,
    JobStatus,
    Namespace,
    NewJob,
    QueueSettings,
    WorkerInfo,
)
from conveyor.store.base import IdleClaim
from conveyor.store.redis import RedisStore
from conveyor.store.redis.store import SCRIPTS, load_script
from conveyor.store.redis.url import split_url

LEASE = timedelta(seconds=30)


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    u = fresh_url(tmp_path)
    try:
        yield u
    finally:
        await cleanup(u)


@pytest.fixture
async def store(url: str) -> AsyncIterator[RedisStore]:
    s = RedisStore(url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def raw(url: str) -> AsyncIterator[aioredis.Redis]:
    base, _ = split_url(url)
    client = aioredis.Redis.from_url(base, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


def test_url_prefix_is_stripped_and_other_parameters_kept() -> None:
    assert split_url("redis://h:1/2?prefix=abc") == ("redis://h:1/2", "abc")
    assert split_url("redis://h:1/2") == ("redis://h:1/2", "conveyor")
    base, prefix = split_url("redis://h:1/2?socket_timeout=3&prefix=p:q")
    assert (base, prefix) == ("redis://h:1/2?socket_timeout=3", "p:q")


def test_every_script_is_common_helpers_plus_its_own_file() -> None:
    for name in SCRIPTS:
        text = load_script(name)
        assert "local function transition" in text and f"-- {name}.lua" in text


async def test_every_key_lives_under_the_prefix(store: RedisStore, raw: aioredis.Redis) -> None:
    await store.enqueue([NewJob.build("t", user_id="u1", unique_key="k"), NewJob.build("t", delay=60)])
    await store.put_queue_settings(QueueSettings("default", "q2", paused=True))
    await store.kv_set("a", "1")
    [job] = await store.claim("w", ["default"], 1, LEASE)
    await store.finish([Finish(job.lease, JobStatus.COMPLETED)])
    keys = [k async for k in raw.scan_iter(match=f"{store.prefix}:*", count=1000)]
    assert keys
    assert all(k.startswith(store.prefix + ":") for k in keys)
    other = RedisStore(fresh_url(Path("/unused")))
    await other.open()
    try:
        assert (await other.stats()).total == 0  # another prefix sees nothing
    finally:
        await other.close()
        await cleanup(other.url)


# ---- index invariants ------------------------------------------------------------------------------------------


async def check_invariants(store: RedisStore, raw: Any) -> None:
    """Rebuild every index from the job hashes and compare with what the scripts maintained."""
    p = store.prefix
    jobs: dict[str, dict[str, str]] = {}
    async for key in raw.scan_iter(match=f"{p}:job:*", count=1000):
        h = await raw.hgetall(key)
        jobs[h["id"]] = h
    now_s, now_us = await raw.time()
    now = now_s * 1_000_000 + now_us
    pairs = set(await raw.smembers(f"{p}:pairs"))
    counts: Counter[tuple[str, str]] = Counter()
    for j in jobs.values():
        pr = f"{j['namespace']}:{j['queue']}"
        assert pr in pairs
        counts[(pr, j["status"])] += 1
        counts[(pr, f"{j['status']}|{j['task']}")] += 1
    for pr in pairs:
        n = await raw.hgetall(f"{p}:q:{pr}:n")
        for field, value in n.items():
            assert int(value) == counts[(pr, field)], (pr, field)
        for status in JobStatus:
            members = set(await raw.zrange(f"{p}:q:{pr}:s:{status.value}", 0, -1))
            expected = {i for i, j in jobs.items() if f"{j['namespace']}:{j['queue']}" == pr and j["status"] == status}
            assert members == expected, (pr, status)
        pend = set(await raw.zrange(f"{p}:q:{pr}:pend", 0, -1))
        assert pend == {
            i for i, j in jobs.items() if f"{j['namespace']}:{j['queue']}" == pr and j["status"] == "pending"
        }
    # claim index: non-lane pending jobs, plus the head of each idle lane, nothing else
    lanes: dict[tuple[str, str], list[dict[str, str]]] = {}
    for j in jobs.values():
        if "skey" in j:
            lanes.setdefault((j["namespace"], j["skey"]), []).append(j)
    expected_index = {i for i, j in jobs.items() if j["status"] == "pending" and "skey" not in j}
    for (ns, skey), lane_jobs in lanes.items():
        pending = sorted((int(j["priority"]), j["id"]) for j in lane_jobs if j["status"] == "pending")
        processing = [j["id"] for j in lane_jobs if j["status"] == "processing"]
        assert len(processing) <= 1, f"lane {skey} runs {processing} at once"
        lane = await raw.zrange(f"{p}:lane:{ns}:{skey}", 0, -1)
        assert lane == [i for _, i in pending]
        st = await raw.hgetall(f"{p}:lanest:{ns}:{skey}")
        assert st.get("busy") == (processing[0] if processing else None)
        head = pending[0][1] if pending and not processing else None
        assert st.get("head") == head
        if head is not None:
            expected_index.add(head)
    indexed: set[str] = set()
    for pr in pairs:
        assert not await raw.exists(f"{p}:q:{pr}:ready")  # layout 1's ready set is gone: one per task
        tasks = set(await raw.smembers(f"{p}:q:{pr}:tasks"))
        assert {j["task"] for j in jobs.values() if f"{j['namespace']}:{j['queue']}" == pr} <= tasks
        async for key in raw.scan_iter(match=f"{p}:q:{pr}:ready:*", count=1000):
            assert key.removeprefix(f"{p}:q:{pr}:ready:") in tasks
        for task in tasks:
            for m in await raw.zrange(f"{p}:q:{pr}:ready:{task}", 0, -1):
                run_at, job_id = m.split(":", 1)
                assert int(run_at) == int(jobs[job_id]["run_at"])
                assert jobs[job_id]["task"] == task
                indexed.add(job_id)
        assert not await raw.exists(f"{p}:q:{pr}:sched")
        for task in tasks:
            for job_id in await raw.zrange(f"{p}:q:{pr}:sched:{task}", 0, -1):
                assert job_id not in indexed and jobs[job_id]["task"] == task
                indexed.add(job_id)
    assert indexed == expected_index
    leases = dict(await raw.zrange(f"{p}:leases", 0, -1, withscores=True))
    assert set(leases) == {i for i, j in jobs.items() if j["status"] == "processing"}
    for i, j in jobs.items():  # a fencing token exactly while processing
        assert ("lease_token" in j) == (j["status"] == "processing"), (i, j)
    off = {name for name, doc in (await raw.hgetall(f"{p}:ns")).items() if not json.loads(doc)["auto_run"]}
    assert set(await raw.smembers(f"{p}:nsoff")) == off
    for i, score in leases.items():
        assert int(score) == int(jobs[i]["lease_expires_at"])
    finished = {i: j for i, j in jobs.items() if j["status"] in ("completed", "failed", "cancelled")}
    done: set[str] = set()
    for ns in {j["namespace"] for j in jobs.values()}:
        for kind in ("completed", "failed"):
            members = set(await raw.zrange(f"{p}:done:{ns}:{kind}", 0, -1))
            assert all(finished[i]["namespace"] == ns for i in members)  # each namespace's own set
            done |= members
    assert done == set(finished)
    holders: dict[str, str] = {}
    for i, j in jobs.items():
        if "unique_key" in j and j["status"] in ("pending", "processing"):
            holders[f"{j['namespace']}|{j['unique_key']}"] = i
    for ns in {j["namespace"] for j in jobs.values()}:
        for key, holder in (await raw.hgetall(f"{p}:uniq:{ns}")).items():
            assert holders.pop(f"{ns}|{key}") == holder
    assert holders == {}
    assert now > 0


async def test_random_transitions_keep_every_index_in_step(store: RedisStore, raw: aioredis.Redis) -> None:
    rng = random.Random(4)
    held: list[Job] = []
    known: list[str] = []
    for step in range(400):
        op = rng.random()
        try:
            if op < 0.3:
                batch = [
                    NewJob.build(
                        rng.choice(["a", "b"]),
                        {"n": step},
                        queue=rng.choice(["default", "q2"]),
                        priority=rng.choice([0, 0, 1, -1]),
                        delay=rng.choice([None, None, 0.05, 3600]),
                        user_id=rng.choice([None, None, "u1", "u2"]),
                        group_key=rng.choice([None, None, None, "g1"]),
                        unique_key=rng.choice([None, None, None, "k1", "k2"]),
                        max_attempts=rng.choice([1, 2, 3]),
                    )
                    for _ in range(rng.randint(1, 4))
                ]
                if rng.random() < 0.5:  # an idle worker of this process: the enqueue claims for it (hand-off)
                    _offer(
                        store,
                        held,
                        limit=rng.randint(1, 3),
                        queues=tuple(rng.sample(["default", "q2"], 1)),
                        tasks=rng.choice([None, ("a",), ("a", "b")]),
                    )
                known += [j.id for j in await store.enqueue(batch)]
            elif op < 0.5:
                held += await store.claim(
                    "w",
                    ["default", "q2"],
                    rng.randint(1, 5),
                    rng.choice([LEASE, timedelta(0)]),
                    tasks=rng.choice([None, ["a"], ["b"], ["a", "b"]]),
                )
            elif op < 0.55:
                await store.put_namespace(Namespace("default", auto_run=rng.random() < 0.7))
            elif op < 0.7 and held:
                job = held.pop(rng.randrange(len(held)))
                status = rng.choice([JobStatus.COMPLETED, JobStatus.PENDING, JobStatus.FAILED, JobStatus.CANCELLED])
                release = status is JobStatus.PENDING and rng.random() < 0.3
                now = datetime.now(UTC)
                attempt = Attempt(job.id, job.try_number, AttemptOutcome.COMPLETED, 200, now, now)
                await store.finish(
                    [
                        Finish(
                            job.lease,
                            status,
                            attempt=None if release else attempt,
                            release=release,
                            result={"ok": 1},
                            error="e",
                            run_at=rng.choice([None, now + timedelta(hours=1)]),
                        )
                    ]
                )
            elif op < 0.75:
                await store.rescue()
            elif op < 0.95 and known:
                job_id = rng.choice(known)
                action = rng.choice(["cancel", "requeue", "delete", "force", "run_now"])
                if action == "cancel":
                    await store.cancel(job_id)
                elif action == "requeue":
                    await store.requeue(job_id)
                elif action == "run_now":
                    await store.run_now(job_id)
                else:
                    await store.delete(job_id, force=action == "force")
            else:
                await store.prune(datetime.now(UTC) + timedelta(days=1), datetime.now(UTC) - timedelta(days=1), 3)
        except ConveyorError:
            pass  # invalid transitions are refused atomically; the invariants must still hold
        if step % 20 == 0:
            await check_invariants(store, raw)
    await check_invariants(store, raw)


async def test_a_layout_1_store_is_migrated_in_place(url: str, raw: aioredis.Redis) -> None:
    """Layout 1 kept one ready set per (namespace, queue) and no set of auto_run-off namespaces; migrate.lua splits
    the ready sets by task and builds P:nsoff from the namespace documents, once."""
    _, p = split_url(url)
    now = int(time.time() * 1_000_000)
    for job_id, task, ns in (("j-mail", "mail", "default"), ("j-sms", "sms", "default"), ("j-man", "mail", "manual")):
        pair = f"{ns}:default"
        await raw.hset(
            f"{p}:job:{job_id}",
            mapping={
                "id": job_id,
                "namespace": ns,
                "queue": "default",
                "task": task,
                "payload": "null",
                "status": "pending",
                "priority": "0",
                "run_at": str(now - 1000),
                "attempts": "0",
                "max_attempts": "3",
                "try_number": "0",
                "created": str(now),
                "updated": str(now),
            },
        )
        await raw.sadd(f"{p}:pairs", pair)
        await raw.zadd(f"{p}:q:{pair}:ready", {f"{now - 1000:016d}:{job_id}": 0})
        await raw.zadd(f"{p}:q:{pair}:pend", {job_id: now - 1000})
        await raw.zadd(f"{p}:q:{pair}:s:pending", {job_id: now})
        await raw.hincrby(f"{p}:q:{pair}:n", f"pending|{task}", 1)
    await raw.hset(f"{p}:att:j-sms", "1", json.dumps({"job_id": "j-sms", "try_number": 1, "outcome": "retry",
                   "status_code": 500, "started_at": now, "finished_at": now}))  # fmt: skip
    await raw.hset(f"{p}:ns", "manual", json.dumps({"name": "manual", "auto_run": False}))
    await raw.hset(f"{p}:meta", "schema", "1")

    store = RedisStore(url)
    await store.open()
    try:
        assert await raw.hget(f"{p}:meta", "schema") == "2"
        assert await store.migrate() == []  # once
        assert set(await raw.smembers(f"{p}:nsoff")) == {"manual"}
        (mail,) = await store.claim("w", ["default"], 10, LEASE, tasks=["mail"])
        assert mail.id == "j-mail" and mail.lease_token  # j-man: its namespace is off
        (sms,) = await store.claim("w", ["default"], 10, LEASE, tasks=["sms"])
        assert sms.id == "j-sms"
        (old,) = await store.attempts("j-sms")
        assert (old.try_number, old.outcome, old.lease_token) == (1, AttemptOutcome.RETRY, None)
        await check_invariants(store, raw)
    finally:
        await store.close()


# ---- wake-ups, workers, scripts, eviction warning ----------------------------------------------------------------


async def test_an_enqueue_wakes_a_waiter_of_another_store_through_redis(url: str) -> None:
    """Two store objects share no LocalWaker, so only the Redis wake list can wake the second one."""
    a, b = RedisStore(url), RedisStore(url)
    await a.open()
    await b.open()
    try:
        waiter = asyncio.create_task(b.wait_for_jobs(10.0))
        await asyncio.sleep(0.2)  # the BLPOP is in place
        started = time.monotonic()
        await a.enqueue([NewJob.build("t")])
        await asyncio.wait_for(waiter, 5.0)
        assert time.monotonic() - started < 2.0  # far below the 10 s poll: a real wake-up
    finally:
        await a.close()
        await b.close()


async def test_a_worker_registration_expires_by_itself(store: RedisStore, raw: aioredis.Redis) -> None:
    now = datetime.now(UTC)
    info = WorkerInfo("w1", "host", 1, ["default"], 4, now, now, now + timedelta(seconds=0.3))
    await store.register_worker(info)
    assert [w.id for w in await store.list_workers()] == ["w1"]
    await asyncio.sleep(0.5)
    assert await raw.exists(f"{store.prefix}:w:w1") == 0  # Redis removed it; nobody had to clean up
    assert await store.list_workers() == []
    assert await raw.zcard(f"{store.prefix}:workers") == 0  # the index entry is dropped on the way


async def test_scripts_reload_after_redis_forgets_them(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path / "r")
    server.start()
    store = RedisStore(f"{server.url}?prefix=s")
    try:
        await store.open()
        await store.enqueue([NewJob.build("t")])
        client = aioredis.Redis(port=server.port)
        await client.script_flush()
        await client.aclose()
        assert len(await store.claim("w", ["default"], 1, LEASE)) == 1
    finally:
        await store.close()
        server.kill()


async def test_open_warns_when_redis_may_evict_keys(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = PrivateRedis(tmp_path / "r")
    server.start()
    client = aioredis.Redis(port=server.port)
    await client.config_set("maxmemory-policy", "allkeys-lru")
    await client.aclose()
    store = RedisStore(f"{server.url}?prefix=e")
    try:
        with caplog.at_level(logging.WARNING, logger="conveyor.store.redis"):
            await store.open()
        assert "noeviction" in caplog.text
    finally:
        await store.close()
        server.kill()


async def test_a_delayed_job_becomes_due_inside_claim(store: RedisStore) -> None:
    [job] = await store.enqueue([NewJob.build("t", delay=0.2)])
    assert await store.claim("w", ["default"], 1, LEASE) == []
    await asyncio.sleep(0.3)
    [claimed] = await store.claim("w", ["default"], 1, LEASE)  # no mover process ran in between
    assert claimed.id == job.id


async def test_a_wake_token_is_left_for_the_workers_of_its_own_queue(url: str, raw: aioredis.Redis) -> None:
    """A waiter that claims from `default` does not take the token of a `mail` job: a `mail` worker in another
    process still gets woken."""
    a, b = RedisStore(url), RedisStore(url)
    await a.open()
    await b.open()
    try:
        assert await b.claim("w", ["default"], 1, LEASE) == []  # b now watches wake:default only
        waiter = asyncio.create_task(b.wait_for_jobs(0.8))
        await asyncio.sleep(0.1)
        await a.enqueue([NewJob.build("t", queue="mail")])
        await waiter
        assert await raw.llen(f"{a.prefix}:wake:mail") == 1
    finally:
        await a.close()
        await b.close()


async def test_a_claim_cancelled_mid_flight_hands_its_jobs_back(store: RedisStore) -> None:
    """The script may run although its caller was cancelled; the jobs must not wait for lease expiry (and a
    counted LOST attempt): they are released at once, attempts unchanged."""
    [job] = await store.enqueue([NewJob.build("t")])
    claim = asyncio.create_task(store.claim("w", ["default"], 1, LEASE))
    await asyncio.sleep(0)  # the script is on its way
    claim.cancel()
    with pytest.raises(asyncio.CancelledError):
        await claim

    async def back() -> bool:
        got = await store.get_job(job.id)
        return got is not None and got.status is JobStatus.PENDING

    deadline = time.monotonic() + 5
    while not await back():
        assert time.monotonic() < deadline, "the cancelled claim's job was not handed back"
        await asyncio.sleep(0.02)
    got = await store.get_job(job.id)
    assert got is not None and got.attempts == 0 and got.try_number == 0
    [again] = await store.claim("w", ["default"], 1, LEASE)
    assert again.id == job.id and again.try_number == 1


def _offer(
    store: RedisStore,
    taken: list[Job],
    *,
    limit: int = 5,
    queues: tuple[str, ...] = ("default",),
    tasks: tuple[str, ...] | None = None,
) -> None:
    def deliver(jobs: list[Job]) -> bool:
        taken.extend(jobs)
        return True

    store.offer_idle(
        IdleClaim("idle", queues, limit, LEASE, None, (), deliver, asyncio.get_running_loop(), tasks=tasks),
    )


async def test_a_handoff_that_takes_every_new_job_leaves_no_wake_token(store: RedisStore, raw: aioredis.Redis) -> None:
    """Nobody else could claim what the idle worker left (it took less than its limit): a token would only make
    some worker run an empty claim."""
    taken: list[Job] = []
    _offer(store, taken, limit=5)
    jobs = await store.enqueue([NewJob.build("t"), NewJob.build("t")])
    assert [j.id for j in taken] == [j.id for j in jobs]
    assert await raw.llen(f"{store.prefix}:wake:default") == 0


async def test_a_handoff_that_leaves_work_still_wakes_other_workers(store: RedisStore, raw: aioredis.Redis) -> None:
    taken: list[Job] = []
    _offer(store, taken, limit=1)
    jobs = await store.enqueue([NewJob.build("t"), NewJob.build("t")])
    assert [j.id for j in taken] == [jobs[0].id]
    assert await raw.llen(f"{store.prefix}:wake:default") >= 1
    taken2: list[Job] = []
    _offer(store, taken2, queues=("default",))
    await store.enqueue([NewJob.build("t", queue="mail")])  # a queue the idle worker does not serve
    assert taken2 == []
    assert await raw.llen(f"{store.prefix}:wake:mail") == 1


async def test_handed_off_jobs_reach_the_worker_when_the_enqueue_is_cancelled(store: RedisStore) -> None:
    """The enqueue's caller may be cancelled while the script runs; what the script claimed still reaches the
    idle worker instead of sitting in processing until its lease expires."""
    taken: list[Job] = []
    _offer(store, taken)
    new = NewJob.build("t")
    call = asyncio.create_task(store.enqueue([new]))
    await asyncio.sleep(0)  # the script is on its way
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    deadline = time.monotonic() + 5
    while not taken:
        assert time.monotonic() < deadline, "the handed-off job never reached the idle worker"
        await asyncio.sleep(0.01)
    assert [j.id for j in taken] == [new.id]
    got = await store.get_job(new.id)
    assert got is not None and got.status is JobStatus.PROCESSING and got.worker_id == "idle"


async def test_a_script_call_cancelled_mid_reply_never_answers_a_later_call(store: RedisStore) -> None:
    """Script calls run on the store's own connections (scripts.py). A call cancelled after sending must not
    leave its reply on a connection that a later call reads."""
    await store.enqueue([NewJob.build("t", {"n": i}) for i in range(3)])
    for i in range(60):
        pending = asyncio.create_task(store.stats())
        for _ in range(i % 4):
            await asyncio.sleep(0)
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending
        page = await store.list_jobs(JobFilter(), limit=10)
        assert page.total == 3 and len(page.items) == 3
        assert (await store.stats()).pending == 3


async def test_max_connections_bounds_the_script_connections_too(url: str) -> None:
    """With `max_connections`, concurrent script calls beyond the bound wait for a connection instead of opening
    more; a waiting worker's BLPOP holds one of them, and everything still gets through."""
    store = RedisStore(url, max_connections=2, wake_block=0.2)
    await store.open()
    try:
        waiter = asyncio.create_task(store.wait_for_jobs(5))
        await asyncio.sleep(0.05)
        jobs = await asyncio.gather(*(store.enqueue([NewJob.build("t", {"n": i})]) for i in range(40)))
        assert len({j.id for (j,) in jobs}) == 40
        assert store._scripts is not None and len(store._scripts._free) <= 2
        await asyncio.wait_for(waiter, 10)
        assert (await store.stats()).pending == 40
    finally:
        await store.close()


async def test_drop_deletes_only_its_own_prefix_even_with_glob_characters(raw: aioredis.Redis) -> None:
    """A prefix is a literal: `a*` must not take `ab`'s keys with it (SCAN MATCH patterns are escaped)."""
    tag = f"cv_glob_{random.randrange(1 << 30)}"
    base, _ = split_url(fresh_url(Path("/unused")))
    star, plain = RedisStore(f"{base}?prefix={tag}*"), RedisStore(f"{base}?prefix={tag}b")
    for s in (star, plain):
        await s.open()
        await s.kv_set("k", "v")
    try:
        await star.drop()
        assert [k async for k in raw.scan_iter(match=f"{tag}\\**", count=1000)] == []
        assert await plain.kv_get("k") == "v"
    finally:
        await plain.drop()


async def test_job_hash_fields_are_the_codec_fields(store: RedisStore, raw: aioredis.Redis) -> None:
    """The scripts write a job's hash by hand (Lua); the Python side decodes it from conveyor.codec's field list.
    Every hash field a job goes through in its life must be one of those (or `skey`, the scripts' serial key)."""
    from conveyor.codec import STORED_JOB_FIELDS

    allowed = {f.name for f in STORED_JOB_FIELDS} | {"skey"}
    seen: set[str] = set()
    (job,) = await store.enqueue([NewJob.build("t", {"a": 1}, user_id="u1", group_key="g", unique_key="k")])
    seen |= set(await raw.hkeys(store.keys.job(job.id)))
    [claimed] = await store.claim("w", ["default"], 1, LEASE)
    await store.mark_timed_out(claimed.lease)
    await store.cancel(claimed.id)
    await store.heartbeat([claimed.lease], LEASE)
    seen |= set(await raw.hkeys(store.keys.job(job.id)))
    attempt = Attempt(job.id, 1, AttemptOutcome.RETRY, 500, claimed.started_at or claimed.run_at, claimed.run_at)
    await store.finish([Finish(claimed.lease, JobStatus.FAILED, attempt=attempt, error="boom", result={"r": 1})])
    seen |= set(await raw.hkeys(store.keys.job(job.id)))
    assert seen - allowed == set(), f"hash fields the codec does not know: {seen - allowed}"
    assert {"id", "status", "payload", "cancel_requested", "timed_out_at", "finished_at", "last_error"} <= seen
