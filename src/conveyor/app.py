"""The Python API: `Conveyor` registers tasks, enqueues, inspects and runs workers, sync and async.

Async drivers (psycopg pools, redis-py asyncio clients) belong to the event loop that opened them, so the app
binds its store to one *home loop*: the first running loop that uses it, or a private portal thread when the
first call is a sync one. Calls from any other loop or thread are carried to the home loop and back, which keeps
every store single-loop and lets sync and async callers share one app.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any, Literal, TypeVar, Unpack, overload

from conveyor import enqueue as _enqueue
from conveyor.backoff import Backoff
from conveyor.cron import CronSchedule, make_schedule
from conveyor.errors import NamespaceNotFound, ValidationError
from conveyor.events import EventBus
from conveyor.execution import run_user_job
from conveyor.isolation import ProcessPool, isolated_handlers
from conveyor.logs import ensure_visible
from conveyor.model import (
    DEFAULT_LEASE,
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_NAMESPACE,
    DEFAULT_QUEUE,
    DEFAULT_TIMEOUT,
    JSON,
    KEEP,
    Attempt,
    Job,
    JobFilter,
    JobKey,
    JobSort,
    JobStatus,
    Keep,
    Leadership,
    Namespace,
    NewJob,
    Page,
    QueueChange,
    QueueFlow,
    QueueInfo,
    QueueSettings,
    RateBucket,
    RateLimit,
    Stats,
    WorkerInfo,
    check_queue_settings,
    check_rate_key,
    rate_bucket,
    utcnow,
    validate_name,
    validate_namespace,
)
from conveyor.runtime import Runtime
from conveyor.schedules import Schedules
from conveyor.store import DEFAULT_URL, Store, open_store
from conveyor.tasks import (
    THREAD,
    CronOptions,
    EnqueueOptions,
    EnqueueSpec,
    Handler,
    JobOptions,
    RunResult,
    TaskSpec,
    UniqueOptions,
    WorkerOptions,
    check_options,
)
from conveyor.webhooks import check_webhook_url
from conveyor.worker import Worker

__all__ = ["Conveyor", "EnqueueSpec", "Handler", "RunResult", "TaskSpec", "unserved_warning"]

T = TypeVar("T")


class Conveyor:
    """A job queue on one store.

    >>> app = Conveyor("sqlite:///conveyor.db")
    >>> @app.task("send_email", max_attempts=5, timeout=60)
    ... async def send_email(payload: dict, ctx: JobContext) -> dict: ...
    >>> app.enqueue("send_email", {"to": "a@b"}, delay=10)
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        store: Store | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        lease: timedelta = DEFAULT_LEASE,
        **store_options: Any,
    ) -> None:
        url = url or (DEFAULT_URL if store is None else f"{store.scheme}://")
        self.runtime = Runtime(
            store if store is not None else open_store(url, **store_options),
            url=url,
            max_payload_bytes=max_payload_bytes,
            lease=lease,
        )
        """The core this facade stands on: the store, the registries, the event bus and the home loop. The worker,
        the maintenance services and the surfaces take it (or this app, which has one)."""
        self.runtime.app = self
        self._run_pool: ProcessPool | None = None  # children for process-isolated tasks run by run_next
        self._served_cache: tuple[float, frozenset[str] | None] | None = None  # aunserved_tasks
        self._schedules: Schedules | None = None

    # ---- what the runtime holds, as the app's attributes ------------------------------------------------------

    @property
    def store(self) -> Store:
        return self.runtime.store

    @store.setter
    def store(self, store: Store) -> None:
        self.runtime.store = store

    @property
    def url(self) -> str:
        return self.runtime.url

    @url.setter
    def url(self, url: str) -> None:
        self.runtime.url = url

    @property
    def max_payload_bytes(self) -> int:
        return self.runtime.max_payload_bytes

    @max_payload_bytes.setter
    def max_payload_bytes(self, value: int) -> None:
        self.runtime.max_payload_bytes = value

    @property
    def lease(self) -> timedelta:
        return self.runtime.lease

    @lease.setter
    def lease(self, value: timedelta) -> None:
        self.runtime.lease = value

    @property
    def tasks(self) -> dict[str, TaskSpec]:
        return self.runtime.tasks

    @property
    def schedules(self) -> Schedules:
        """Every cron schedule: a mapping of those declared in code (`app.cron`), and the management of the ones
        made at runtime and kept in the store (`create`, `update`, `pause`, `resume`, `delete`, `trigger`, `list`,
        `runs`; conveyor/schedules.py, docs/cron.md)."""
        if self._schedules is None:
            self._schedules = Schedules(self.runtime)
        return self._schedules

    @property
    def events(self) -> EventBus:
        return self.runtime.events

    # ---- task registration ---------------------------------------------------------------------------------

    @overload
    def task(self, name: Handler) -> Handler: ...

    @overload
    def task(
        self,
        name: str | None = None,
        *,
        max_attempts: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        backoff: Backoff | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        transactional: bool = False,
        isolation: str | None = None,
        unique: UniqueOptions | bool | None = None,
    ) -> Callable[[Handler], Handler]: ...

    def task(
        self,
        name: str | Handler | None = None,
        *,
        max_attempts: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        backoff: Backoff | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        transactional: bool = False,
        isolation: str | None = None,
        unique: UniqueOptions | bool | None = None,
    ) -> Handler | Callable[[Handler], Handler]:
        """Register a handler: `@app.task`, `@app.task("name")` or `@app.task("name", max_attempts=5, ...)`.

        A handler takes `(payload)` or `(payload, ctx)`; plain functions run in a thread pool, `async def` ones
        on the worker's event loop. Its return value (JSON) becomes the attempt's result.

        `isolation="process"` runs a plain function in a child process that the worker kills when the task times
        out or is cancelled (a hard timeout; a thread cannot be stopped). The function must then be defined at the
        top level of a module, as multiprocessing requires. None follows the worker's default.

        `unique=` gives the task's jobs a uniqueness rule by default (`UniqueOptions`, docs/unique.md)."""
        if callable(name):
            self.register(name.__name__, name)
            return name

        def decorator(fn: Handler) -> Handler:
            self.register(
                name or fn.__name__,
                fn,
                max_attempts=max_attempts,
                timeout=timeout,
                backoff=backoff,
                queue=queue,
                priority=priority,
                transactional=transactional,
                isolation=isolation,
                unique=unique,
            )
            return fn

        return decorator

    def register(
        self,
        name: str,
        fn: Handler,
        *,
        max_attempts: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        backoff: Backoff | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        transactional: bool = False,
        isolation: str | None = None,
        unique: UniqueOptions | bool | None = None,
    ) -> TaskSpec:
        """Register `fn` as the handler of task `name` (what `@app.task` does). Names starting with `conveyor:`
        are reserved for Conveyor's own tasks."""
        return self.runtime.register(
            name,
            fn,
            max_attempts=max_attempts,
            timeout=timeout,
            backoff=backoff,
            queue=queue,
            priority=priority,
            transactional=transactional,
            isolation=isolation,
            unique=unique,
        )

    # ---- cron ----------------------------------------------------------------------------------------------

    @overload
    def cron(
        self,
        spec: str,
        task: str,
        payload: JSON = None,
        *,
        name: str | None = None,
        timezone: str | None = None,
        backfill: Literal["none", "latest", "all"] = "none",
        backfill_window: timedelta | float | None = None,
        **options: Unpack[CronOptions],
    ) -> None: ...

    @overload
    def cron(
        self,
        spec: str,
        task: None = None,
        payload: JSON = None,
        *,
        name: str | None = None,
        timezone: str | None = None,
        backfill: Literal["none", "latest", "all"] = "none",
        backfill_window: timedelta | float | None = None,
        **options: Unpack[CronOptions],
    ) -> Callable[[Handler], Handler]: ...

    def cron(
        self,
        spec: str,
        task: str | None = None,
        payload: JSON = None,
        *,
        name: str | None = None,
        timezone: str | None = None,
        backfill: Literal["none", "latest", "all"] = "none",
        backfill_window: timedelta | float | None = None,
        **options: Unpack[CronOptions],
    ) -> Callable[[Handler], Handler] | None:
        """Enqueue `task` on a schedule: `app.cron("*/5 * * * *", "cleanup", {"days": 7})`, or as a decorator on a
        sync or async handler, `@app.cron("@hourly")`, which also registers it as a task. Specs: 5-field crontab,
        @hourly/@daily/@weekly/@monthly/@yearly, or `@every 10m`, read on `timezone`'s wall clock (an IANA name,
        UTC by default; the DST rules are in docs/cron.md). Workers (maintenance on) enqueue each occurrence exactly
        once across processes. `backfill` says what happens to occurrences missed while no scheduler ran ("none",
        "latest", "all" within `backfill_window`, 24 h by default). `options` are enqueue options (queue,
        priority, namespace…)."""

        def build(task_name: str) -> CronSchedule:
            return make_schedule(
                spec,
                task_name,
                payload,
                name,
                options,
                timezone=timezone,
                backfill=backfill,
                backfill_window=backfill_window,
            )

        def add(task_name: str) -> None:
            self.runtime.add_schedule(build(task_name))

        if task is not None:
            add(task)
            return None

        def decorator(fn: Handler) -> Handler:
            build(fn.__name__)  # validate before registering the task
            if fn.__name__ not in self.tasks:
                self.register(fn.__name__, fn)
            add(fn.__name__)
            return fn

        return decorator

    # ---- opening and closing -------------------------------------------------------------------------------

    def _sync(self, factory: Callable[[], Coroutine[Any, Any, T]], *, wake_for_signals: bool = False) -> T:
        return self.runtime.call_sync(factory, wake_for_signals=wake_for_signals)

    async def _on_home(self, factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
        return await self.runtime.on_home(factory)

    async def aopen(self) -> None:
        await self.runtime.on_home(_noop)

    async def _isolation_pool(self) -> ProcessPool:
        """Child processes for the process-isolated tasks that `run_next` executes here (started on first use;
        workers have pools of their own, sized to their slots)."""
        if self._run_pool is None:
            pool = ProcessPool(isolated_handlers(self.tasks, THREAD), size=2, worker_id="run")
            await pool.start()
            self._run_pool = pool
        return self._run_pool

    async def aclose(self) -> None:
        pool, self._run_pool = self._run_pool, None
        if pool is not None:
            await self._on_home(pool.close)
        await self.runtime.aclose()

    def close(self) -> None:
        pool, self._run_pool = self._run_pool, None
        if pool is not None:
            self._sync(pool.close)
        self.runtime.close()

    def open(self) -> None:
        self._sync(_noop)

    # ---- enqueue -------------------------------------------------------------------------------------------

    def build_job(self, task: str, payload: JSON = None, **options: Unpack[JobOptions]) -> NewJob:
        """Validate one job's options (task defaults applied) without storing anything. Task names starting with
        `conveyor:` are refused: they are reserved for Conveyor's own jobs."""
        check_options(options, _JOB_OPTIONS, where="build_job")
        return _enqueue.build_job(self.runtime, task, payload, options)

    async def aenqueue(
        self,
        task: str,
        payload: JSON = None,
        *,
        connection: Any = None,
        require_transaction: bool = True,
        **options: Unpack[JobOptions],
    ) -> Job:
        """Enqueue one job. Options (`EnqueueOptions`): namespace, queue, priority, delay, run_at, max_attempts,
        user_id, group_key, unique_key; an unknown one is a TypeError. With `connection=`, the job is inserted
        through the caller's own connection and transaction (psycopg AsyncConnection, sqlite3.Connection,
        SQLAlchemy Connection/Session): it exists if and only if the caller commits. That connection must be inside
        a transaction — an autocommit or idle one is refused (CallerConnectionError) unless
        `require_transaction=False` says that committing with whatever comes next on it (at once, in autocommit
        mode) is what the caller wants."""
        check_options(options, _JOB_OPTIONS)
        jobs = await self.aenqueue_many(
            [{"task": task, "payload": payload, **options}],
            connection=connection,
            require_transaction=require_transaction,
        )
        return jobs[0]

    async def aenqueue_many(
        self,
        specs: Sequence[EnqueueSpec | Mapping[str, Any]],
        *,
        connection: Any = None,
        require_transaction: bool = True,
    ) -> list[Job]:
        """Enqueue several jobs in one round trip, all or nothing (`connection=`: see aenqueue)."""
        return await _enqueue.enqueue_many(
            self.runtime, specs, connection=connection, require_transaction=require_transaction
        )

    def enqueue(
        self,
        task: str,
        payload: JSON = None,
        *,
        connection: Any = None,
        require_transaction: bool = True,
        **options: Unpack[JobOptions],
    ) -> Job:
        """Enqueue one job (the sync twin of `aenqueue`, which says what the options mean)."""
        check_options(options, _JOB_OPTIONS)
        if connection is not None and not _enqueue.is_async_connection(connection):
            built, _ = _enqueue.build_batch(self.runtime, [{"task": task, "payload": payload, **options}])
            return _enqueue.enqueue_on_connection(self.runtime, built, connection, require_transaction)[0]
        return self._sync(
            lambda: self.aenqueue(
                task, payload, connection=connection, require_transaction=require_transaction, **options
            )
        )

    def enqueue_many(
        self,
        specs: Sequence[EnqueueSpec | Mapping[str, Any]],
        *,
        connection: Any = None,
        require_transaction: bool = True,
    ) -> list[Job]:
        """Enqueue several jobs in one round trip, all or nothing (the sync twin of `aenqueue_many`)."""
        if connection is not None and not _enqueue.is_async_connection(connection):
            built, _ = _enqueue.build_batch(self.runtime, specs)
            return _enqueue.enqueue_on_connection(self.runtime, built, connection, require_transaction)
        return self._sync(
            lambda: self.aenqueue_many(specs, connection=connection, require_transaction=require_transaction)
        )

    # ---- warnings for enqueue surfaces -------------------------------------------------------------------------

    async def aunserved_tasks(self, tasks: Iterable[str]) -> list[str]:
        """The tasks among `tasks` that no live worker has registered, in order, for the warnings of `conveyor
        enqueue`, the HTTP API and the UI (a job of such a task waits until a worker with it starts). Never
        raises: with the store down, or when live workers do not report their tasks (older versions), nothing is
        said. The registry is read at most once a second per app."""
        wanted = list(dict.fromkeys(tasks))
        now = time.monotonic()
        cached = self._served_cache
        if cached is None or now - cached[0] > 1.0:
            try:
                workers = await self.alist_workers()
            except Exception:
                return []
            if any(not w.tasks for w in workers):
                served: frozenset[str] | None = None  # a worker that does not say what it runs may run anything
            else:
                served = frozenset(t for w in workers for t in w.tasks)
            cached = self._served_cache = (now, served)
        served = cached[1]
        if served is None:
            return []
        return [t for t in wanted if t not in served]

    # ---- inspection & management (async) -------------------------------------------------------------------

    async def aget_job(self, job_id: str) -> Job | None:
        return await self._on_home(lambda: self.store.get_job(job_id))

    async def alist_jobs(
        self,
        filter: JobFilter | None = None,
        *,
        limit: int = 20,
        offset: int = 0,
        after: JobKey | None = None,
        sort: JobSort = JobSort.CREATED_DESC,
        **criteria: Any,
    ) -> Page[Job]:
        """One page of jobs in `sort` order. For the next page pass `after=page.next` (a keyset: jobs consumed or
        added between pages never make it skip or repeat one); `offset` is PocketBase-style paging."""
        flt = filter or JobFilter(**{k: (JobStatus(v) if k == "status" and v else v) for k, v in criteria.items()})  # type: ignore[arg-type]
        return await self._on_home(lambda: self.store.list_jobs(flt, limit, offset, after=after, sort=sort))

    async def aattempts(self, job_id: str) -> list[Attempt]:
        return await self._on_home(lambda: self.store.attempts(job_id))

    async def astats(self, namespace: str | None = None, queue: str | None = None, task: str | None = None) -> Stats:
        return await self._on_home(lambda: self.store.stats(namespace, queue, task))

    async def acancel(self, job_id: str) -> Job:
        job = await self._on_home(lambda: self.store.cancel(job_id))
        self.events.publish_cancel(job)
        return job

    async def arequeue(self, job_id: str) -> Job:
        return await self._on_home(lambda: self.store.requeue(job_id))

    async def adelete(self, job_id: str, *, force: bool = False) -> Job:
        return await self._on_home(lambda: self.store.delete(job_id, force=force))

    async def arun_now(self, job_id: str) -> Job:
        return await self._on_home(lambda: self.store.run_now(job_id))

    async def alist_queues(self, namespace: str | None = None) -> list[QueueInfo]:
        return await self._on_home(lambda: self.store.list_queues(namespace))

    async def apause_queue(self, queue: str, namespace: str = DEFAULT_NAMESPACE, *, paused: bool = True) -> None:
        """Pause (or resume) a queue; its limits stay as they are (only the pause changes)."""
        await self.aupdate_queue(queue, namespace, paused=paused)

    async def aupdate_queue(
        self,
        queue: str,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        paused: bool | Keep = KEEP,
        concurrency: int | Keep | None = KEEP,
        rate_limit: RateLimit | str | Keep | None = KEEP,
        rate_burst: int | None = None,
        key_concurrency: int | Keep | None = KEEP,
        rate_key: str | Keep | None = KEEP,
    ) -> QueueSettings:
        """Change some of a queue's settings at runtime, keeping the others; returns the settings now stored.

        `concurrency`: at most this many of the queue's jobs processing at once, across every worker (None: no
        cap). `rate_limit`: at most N claims per period, across every worker — a `RateLimit` or text such as
        "100/s", "10/m", "3/10s" (None: no limit); `rate_burst` is how many may start at once after an idle spell
        (default: N). `key_concurrency`: at most this many jobs with the same `concurrency_key` (an enqueue
        option: per user, per tenant) processing at once, across every worker (None: no limit). `rate_key`
        partitions the rate limit: every value of "user_id", "group_key", "concurrency_key" or "payload.<field>" (a
        top-level payload field) gets its own bucket of `rate_limit` (None: one bucket for the queue). Settings not
        given are left as stored, so a pause never erases a limit. `rate_burst` alone changes the burst of the
        stored rate limit. Workers apply a change at their next claim; Run (GS2) ignores pauses and limits."""
        validate_name(queue, "queue")
        validate_name(namespace, "namespace")
        if not isinstance(rate_key, Keep):
            check_rate_key(rate_key)
        if isinstance(rate_limit, str):
            rate_limit = RateLimit.parse(rate_limit, rate_burst)
        elif rate_burst is not None:
            if rate_limit is KEEP:  # the burst of the stored limit
                stored = (await self._on_home(lambda: self.store.get_queue_settings(namespace, queue))).rate_limit
                if stored is None:
                    raise ValidationError(
                        f"queue {queue!r} has no rate limit: give rate_limit with rate_burst", field="rate_burst"
                    )
                rate_limit = stored
            if not isinstance(rate_limit, RateLimit):
                raise ValidationError("rate_burst needs a rate_limit to go with it", field="rate_burst")
            rate_limit = RateLimit(rate_limit.limit, rate_limit.period, rate_burst)
        change = QueueChange(
            paused=paused,
            concurrency=concurrency,
            rate_limit=rate_limit,
            key_concurrency=key_concurrency,
            rate_key=rate_key,
        )
        check_queue_settings(change.apply(QueueSettings(namespace, queue)))
        return await self._on_home(lambda: self.store.update_queue_settings(namespace, queue, change))

    async def aget_queue(self, queue: str, namespace: str = DEFAULT_NAMESPACE) -> QueueSettings:
        """A queue's stored settings (the defaults when it has none)."""
        validate_name(queue, "queue")
        validate_name(namespace, "namespace")
        return await self._on_home(lambda: self.store.get_queue_settings(namespace, queue))

    async def aqueue_flow(self, queue: str, namespace: str = DEFAULT_NAMESPACE, *, top: int = 10) -> QueueFlow:
        """What the queue's limits are doing now (`QueueFlow`): settings, processing jobs (in all and for the `top`
        busiest concurrency keys), the rate limiter's tokens and next token (the queue's bucket, or with a rate_key
        the number of keys holding state and the `top` most limited), and the jobs due now with the age of the
        oldest. A few store reads: the processing jobs (at most the workers' slots), the limiter's state, the
        queue's counts and its earliest pending job."""
        validate_name(queue, "queue")
        validate_name(namespace, "namespace")
        store = self.store

        async def read() -> QueueFlow:
            settings = await store.get_queue_settings(namespace, queue)
            running = await store.list_jobs(
                JobFilter(namespace=namespace, queue=queue, status=JobStatus.PROCESSING), limit=1000
            )
            keys = Counter(j.concurrency_key for j in running.items if j.concurrency_key is not None)
            state = await store.rate_state(namespace, queue, top)
            rate: RateBucket | None = None
            most_limited: list[RateBucket] = []
            if settings.rate_limit is not None and settings.rate_key is None:
                rate = rate_bucket(settings.rate_limit, None, state.queue_tat, state.now_us)
            elif settings.rate_limit is not None:
                most_limited = [rate_bucket(settings.rate_limit, k, t, state.now_us) for k, t in state.keys]
            counts = next((q.counts for q in await store.list_queues(namespace) if q.name == queue), {})
            first = await store.list_jobs(
                JobFilter(namespace=namespace, queue=queue, status=JobStatus.PENDING), limit=1, sort=JobSort.RUN_AT
            )
            now = utcnow()
            oldest = next((j.run_at for j in first.items if j.run_at <= now), None)
            return QueueFlow(
                settings=settings,
                processing=max(running.total, len(running.items)),
                busiest_keys=keys.most_common(max(0, top)),
                rate=rate,
                limited_keys=state.key_count if settings.rate_key is not None else 0,
                most_limited=most_limited,
                due=max(0, counts.get("pending", 0) - counts.get("scheduled", 0)),
                oldest_due_age=None if oldest is None else max(0.0, (now - oldest).total_seconds()),
            )

        return await self._on_home(read)

    async def aresume_queue(self, queue: str, namespace: str = DEFAULT_NAMESPACE) -> None:
        await self.apause_queue(queue, namespace, paused=False)

    async def alist_workers(self) -> list[WorkerInfo]:
        """Live workers, each with the maintenance roles it holds now (`leader_of`, from the store's election)."""

        async def read() -> list[WorkerInfo]:
            workers = await self.store.list_workers()
            roles: dict[str, list[str]] = {}
            for role in await self.store.leaders():
                roles.setdefault(role.holder, []).append(role.name)
            return [replace(w, leader_of=tuple(roles.get(w.id, ()))) for w in workers]

        return await self._on_home(read)

    async def aleaders(self) -> list[Leadership]:
        """The elected maintenance roles and who holds each (`conveyor workers` shows them)."""
        return await self._on_home(self.store.leaders)

    async def _checked_namespace(self, namespace: Namespace) -> Namespace:
        """Every rule a namespace's settings follow (validate_namespace); a webhook URL must name a public address
        unless `webhook_allow_private` is set (conveyor.webhooks)."""
        validate_namespace(namespace)
        if namespace.webhook_url:
            await check_webhook_url(namespace.webhook_url, allow_private=namespace.webhook_allow_private)
        return namespace

    async def aput_namespace(self, namespace: Namespace) -> Namespace:
        """Create or replace a namespace's settings (whatever is stored is overwritten: to change some settings
        use `aupdate_namespace`, which cannot lose a concurrent change). The rules are checked first."""
        await self._checked_namespace(namespace)
        return await self._on_home(lambda: self.store.put_namespace(namespace))

    async def acreate_namespace(self, namespace: Namespace) -> Namespace:
        """Create a namespace, atomically, only if none of that name exists: raises NamespaceExists otherwise
        (`default` always exists), so of two concurrent creates exactly one succeeds. The rules are checked first."""
        await self._checked_namespace(namespace)
        return await self._on_home(lambda: self.store.create_namespace(namespace))

    async def aupdate_namespace(self, name: str, change: Callable[[Namespace], Namespace]) -> Namespace:
        """Change a namespace: `change(current)` returns the new settings (e.g. `lambda ns: replace(ns,
        auto_run=False)`), which are checked and written only if nobody changed the namespace meanwhile
        (compare-and-set on its revision); otherwise it is read and `change` applied again, so concurrent updates of
        different settings all land. `change` must be free of side effects. Raises NamespaceNotFound."""

        async def checked(current: Namespace) -> Namespace:
            return await self._checked_namespace(change(current))

        return await self._on_home(lambda: self.store.update_namespace(name, checked))

    async def aget_namespace(self, name: str) -> Namespace:
        ns = await self._on_home(lambda: self.store.get_namespace(name))
        if ns is None:
            raise NamespaceNotFound(name)
        return ns

    async def alist_namespaces(self) -> list[Namespace]:
        return await self._on_home(self.store.list_namespaces)

    async def adelete_namespace(self, name: str) -> bool:
        return await self._on_home(lambda: self.store.delete_namespace(name))

    # ---- the store's small key-value space (settings, keys, replay records) ----------------------------------

    async def akv_get(self, key: str) -> str | None:
        """A value of the store's key-value space (shared by every process on the store), None when absent."""
        return await self._on_home(lambda: self.store.kv_get(key))

    async def akv_set(self, key: str, value: str, *, ttl: float | None = None, only_if_absent: bool = False) -> bool:
        """Set a value (expiring after `ttl` seconds if given); with `only_if_absent`, an atomic test-and-set that
        answers whether this call set it (the first of several processes wins)."""
        return await self._on_home(lambda: self.store.kv_set(key, value, ttl=ttl, only_if_absent=only_if_absent))

    async def akv_setdefault(self, key: str, value: str, *, ttl: float | None = None) -> tuple[str, bool]:
        """Put `value` only when the key has no live value, atomically; answer the value in place and whether this
        call put it (reserve-and-read in one step: the primitive of every replay-once protocol)."""
        return await self._on_home(lambda: self.store.kv_setdefault(key, value, ttl=ttl))

    async def akv_delete(self, key: str) -> None:
        await self._on_home(lambda: self.store.kv_delete(key))

    # ---- users (GS2 user data: data requests and account deletion) ---------------------------------------------

    async def arestore_jobs(self, jobs: Sequence[Job], attempts: Sequence[Attempt] = ()) -> list[Job]:
        """Put jobs back exactly as they were, with their attempt records, all or nothing (`Store.restore_jobs`:
        any status but processing; refuses ids that exist). For user-data imports and moves between stores."""
        return await self._on_home(lambda: self.store.restore_jobs(jobs, attempts))

    async def adelete_user_data(self, user_id: str) -> int:
        """Delete every job of `user_id` (any namespace, any status) with its attempts, atomically. Returns how many
        jobs were deleted. A job running meanwhile cannot finish onto it (its report is stale and ignored)."""
        return await self._on_home(lambda: self.store.delete_user_data(user_id))

    async def arun_next(self, namespace: str, user_id: str, *, worker_id: str | None = None) -> RunResult:
        """GS2 Run: execute the user's next due job here, record the attempt, and tell whether any pending job of
        the user remains. With auto_run off a retryable failure stays at the head, due at once (unless the
        namespace sets `run_retry_backoff`).

        Raises Conflict (409) while another job of that user is processing."""
        return await self._on_home(
            lambda: run_user_job(self.runtime, namespace, user_id, worker_id=worker_id, pool=self._isolation_pool)
        )

    async def arun_worker(self, **options: Unpack[WorkerOptions]) -> None:
        """Run a worker in this process until cancelled or signalled (see conveyor.worker.Worker)."""
        worker = Worker(self, **options)
        await self._on_home(worker.run)

    # ---- sync twins ----------------------------------------------------------------------------------------

    def unserved_tasks(self, tasks: Iterable[str]) -> list[str]:
        return self._sync(lambda: self.aunserved_tasks(tasks))

    def get_job(self, job_id: str) -> Job | None:
        return self._sync(lambda: self.aget_job(job_id))

    def list_jobs(
        self,
        filter: JobFilter | None = None,
        *,
        limit: int = 20,
        offset: int = 0,
        after: JobKey | None = None,
        sort: JobSort = JobSort.CREATED_DESC,
        **criteria: Any,
    ) -> Page[Job]:
        return self._sync(
            lambda: self.alist_jobs(filter, limit=limit, offset=offset, after=after, sort=sort, **criteria)
        )

    def attempts(self, job_id: str) -> list[Attempt]:
        return self._sync(lambda: self.aattempts(job_id))

    def stats(self, namespace: str | None = None, queue: str | None = None, task: str | None = None) -> Stats:
        return self._sync(lambda: self.astats(namespace, queue, task))

    def cancel(self, job_id: str) -> Job:
        return self._sync(lambda: self.acancel(job_id))

    def requeue(self, job_id: str) -> Job:
        return self._sync(lambda: self.arequeue(job_id))

    def delete(self, job_id: str, *, force: bool = False) -> Job:
        return self._sync(lambda: self.adelete(job_id, force=force))

    def run_now(self, job_id: str) -> Job:
        return self._sync(lambda: self.arun_now(job_id))

    def list_queues(self, namespace: str | None = None) -> list[QueueInfo]:
        return self._sync(lambda: self.alist_queues(namespace))

    def pause_queue(self, queue: str, namespace: str = DEFAULT_NAMESPACE) -> None:
        self._sync(lambda: self.apause_queue(queue, namespace))

    def resume_queue(self, queue: str, namespace: str = DEFAULT_NAMESPACE) -> None:
        self._sync(lambda: self.aresume_queue(queue, namespace))

    def update_queue(
        self,
        queue: str,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        paused: bool | Keep = KEEP,
        concurrency: int | Keep | None = KEEP,
        rate_limit: RateLimit | str | Keep | None = KEEP,
        rate_burst: int | None = None,
        key_concurrency: int | Keep | None = KEEP,
        rate_key: str | Keep | None = KEEP,
    ) -> QueueSettings:
        """Sync twin of `aupdate_queue`: e.g. `app.update_queue("emails", rate_limit="100/s", concurrency=20)`."""
        return self._sync(
            lambda: self.aupdate_queue(
                queue,
                namespace,
                paused=paused,
                concurrency=concurrency,
                rate_limit=rate_limit,
                rate_burst=rate_burst,
                key_concurrency=key_concurrency,
                rate_key=rate_key,
            )
        )

    def get_queue(self, queue: str, namespace: str = DEFAULT_NAMESPACE) -> QueueSettings:
        return self._sync(lambda: self.aget_queue(queue, namespace))

    def queue_flow(self, queue: str, namespace: str = DEFAULT_NAMESPACE, *, top: int = 10) -> QueueFlow:
        """Sync twin of `aqueue_flow`."""
        return self._sync(lambda: self.aqueue_flow(queue, namespace, top=top))

    def list_workers(self) -> list[WorkerInfo]:
        return self._sync(self.alist_workers)

    def leaders(self) -> list[Leadership]:
        return self._sync(self.aleaders)

    def put_namespace(self, namespace: Namespace) -> Namespace:
        return self._sync(lambda: self.aput_namespace(namespace))

    def create_namespace(self, namespace: Namespace) -> Namespace:
        return self._sync(lambda: self.acreate_namespace(namespace))

    def update_namespace(self, name: str, change: Callable[[Namespace], Namespace]) -> Namespace:
        return self._sync(lambda: self.aupdate_namespace(name, change))

    def get_namespace(self, name: str) -> Namespace:
        return self._sync(lambda: self.aget_namespace(name))

    def list_namespaces(self) -> list[Namespace]:
        return self._sync(self.alist_namespaces)

    def delete_namespace(self, name: str) -> bool:
        return self._sync(lambda: self.adelete_namespace(name))

    def run_next(self, namespace: str, user_id: str) -> RunResult:
        return self._sync(lambda: self.arun_next(namespace, user_id))

    def run_worker(self, **options: Unpack[WorkerOptions]) -> None:
        """Run a worker in the foreground until SIGTERM/SIGINT (graceful shutdown). Like `conveyor worker`, it shows
        its start line, failures, retries and dead letters on stderr — unless the program configured logging
        itself, which is then left as it is (conveyor.logs.ensure_visible)."""
        ensure_visible()
        runtime = self.runtime
        if runtime.home is not None and not runtime.has_portal:
            raise RuntimeError("run_worker() blocks; from async code use `await app.arun_worker()`")
        if runtime.has_portal:  # the app was used synchronously before: run on its portal loop
            worker = Worker(self, **options)
            with _signals_to(worker) if worker.install_signal_handlers else contextlib.nullcontext():
                self._sync(worker.run, wake_for_signals=True)
            return
        asyncio.run(self.arun_worker(**options))

    def __enter__(self) -> Conveyor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Conveyor:
        await self.aopen()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def unserved_warning(task: str) -> str:
    """The warning every enqueue surface gives for a task no live worker has registered (Conveyor.aunserved_tasks)."""
    return (
        f"no live worker has registered task {task!r}: the job waits until a worker that registers it "
        f"(@app.task({task!r})) is running"
    )


@contextlib.contextmanager
def _signals_to(worker: Worker) -> Iterator[None]:
    """SIGTERM/SIGINT to a worker that runs on another thread's loop (the portal): the worker can only install
    handlers on the main thread's loop, so the main thread, blocked in `run_worker`, forwards them. The first
    signal stops it gracefully, a second one stops its running jobs at once (as with the worker's own handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = 0

    def forward(signum: int, frame: object) -> None:
        nonlocal received
        received += 1
        worker.stop(force=received > 1)

    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError, OSError):
            previous[sig] = signal.signal(sig, forward)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def _noop() -> None:
    return None


_JOB_OPTIONS = frozenset(JobOptions.__annotations__) | frozenset(EnqueueOptions.__annotations__)
