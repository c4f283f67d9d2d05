"""The Redis store: every job state change is one Lua script (lua/*.lua), so a crash between two commands can
never leave a job half-moved, and a job's status and lease live together in its hash.

Why it looks the way it does:

* One script per transition (enqueue, claim, heartbeat, finish, rescue, cancel, requeue, delete, run_now,
  prune), each prefixed with lua/common.lua, which keeps every index in step with the job hash.
* Scripts read the clock with Redis `TIME`, so every process agrees on "now" and delayed jobs become due inside
  claim.lua itself: no mover process has to be alive.
* Idle workers block on `BLPOP P:wake:<queue>…` for the queues this process claims from (one dedicated
  connection per store, held only while someone waits) and scripts that make a job claimable push a token to its
  queue's list, so a worker in any process starts a new job within about a millisecond;
  waiters in this process are also woken directly through LocalWaker.
* Any connection failure becomes `StoreUnavailable` with the text the HTTP layer answers 503 with; redis-py
  reconnects on a later call. A lazy store opens while Redis is down and works once it is back.

Modules: url.py (URL, options), connections.py (clients, `_do`/`_run`), admin.py (inspection and management,
namespaces, queues, workers, election, key-value), encoding.py (values ↔ script strings), scripts.py (the script
runner, lua/), keys.py (the key layout); this module holds the lifecycle, enqueue, the worker's calls and
maintenance.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import redis.exceptions as rexc

from conveyor.errors import (
    Conflict,
    SchemaTooNew,
    StoreUnavailable,
    ValidationError,
)
from conveyor.model import (
    Finish,
    Job,
    JobStatus,
    Lease,
    LeaseState,
    NewJob,
    encode_result,
    new_lease_tokens,
)
from conveyor.store.base import IdleClaim, refuse_default
from conveyor.store.feed import EventFeed
from conveyor.store.handoff import IdleClaims, hand_over
from conveyor.store.redis import events as redis_events
from conveyor.store.redis.admin import RedisAdmin, glob_escape
from conveyor.store.redis.connections import CONFLICT_MESSAGE, CONNECTION_ERRORS, UNAVAILABLE
from conveyor.store.redis.encoding import (
    ONE_US,
    attempt_body,
    attempt_head,
    decode_job,
    encode_rows,
    lost_head,
    to_us,
    us_or_empty,
)
from conveyor.store.redis.keys import SCHEMA_VERSION, Keys
from conveyor.store.redis.scripts import SCRIPTS, ScriptRunner, load_script
from conveyor.store.redis.url import read_options
from conveyor.store.urls import with_param
from conveyor.store.wake import LocalWaker

__all__ = ["CONFLICT_MESSAGE", "SCRIPTS", "UNAVAILABLE", "RedisStore", "load_script"]

log = logging.getLogger("conveyor.store.redis")


class RedisStore(RedisAdmin):
    """Jobs in Redis. URL `redis://host:port/db?prefix=NAME` (the prefix namespaces every key; default
    `conveyor`). Options (URL query parameters or keyword arguments, which win; url.py reads them strictly):
    `socket_timeout` (seconds, default 5), `wake_block` (seconds one BLPOP blocks, default 1), `max_connections`.
    Other URL parameters must be redis-py's; anything else is refused."""

    scheme = "redis"
    supports_transactions = False
    supports_handoff = True

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, lazy: bool = False, **options: Any) -> None:
        self.url = url
        self.lazy = lazy
        self._redis_url, self.prefix, values = read_options(url, options)
        self.options = values
        self.keys = Keys(self.prefix)
        self._socket_timeout: float = values.get("socket_timeout", 5.0)
        self._wake_block: float = values.get("wake_block", 1.0)
        self._client: aioredis.Redis | None = None
        self._scripts: ScriptRunner | None = None
        self._waker = LocalWaker()
        self._waiting = 0
        self._wake_queues: set[str] = set()  # every queue this process claims from: the wake lists to watch
        self._listener: asyncio.Task[None] | None = None
        self._orphans: set[asyncio.Future[Any]] = set()  # hand-backs of cancelled claims in flight
        self._idle = IdleClaims()  # workers of this process waiting for jobs (hand-off in enqueue.lua)
        self._opened = False
        self._closed = False

    # ---- lifecycle ------------------------------------------------------------------------------------------

    # ---- lifecycle ------------------------------------------------------------------------------------------

    async def open(self) -> None:
        self._closed = False
        client = self._connect()
        if self._opened:
            return
        try:
            await client.ping()
            await self.migrate()
        except StoreUnavailable:
            if not self.lazy:
                raise
            log.warning("Redis at %s is not reachable; the job queue is unavailable until it returns", self._where())
            return
        except CONNECTION_ERRORS as exc:
            if not self.lazy:
                raise StoreUnavailable(UNAVAILABLE) from exc
            log.warning("Redis at %s is not reachable; the job queue is unavailable until it returns", self._where())
            return
        self._opened = True
        await self._check_eviction(client)

    def _where(self) -> str:
        parts = urlsplit(self._redis_url)
        return f"{parts.hostname}:{parts.port or 6379}"

    async def _check_eviction(self, client: aioredis.Redis) -> None:
        """Warn when Redis may evict keys: an evicted job hash is a lost job."""
        try:
            policy = (await client.config_get("maxmemory-policy")).get("maxmemory-policy")
        except rexc.RedisError:  # CONFIG may be disabled on managed Redis
            return
        if policy and policy != "noeviction":
            log.warning(
                "Redis maxmemory-policy is %r: Redis may evict job keys under memory pressure and lose jobs. "
                "Set maxmemory-policy to noeviction for a job queue.",
                policy,
            )

    async def close(self) -> None:
        self._closed = True
        self._idle.clear()
        self._waker.notify()
        if self._orphans:  # jobs being handed back need the connection a moment longer
            await asyncio.wait(set(self._orphans), timeout=self._socket_timeout)
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(BaseException):
                await listener
        await self._disconnect()

    async def _disconnect(self) -> None:
        """Close the clients (a later call connects again unless the store is closed)."""
        client, scripts = self._client, self._scripts
        self._client = self._scripts = None
        self._opened = False
        if scripts is not None:
            await scripts.aclose()
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def migrate(self) -> list[str]:
        """Redis has no schema; the key layout's version is recorded in P:meta, and lua/migrate.lua brings older
        layouts to this one in one script (ready sets per task, the auto_run-off namespace set). Upgrade every
        process of a deployment together: older code reads the older layout, and refuses a newer one. On a store
        that is not connected, the connections it opened are closed again."""
        connected = self._client is not None
        try:
            code, version = await self._run("migrate", [SCHEMA_VERSION])
        finally:
            if not connected:
                await self._disconnect()
        if int(code) < 0:
            raise SchemaTooNew(f"Redis key prefix {self.prefix!r} at {self._where()}", str(version), SCHEMA_VERSION)
        return self.known_migrations() if int(code) > 0 else []

    def known_migrations(self) -> list[str]:
        return [f"{int(SCHEMA_VERSION):04d}_redis_layout"]

    @classmethod
    def isolated_url(cls, base_url: str, label: str, workdir: Path) -> str:
        """The base URL with `prefix=<label>`: keys of their own on the same server and database."""
        return with_param(base_url, "prefix", label)

    async def drop(self, *, allow_default: bool = False) -> None:
        """Close, then UNLINK every key under the prefix (SCAN, 500 keys per UNLINK). Refused for the default prefix
        (`conveyor`) unless allow_default."""
        refuse_default("the Redis key prefix", self.prefix, allow_default)
        await self.close()
        pattern = glob_escape(self.prefix) + ":*"
        client = aioredis.Redis.from_url(self._redis_url, socket_timeout=self._socket_timeout)
        try:
            batch: list[bytes] = []
            async for key in client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    await client.unlink(*batch)
                    batch.clear()
            if batch:
                await client.unlink(*batch)
        except CONNECTION_ERRORS as exc:
            raise StoreUnavailable(UNAVAILABLE) from exc
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def ping(self) -> None:
        await self._do(lambda c: c.ping())

    # ---- enqueue --------------------------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        if not jobs:
            return []
        seen: set[str] = set()
        rows: list[list[str | None]] = []
        for new in jobs:
            if new.id in seen:
                raise ValidationError(f"a job with id {new.id} already exists", field="id")
            seen.add(new.id)
            rows.append(
                [
                    new.id,
                    new.namespace,
                    new.queue,
                    new.task,
                    new.payload_json,
                    str(new.priority),
                    str(to_us(new.run_at)),
                    str(new.max_attempts),
                    str(to_us(new.created)),
                    new.user_id,
                    new.group_key,
                    new.unique_key,
                    new.concurrency_key,
                    new.unique_hash,
                    None if new.unique_hash is None else str(new.unique_states),
                    str(new.unique_replace),
                ]
            )
        idle = self._idle.take(jobs) if self._idle else None
        if idle is None:
            reply = await self._run("enqueue", [encode_rows(rows), ""])
        else:
            handoff = {
                "worker": idle.worker_id,
                "limit": idle.limit,
                "lease": str(idle.lease // ONE_US),
                "queues": list(idle.queues),
                "namespaces": None if idle.namespaces is None else list(idle.namespaces),
                "exclude": list(idle.exclude_namespaces),
                "tasks": None if idle.tasks is None else list(idle.tasks),
                "tokens": "".join(new_lease_tokens(idle.limit)),
            }
            # The claimed jobs reach the worker from the script's completion, not from this coroutine: a caller
            # cancelled meanwhile must not strand them in `processing`.
            call = asyncio.ensure_future(self._run("enqueue", [encode_rows(rows), json.dumps(handoff)]))
            call.add_done_callback(lambda done: self._hand_over(idle, done))
            reply = await asyncio.shield(call)
        kind, value = reply[0], reply[1]
        if kind == "exists":
            raise ValidationError(f"a job with id {value} already exists", field="id")
        out: list[Job] = []
        stored = False
        for new, item in zip(jobs, json.loads(value), strict=True):
            if item == 0:
                out.append(new.to_job())
                stored = True
            else:
                out.append(decode_job(item, duplicate=True))
        # After a hand-off the script says whether claimable work remains for the other waiters of this process.
        if (stored or any(new.unique_replace for new in jobs)) and (idle is None or reply[3] == 1):
            self._waker.notify()
        return out

    def offer_idle(self, claim: IdleClaim) -> None:
        if not self._closed:
            self._idle.offer(claim)

    def withdraw_idle(self, claim: IdleClaim) -> None:
        self._idle.withdraw(claim)

    def _hand_over(self, idle: IdleClaim, done: asyncio.Future[Any]) -> None:
        """Pass the jobs an enqueue claimed for an idle worker to it; hand them back when it refuses (stopping).
        A failed script call leaves nothing to do: either nothing was claimed, or lease expiry and rescue cover it."""
        if done.cancelled() or done.exception() is not None:
            return
        reply = done.result()
        if reply[0] != "ok":
            return
        jobs = [decode_job(h) for h in json.loads(reply[2])]
        if not hand_over(idle, jobs) and jobs:
            self._release(jobs)

    # ---- events across processes (store/redis/events.py) -----------------------------------------------------

    async def publish_events(self, messages: Sequence[str]) -> None:
        if not messages:
            return
        channel = self.keys.events

        async def publish(client: aioredis.Redis) -> None:
            async with client.pipeline(transaction=False) as pipe:
                for message in messages:
                    pipe.publish(channel, message)
                await pipe.execute()

        await self._do(publish)

    async def subscribe_events(self) -> EventFeed:
        if self._closed and self._client is None:
            raise StoreUnavailable(UNAVAILABLE)
        return await redis_events.subscribe(
            self._connect, self.keys.events, CONNECTION_ERRORS, lambda: StoreUnavailable(UNAVAILABLE)
        )

    # ---- the worker's calls ---------------------------------------------------------------------------------

    async def claim(
        self,
        worker_id: str,
        queues: Sequence[str],
        limit: int,
        lease: timedelta,
        *,
        tasks: Sequence[str] | None = None,
        namespaces: Sequence[str] | None = None,
        exclude_namespaces: Sequence[str] = (),
    ) -> list[Job]:
        if limit <= 0 or not queues or (tasks is not None and not tasks):
            return []
        self._wake_queues.update(queues)
        opts = json.dumps(
            {
                "queues": list(queues),
                "namespaces": None if namespaces is None else list(namespaces),
                "exclude": list(exclude_namespaces),
                "tasks": None if tasks is None else list(tasks),
            }
        )
        tokens = "".join(new_lease_tokens(limit))
        reply = await self._shielded_claim("claim", [worker_id, limit, lease // ONE_US, opts, tokens])
        return [decode_job(h) for h in json.loads(reply)]

    async def _shielded_claim(self, name: str, args: Sequence[Any]) -> Any:
        """Run a claim script so that a caller cancelled while it runs (worker shutdown, a timeout) does not strand
        the jobs it claimed until their lease expires and a LOST attempt is counted: they are handed back."""
        task = asyncio.ensure_future(self._run(name, args))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._hand_back_orphans)
            raise

    def _hand_back_orphans(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return  # nothing claimed, or unknown: lease expiry and rescue cover it
        reply = fut.result()
        if isinstance(reply, list):  # claim_user: ['ok', job] / ['none'] / ['conflict']
            jobs = [decode_job(json.loads(reply[1]))] if reply[0] == "ok" else []
        else:
            jobs = [decode_job(h) for h in json.loads(reply)]
        if jobs:
            self._release(jobs)

    def _release(self, jobs: list[Job]) -> None:
        """Hand claimed jobs that nobody will run back to pending, without counting an attempt (in the background;
        close() waits for it)."""
        if self._client is None:
            return  # closed: lease expiry and rescue cover them
        release = self.finish([Finish(j.lease, JobStatus.PENDING, release=True) for j in jobs])
        handed = asyncio.ensure_future(release)
        self._orphans.add(handed)
        handed.add_done_callback(self._orphan_done)

    def _orphan_done(self, fut: asyncio.Future[Any]) -> None:
        self._orphans.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("could not hand back the jobs of a cancelled claim: %s", fut.exception())

    async def claim_user(self, namespace: str, user_id: str, worker_id: str, lease: timedelta) -> Job | None:
        token = new_lease_tokens(1)[0]
        reply = await self._shielded_claim("claim_user", [namespace, user_id, worker_id, lease // ONE_US, token])
        if reply[0] == "conflict":
            raise Conflict(CONFLICT_MESSAGE)
        if reply[0] == "none":
            return None
        return decode_job(json.loads(reply[1]))

    async def heartbeat(self, leases: Sequence[Lease], lease: timedelta) -> list[LeaseState]:
        if not leases:
            return []
        args: list[Any] = [lease // ONE_US]
        for held in leases:
            args += [held.job_id, held.token]
        reply: str = await self._run("heartbeat", args)
        return [
            LeaseState(lease=held, held=reply[2 * i] == "1", cancel_requested=reply[2 * i + 1] == "1")
            for i, held in enumerate(leases)
        ]

    async def finish(self, finishes: Sequence[Finish]) -> list[bool]:
        if not finishes:
            return []
        rows: list[list[str | None]] = []
        for f in finishes:
            if f.status is JobStatus.PROCESSING or ((f.release or f.snooze) and f.status is not JobStatus.PENDING):
                raise ValidationError(
                    f"a Finish must move the job to pending, completed, failed or cancelled (release: pending), "
                    f"got {f.status.value!r}",
                    field="status",
                )
            completed = f.status is JobStatus.COMPLETED and not f.release
            a = None if f.release else f.attempt
            rows.append(
                [
                    f.lease.job_id,
                    f.lease.token,
                    f.status.value,
                    "1" if f.release else "0",
                    None if f.run_at is None else str(to_us(f.run_at)),
                    f.error,
                    encode_result(f.result) if completed and f.result is not None else None,
                    None if a is None else attempt_head(a),
                    None if a is None else lost_head(a),
                    None if a is None else attempt_body(a),
                    "1" if f.snooze else "0",
                ]
            )
        reply: str = await self._run("finish", [encode_rows(rows)])
        return [c == "1" for c in reply]

    async def mark_timed_out(self, lease: Lease) -> bool:
        reply = await self._run("mark_timed_out", [lease.job_id, lease.token])
        return bool(int(reply))

    async def next_due(
        self,
        queues: Sequence[str],
        *,
        tasks: Sequence[str] | None = None,
        namespaces: Sequence[str] | None = None,
        exclude_namespaces: Sequence[str] = (),
    ) -> float | None:
        if not queues or (tasks is not None and not tasks):
            return None
        scope = {
            "queues": list(dict.fromkeys(queues)),
            "namespaces": None if namespaces is None else list(namespaces),
            "exclude": list(exclude_namespaces),
            "tasks": None if tasks is None else list(tasks),
        }
        reply: str = await self._run("next_due", [json.dumps(scope)])
        return None if reply == "" else int(reply) / 1e6

    async def wait_for_jobs(self, timeout: float) -> None:
        """Wait for a local notify or a wake token from any process: BLPOP on the wake lists of the queues this
        process claims from (a connection of the script runner, held only while someone waits)."""
        if self._closed:
            return
        self._waiting += 1
        try:
            if self._listener is None or self._listener.done():
                self._listener = asyncio.get_running_loop().create_task(self._listen())
            await self._waker.wait(max(0.0, timeout))
        finally:
            self._waiting -= 1

    async def _listen(self) -> None:
        """Relay wake tokens to local waiters while any wait. Failures (Redis down) back off and retry: the
        waiters' own timeouts keep them polling, and their next claim reports the outage."""
        while not self._closed and self._waiting > 0:
            runner = self._scripts
            if runner is None:
                return
            lists = [self.keys.wake(q) for q in sorted(self._wake_queues or {"default"})]
            try:
                got = await runner.command(
                    "BLPOP", *lists, self._wake_block, timeout=self._wake_block + self._socket_timeout
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(0.25)
                continue
            if got is not None:
                self._waker.notify()

    # ---- maintenance ----------------------------------------------------------------------------------------

    async def rescue(self, now: datetime | None = None, limit: int = 1000) -> list[Job]:
        reply = await self._run("rescue", [us_or_empty(now), max(0, limit)])
        jobs = [decode_job(h) for h in json.loads(reply)]
        if any(j.status is JobStatus.PENDING for j in jobs):
            self._waker.notify()
        return jobs

    async def next_lease_expiry(self) -> float | None:
        reply: str = await self._run("next_lease_expiry", [])
        return None if reply == "" else int(reply) / 1e6

    async def prune(
        self, completed_before: datetime, failed_before: datetime, limit: int = 10_000, *, namespace: str | None = None
    ) -> int:
        if limit <= 0:
            return 0
        args = [to_us(completed_before), to_us(failed_before), limit, namespace or ""]
        return int(await self._run("prune", args))
