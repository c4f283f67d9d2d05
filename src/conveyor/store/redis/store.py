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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from importlib import resources
from json.encoder import encode_basestring as _encode_str  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from conveyor.codec import JOB_FIELDS, STORED_ATTEMPT_FIELDS, STORED_JOB_FIELDS, mapping_decoder
from conveyor.errors import (
    Conflict,
    InvalidTransition,
    JobNotFound,
    NamespaceExists,
    NamespaceNotFound,
    RevisionConflict,
    SchemaTooNew,
    StoreUnavailable,
    ValidationError,
)
from conveyor.model import (
    DEFAULT_NAMESPACE,
    DEFAULT_NAMESPACE_SETTINGS,
    LOST_STATUS_CODE,
    Attempt,
    AttemptOutcome,
    Finish,
    Job,
    JobFilter,
    JobStatus,
    Leadership,
    Lease,
    LeaseState,
    Namespace,
    NewJob,
    Page,
    QueueInfo,
    QueueSettings,
    Stats,
    WorkerInfo,
    attempt_order,
    encode_result,
    new_lease_tokens,
    not_applied_error,
    utcnow,
)
from conveyor.store.base import IdleClaim, Store, refuse_default
from conveyor.store.handoff import IdleClaims, hand_over
from conveyor.store.redis.keys import SCHEMA_VERSION, Keys, pair
from conveyor.store.redis.scripts import ScriptRunner
from conveyor.store.redis.url import read_options
from conveyor.store.urls import with_param
from conveyor.store.wake import LocalWaker

log = logging.getLogger("conveyor.store.redis")

UNAVAILABLE = "job queue service is unavailable: Redis is not connected"
"""The exact text of StoreUnavailable (the Go template's 503 message; the HTTP layer answers with it)."""

CONFLICT_MESSAGE = "Job queue execution conflict. Retry required."

SCRIPTS = (
    "enqueue",
    "claim",
    "claim_user",
    "heartbeat",
    "finish",
    "rescue",
    "cancel",
    "requeue",
    "delete",
    "delete_user",
    "run_now",
    "prune",
    "stats",
    "list",
    "next_due",
    "mark_timed_out",
    "elect",
    "put_namespace",
    "delete_namespace",
    "migrate",
    "kv_setdefault",
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_STATUSES = [s.value for s in JobStatus]


def to_us(dt: datetime) -> int:
    """A datetime as integer microseconds since the epoch (exact, unlike float timestamps)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _US


# Below this (year 2191) a float of seconds is within half a microsecond of the truth, so fromtimestamp (twice as
# fast as datetime arithmetic) rounds back to the exact microsecond; beyond it, exact integer arithmetic.
_FAST_US_LIMIT = 7_000_000_000_000_000
_fromtimestamp = datetime.fromtimestamp


def from_us(value: str | int) -> datetime:
    us = int(value)
    if -_FAST_US_LIMIT < us < _FAST_US_LIMIT:
        return _fromtimestamp(us / 1_000_000, UTC)
    return _EPOCH + timedelta(microseconds=us)


def _opt(value: str | None) -> str:
    """Optional string argument for a script: '' is None, anything else carries a leading '='."""
    return "" if value is None else "=" + value


def _batch(rows: list[list[str | None]]) -> str:
    """A batch as one script argument: redis-py packs one large argument much faster than many small ones."""
    return json.dumps(rows, separators=(",", ":"), ensure_ascii=False)


def _opt_us(value: datetime | None) -> str:
    return "" if value is None else f"={to_us(value)}"


_STATUS = {s.value: s for s in JobStatus}


def _is_one(value: object) -> bool:
    """The scripts write a flag as "1" (and delete the field for false)."""
    return value == "1"


decode_job = mapping_decoder(
    Job,
    (*STORED_JOB_FIELDS, next(f for f in JOB_FIELDS if f.name == "payload_json")),
    {"status": _STATUS, "int": int, "time": from_us, "json": json.loads, "bool": _is_one},
    sources={"payload_json": "payload"},
    name="decode_job",
)
"""A Job from a job hash's fields (absent fields get their defaults), as HGETALL or a script's JSON gives them:
`decode_job(h, duplicate=False)`. The hash fields are named after conveyor.codec.JOB_FIELDS (plus `skey`, the
serial key the scripts keep); payload_json is the stored payload text."""


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _js(text: str | None) -> str:
    """A JSON string (or null), by the json module's C escaper: several of these per finish are on the hot path."""
    return "null" if text is None else _encode_str(text)


def _attempt_head(a: Attempt) -> str:
    """The first fields of a stored attempt record, outcome first: finish.lua recognises a LOST record by its first
    bytes, and stores `_lost_head` instead when the report turns out stale."""
    return f'{{"outcome":"{a.outcome.value}","status_code":{a.status_code},"error":{_js(a.error)}'


def _lost_head(a: Attempt) -> str:
    """`_attempt_head` of `model.not_applied(a)`: the record a refused report is kept as."""
    return f'{{"outcome":"lost","status_code":{LOST_STATUS_CODE},"error":{_js(not_applied_error(a))}'


def _attempt_body(a: Attempt) -> str:
    """The rest of a stored attempt record (after `_attempt_head`), closing the JSON object."""
    result = "null" if a.result is None else _dumps(a.result)
    return (
        f',"job_id":{_js(a.job_id)},"try_number":{a.try_number},"started_at":{to_us(a.started_at)},'
        f'"finished_at":{to_us(a.finished_at)},"worker_id":{_js(a.worker_id)},"result":{result},'
        f'"traceback":{_js(a.traceback)}}}'
    )


def encode_attempt(a: Attempt) -> str:
    return _attempt_head(a) + _attempt_body(a)


_attempt_from = mapping_decoder(
    Attempt,
    tuple(f for f in STORED_ATTEMPT_FIELDS if f.name != "lease_token"),  # the record's hash field, not in it
    {"outcome": AttemptOutcome, "int": int, "time": from_us},
    name="decode_attempt",
)


def decode_attempt(text: str, field: str | None = None) -> Attempt:
    """An attempt record; `field` is its hash field: the claim's lease token (a try number on records made before
    tokens existed)."""
    return _attempt_from(json.loads(text), lease_token=None if field is None or field.isdigit() else field)


def _encode_worker(w: WorkerInfo) -> str:
    return json.dumps(
        {
            "id": w.id,
            "hostname": w.hostname,
            "pid": w.pid,
            "queues": list(w.queues),
            "concurrency": w.concurrency,
            "started_at": w.started_at.isoformat(),
            "heartbeat_at": w.heartbeat_at.isoformat(),
            "expires_at": w.expires_at.isoformat(),
            "running": list(w.running),
            "version": w.version,
            "tasks": list(w.tasks),
        }
    )


def _decode_worker(text: str) -> WorkerInfo:
    d = json.loads(text)
    return WorkerInfo(
        id=d["id"],
        hostname=d["hostname"],
        pid=int(d["pid"]),
        queues=tuple(d["queues"]),
        concurrency=int(d["concurrency"]),
        started_at=datetime.fromisoformat(d["started_at"]),
        heartbeat_at=datetime.fromisoformat(d["heartbeat_at"]),
        expires_at=datetime.fromisoformat(d["expires_at"]),
        running=tuple(d.get("running", ())),
        version=d.get("version", ""),
        tasks=tuple(d.get("tasks", ())),
    )


def load_script(name: str) -> str:
    """A script's text: lua/common.lua followed by lua/<name>.lua (one EVALSHA per transition)."""
    lua = resources.files("conveyor.store.redis").joinpath("lua")
    return lua.joinpath("common.lua").read_text() + "\n" + lua.joinpath(f"{name}.lua").read_text()


_CONNECTION_ERRORS = (rexc.ConnectionError, rexc.TimeoutError, ConnectionError, OSError, asyncio.TimeoutError)


class RedisStore(Store):
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

    def _connect(self) -> aioredis.Redis:
        """Build the clients (no I/O yet). One retry without back-off replaces a pooled connection that died with
        a Redis restart; a Redis that stays down fails fast instead of hanging the caller."""
        if self._client is None:
            common: dict[str, Any] = {
                "decode_responses": True,
                "socket_connect_timeout": self._socket_timeout,
                "retry": Retry(NoBackoff(), 1),
                "health_check_interval": 10,
            }
            max_connections: int | None = self.options.get("max_connections")
            if max_connections is not None:
                common["max_connections"] = max_connections
            self._client = aioredis.Redis.from_url(self._redis_url, socket_timeout=self._socket_timeout, **common)
            self._scripts = ScriptRunner(
                self._redis_url,
                {name: load_script(name) for name in SCRIPTS},
                timeout=self._socket_timeout,
                connect_timeout=self._socket_timeout,
                max_connections=max_connections,
            )
        return self._client

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
        except _CONNECTION_ERRORS as exc:
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
        pattern = _glob_escape(self.prefix) + ":*"
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
        except _CONNECTION_ERRORS as exc:
            raise StoreUnavailable(UNAVAILABLE) from exc
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def ping(self) -> None:
        await self._do(lambda c: c.ping())

    # ---- plumbing -------------------------------------------------------------------------------------------

    async def _do(self, fn: Callable[[aioredis.Redis], Awaitable[Any]]) -> Any:
        """Run one Redis operation, turning every connection failure into StoreUnavailable."""
        if self._closed and self._client is None:
            raise StoreUnavailable(UNAVAILABLE)
        client = self._connect()
        try:
            return await fn(client)
        except _CONNECTION_ERRORS as exc:
            raise StoreUnavailable(UNAVAILABLE) from exc
        except rexc.ResponseError as exc:
            text = str(exc)
            if text.startswith(("MISCONF", "LOADING", "READONLY", "MASTERDOWN")):
                raise StoreUnavailable(UNAVAILABLE) from exc
            raise

    async def _run(self, name: str, args: Sequence[Any]) -> Any:
        """Run one transition script (scripts.py: on the store's own connections, not the client's pool)."""
        script_args = [self.prefix, *args]

        async def call(_: aioredis.Redis) -> Any:
            assert self._scripts is not None
            return await self._scripts.run(name, script_args)

        return await self._do(call)

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
                ]
            )
        idle = self._idle.take(jobs) if self._idle else None
        if idle is None:
            reply = await self._run("enqueue", [_batch(rows), ""])
        else:
            handoff = {
                "worker": idle.worker_id,
                "limit": idle.limit,
                "lease": str(idle.lease // _US),
                "queues": list(idle.queues),
                "namespaces": None if idle.namespaces is None else list(idle.namespaces),
                "exclude": list(idle.exclude_namespaces),
                "tasks": None if idle.tasks is None else list(idle.tasks),
                "tokens": "".join(new_lease_tokens(idle.limit)),
            }
            # The claimed jobs reach the worker from the script's completion, not from this coroutine: a caller
            # cancelled meanwhile must not strand them in `processing`.
            call = asyncio.ensure_future(self._run("enqueue", [_batch(rows), json.dumps(handoff)]))
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
        if stored and (idle is None or reply[3] == 1):
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
        reply = await self._shielded_claim("claim", [worker_id, limit, lease // _US, opts, tokens])
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
        reply = await self._shielded_claim("claim_user", [namespace, user_id, worker_id, lease // _US, token])
        if reply[0] == "conflict":
            raise Conflict(CONFLICT_MESSAGE)
        if reply[0] == "none":
            return None
        return decode_job(json.loads(reply[1]))

    async def heartbeat(self, leases: Sequence[Lease], lease: timedelta) -> list[LeaseState]:
        if not leases:
            return []
        args: list[Any] = [lease // _US]
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
            if f.status is JobStatus.PROCESSING or (f.release and f.status is not JobStatus.PENDING):
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
                    None if a is None else _attempt_head(a),
                    None if a is None else _lost_head(a),
                    None if a is None else _attempt_body(a),
                ]
            )
        reply: str = await self._run("finish", [_batch(rows)])
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
        reply = await self._run("rescue", [_opt_us(now), max(0, limit)])
        jobs = [decode_job(h) for h in json.loads(reply)]
        if any(j.status is JobStatus.PENDING for j in jobs):
            self._waker.notify()
        return jobs

    async def prune(
        self, completed_before: datetime, failed_before: datetime, limit: int = 10_000, *, namespace: str | None = None
    ) -> int:
        if limit <= 0:
            return 0
        args = [to_us(completed_before), to_us(failed_before), limit, namespace or ""]
        return int(await self._run("prune", args))

    # ---- inspection and management --------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        fields = await self._do(lambda c: c.hgetall(self.keys.job(job_id)))
        if not fields:
            return None
        return decode_job(_as_dict(fields))

    async def list_jobs(self, filter: JobFilter, limit: int = 20, offset: int = 0) -> Page[Job]:
        offset = max(0, offset)
        limit = max(0, limit)
        if filter.ids is not None:
            return await self._list_ids(filter, limit, offset)
        args = [
            _opt(filter.namespace),
            _opt(filter.queue),
            _opt(filter.task),
            _opt(None if filter.status is None else JobStatus(filter.status).value),
            _opt(filter.user_id),
            limit,
            offset,
            *_STATUSES,
        ]
        reply = await self._run("list", args)
        items = [decode_job(h) for h in json.loads(reply[1])]
        return Page(items=items, total=int(reply[0]), limit=limit, offset=offset)

    async def _list_ids(self, flt: JobFilter, limit: int, offset: int) -> Page[Job]:
        ids = list(dict.fromkeys(flt.ids or ()))

        async def fetch(c: aioredis.Redis) -> list[Any]:
            pipe = c.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(self.keys.job(job_id))
            return list(await pipe.execute())

        found = [decode_job(_as_dict(fields)) for fields in await self._do(fetch) if fields]
        matched = [
            j
            for j in found
            if (flt.namespace is None or j.namespace == flt.namespace)
            and (flt.queue is None or j.queue == flt.queue)
            and (flt.task is None or j.task == flt.task)
            and (flt.status is None or j.status == flt.status)
            and (flt.user_id is None or j.user_id == flt.user_id)
        ]
        matched.sort(key=lambda j: (j.created, j.id), reverse=True)
        return Page(items=matched[offset : offset + limit], total=len(matched), limit=limit, offset=offset)

    async def attempts(self, job_id: str) -> list[Attempt]:
        records: dict[str, str] = await self._do(lambda c: c.hgetall(self.keys.attempts(job_id)))
        return sorted((decode_attempt(text, field) for field, text in records.items()), key=attempt_order)

    async def _stat_rows(self, namespace: str | None, queue: str | None, task: str | None) -> list[list[Any]]:
        rows: list[list[Any]] = await self._run("stats", [_opt(namespace), _opt(queue), _opt(task), *_STATUSES])
        return rows

    async def stats(self, namespace: str | None = None, queue: str | None = None, task: str | None = None) -> Stats:
        totals = [0] * (len(_STATUSES) + 1)
        for row in await self._stat_rows(namespace, queue, task):
            for i in range(len(totals)):
                totals[i] += int(row[1 + i])
        by = dict(zip([*_STATUSES, "scheduled"], totals, strict=True))
        return Stats(
            pending=by["pending"],
            processing=by["processing"],
            completed=by["completed"],
            failed=by["failed"],
            cancelled=by["cancelled"],
            scheduled=by["scheduled"],
        )

    async def _change(self, name: str, job_id: str, *extra: Any) -> tuple[str, Any]:
        reply = await self._run(name, [job_id, *extra])
        kind = reply[0]
        if kind == "missing":
            raise JobNotFound(job_id)
        if kind == "ok":
            return kind, json.loads(reply[1])
        return kind, reply[1] if len(reply) > 1 else None

    async def cancel(self, job_id: str) -> Job:
        kind, value = await self._change("cancel", job_id)
        if kind == "invalid":
            raise InvalidTransition(
                f"Job cannot be cancelled (must be in 'pending' or 'processing' status; it is {value!r})"
            )
        return decode_job(value)

    async def requeue(self, job_id: str) -> Job:
        job = await self.get_job(job_id)
        kind, value = await self._change("requeue", job_id)
        if kind == "invalid":
            raise InvalidTransition("Job cannot be requeued (must be in 'failed' status)")
        if kind == "unique":
            key = job.unique_key if job is not None else None
            raise InvalidTransition(f"Job cannot be requeued: active job {value} holds its unique key {key!r}")
        self._waker.notify()
        return decode_job(value)

    async def delete(self, job_id: str, *, force: bool = False) -> Job:
        kind, value = await self._change("delete", job_id, "1" if force else "0")
        if kind == "invalid":
            raise InvalidTransition("Job cannot be deleted (must be in 'pending' or 'failed' status)")
        self._waker.notify()
        return decode_job(value)

    async def run_now(self, job_id: str) -> Job:
        kind, value = await self._change("run_now", job_id)
        if kind == "invalid":
            raise InvalidTransition(f"Job cannot be run now (must be in 'pending' status; it is {value!r})")
        self._waker.notify()
        return decode_job(value)

    async def delete_user_data(self, user_id: str) -> int:
        return int(await self._run("delete_user", [user_id]))

    async def has_pending_job(self, namespace: str, user_id: str) -> bool:
        key = self.keys.lane(namespace, f"u:{user_id}")
        return bool(await self._do(lambda c: c.exists(key)))

    # ---- namespaces ------------------------------------------------------------------------------------------

    async def create_namespace(self, namespace: Namespace) -> Namespace:
        """put_namespace.lua's compare-and-set with "absent" expected: an atomic create."""
        if namespace.name == DEFAULT_NAMESPACE:  # exists whether stored or not
            raise NamespaceExists(namespace.name)
        stored = replace(namespace, extra=dict(namespace.extra))
        doc = json.dumps(stored.to_dict())
        if not await self._run("put_namespace", [stored.name, "", doc, "1" if stored.auto_run else "0"]):
            raise NamespaceExists(stored.name)
        return stored

    async def put_namespace(self, namespace: Namespace, *, expected_revision: int | None = None) -> Namespace:
        """Create or replace with a compare-and-set loop (put_namespace.lua) so concurrent replaces each get their
        own revision; with `expected_revision`, the loop ends in RevisionConflict as soon as the revision moved."""
        while True:
            current: str | None = await self._do(lambda c: c.hget(self.keys.namespaces, namespace.name))
            old = None if current is None else Namespace.from_dict(json.loads(current))
            if expected_revision is not None:
                if old is None and namespace.name == DEFAULT_NAMESPACE:
                    old = DEFAULT_NAMESPACE_SETTINGS  # never stored: revision 0 (the script still expects absent)
                if old is None:
                    raise NamespaceNotFound(namespace.name)
                if old.revision != expected_revision:
                    raise RevisionConflict(namespace.name, expected_revision, old.revision)
            stored = replace(namespace, extra=dict(namespace.extra))
            if old is not None:
                stored = replace(stored, created=old.created, updated=utcnow(), revision=old.revision + 1)
            doc = json.dumps(stored.to_dict())
            ok = await self._run("put_namespace", [namespace.name, _opt(current), doc, "1" if stored.auto_run else "0"])
            if ok:
                return stored

    async def get_namespace(self, name: str) -> Namespace | None:
        doc = await self._do(lambda c: c.hget(self.keys.namespaces, name))
        if doc is None:
            return DEFAULT_NAMESPACE_SETTINGS if name == DEFAULT_NAMESPACE else None
        return Namespace.from_dict(json.loads(doc))

    async def list_namespaces(self) -> list[Namespace]:
        docs: dict[str, str] = await self._do(lambda c: c.hgetall(self.keys.namespaces))
        found = {name: Namespace.from_dict(json.loads(doc)) for name, doc in docs.items()}
        found.setdefault(DEFAULT_NAMESPACE, DEFAULT_NAMESPACE_SETTINGS)
        return [found[name] for name in sorted(found)]

    async def delete_namespace(self, name: str) -> bool:
        if name == DEFAULT_NAMESPACE:
            raise ValidationError("the namespace 'default' always exists and cannot be deleted", field="name")
        return bool(await self._run("delete_namespace", [name]))

    # ---- queues ----------------------------------------------------------------------------------------------

    async def put_queue_settings(self, settings: QueueSettings) -> QueueSettings:
        if settings.concurrency is not None and settings.concurrency < 0:
            raise ValidationError("queue concurrency must be ≥ 0 (or None for no limit)", field="concurrency")
        p = pair(settings.namespace, settings.name)
        doc = json.dumps({"paused": settings.paused, "concurrency": settings.concurrency})

        async def write(c: aioredis.Redis) -> None:
            pipe = c.pipeline(transaction=True)  # MULTI/EXEC: the three views change together
            pipe.hset(self.keys.qset, p, doc)
            pipe.sadd(self.keys.pairs, p)
            if settings.paused:
                pipe.sadd(self.keys.qpaused, p)
            else:
                pipe.srem(self.keys.qpaused, p)
            if settings.concurrency is None:
                pipe.hdel(self.keys.qconc, p)
            else:
                pipe.hset(self.keys.qconc, p, str(settings.concurrency))
            pipe.lpush(self.keys.wake(settings.name), "1")  # a resumed queue or a raised limit may free jobs
            pipe.ltrim(self.keys.wake(settings.name), 0, 63)
            await pipe.execute()

        await self._do(write)
        self._waker.notify()
        return settings

    async def list_queues(self, namespace: str | None = None) -> list[QueueInfo]:
        out: list[QueueInfo] = []
        n = len(_STATUSES)
        for row in await self._stat_rows(namespace, None, None):
            ns, q = str(row[0]).split(":", 1)
            counts = {s: int(row[1 + i]) for i, s in enumerate(_STATUSES)}
            counts["scheduled"] = int(row[1 + n])
            concurrency = int(row[3 + n])
            out.append(
                QueueInfo(
                    namespace=ns,
                    name=q,
                    paused=bool(int(row[2 + n])),
                    counts=counts,
                    concurrency=None if concurrency < 0 else concurrency,
                )
            )
        out.sort(key=lambda qi: (qi.namespace, qi.name))
        return out

    # ---- workers ---------------------------------------------------------------------------------------------

    async def register_worker(self, info: WorkerInfo) -> None:
        """The registration is a key that Redis expires by itself: a killed worker leaves nothing behind."""
        expires_ms = to_us(info.expires_at) // 1000

        async def write(c: aioredis.Redis) -> None:
            pipe = c.pipeline(transaction=True)
            pipe.set(self.keys.worker(info.id), _encode_worker(info), pxat=max(1, expires_ms))
            pipe.zadd(self.keys.workers, {info.id: expires_ms})
            await pipe.execute()

        await self._do(write)

    async def unregister_worker(self, worker_id: str) -> None:
        async def drop(c: aioredis.Redis) -> None:
            pipe = c.pipeline(transaction=True)
            pipe.delete(self.keys.worker(worker_id))
            pipe.zrem(self.keys.workers, worker_id)
            await pipe.execute()

        await self._do(drop)

    async def list_workers(self) -> list[WorkerInfo]:
        async def read(c: aioredis.Redis) -> list[WorkerInfo]:
            ids = [str(i) for i in await c.zrange(self.keys.workers, 0, -1)]
            if not ids:
                return []
            docs: list[Any] = list(await c.mget([self.keys.worker(i) for i in ids]))
            gone = [i for i, d in zip(ids, docs, strict=True) if d is None]
            if gone:
                await c.zrem(self.keys.workers, *gone)
            now = utcnow()
            live = [_decode_worker(d) for d in docs if d is not None]
            return sorted((w for w in live if w.expires_at > now), key=lambda w: (w.started_at, w.id))

        workers: list[WorkerInfo] = await self._do(read)
        return workers

    # ---- leader election ---------------------------------------------------------------------------------------

    async def elect(self, name: str, candidate: str, ttl: float) -> Leadership:
        reply = await self._run("elect", ["elect", name, candidate, max(1, int(ttl * 1000))])
        took, holder, term, left = reply
        return Leadership(name, holder, int(term), int(left) / 1000, held=int(took) == 1 and holder == candidate)

    async def resign(self, name: str, candidate: str) -> None:
        await self._run("elect", ["resign", name, candidate])

    async def leaders(self) -> list[Leadership]:
        flat = await self._run("elect", ["list"])
        found = [
            Leadership(flat[i], flat[i + 1], int(flat[i + 2]), int(flat[i + 3]) / 1000) for i in range(0, len(flat), 4)
        ]
        return sorted(found, key=lambda role: role.name)

    # ---- key-value -------------------------------------------------------------------------------------------

    async def kv_get(self, key: str) -> str | None:
        value: str | None = await self._do(lambda c: c.get(self.keys.kv(key)))
        return value

    async def kv_set(self, key: str, value: str, *, ttl: float | None = None, only_if_absent: bool = False) -> bool:
        px = None if ttl is None else max(1, int(ttl * 1000))
        result = await self._do(lambda c: c.set(self.keys.kv(key), value, px=px, nx=only_if_absent))
        return bool(result)

    async def kv_setdefault(self, key: str, value: str, *, ttl: float | None = None) -> tuple[str, bool]:
        px = "" if ttl is None else str(max(1, int(ttl * 1000)))
        stored, put = await self._run("kv_setdefault", [key, value, px])
        return str(stored), bool(int(put))

    async def kv_delete(self, key: str) -> None:
        await self._do(lambda c: c.delete(self.keys.kv(key)))


def _glob_escape(text: str) -> str:
    """`text` as a literal inside a SCAN MATCH pattern."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _as_dict(reply: Any) -> dict[str, str]:
    """HGETALL answers a dict (RESP3 / response callbacks) or a flat list, depending on protocol and version."""
    if isinstance(reply, dict):
        return reply
    it = iter(reply)
    return dict(zip(it, it, strict=True))
