"""The Python API: `Conveyor` registers tasks, enqueues, inspects and runs workers, sync and async.

Async drivers (psycopg pools, redis-py asyncio clients) belong to the event loop that opened them, so the app
binds its store to one *home loop*: the first running loop that uses it, or a private portal thread when the
first call is a sync one. Calls from any other loop or thread are carried to the home loop and back, which keeps
every store single-loop and lets sync and async callers share one app.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload

from conveyor.backoff import DEFAULT_BACKOFF, Backoff
from conveyor.errors import (
    REQUIRE_TRANSACTION_HINT,
    CallerConnectionError,
    NamespaceNotFound,
    TaskAlreadyRegistered,
    ValidationError,
)
from conveyor.events import EventBus
from conveyor.ids import new_job_ids
from conveyor.model import (
    DEFAULT_LEASE,
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_NAMESPACE,
    DEFAULT_QUEUE,
    DEFAULT_TIMEOUT,
    JSON,
    Attempt,
    Job,
    JobFilter,
    JobStatus,
    Leadership,
    Namespace,
    NewJob,
    Page,
    QueueInfo,
    QueueSettings,
    Stats,
    WorkerInfo,
    check_public_task_name,
    is_reserved_task,
    utcnow,
    validate_name,
    validate_namespace,
    validate_task_name,
)
from conveyor.store import DEFAULT_URL, Store, open_store
from conveyor.store.caller import check_sqlalchemy as _check_sqlalchemy

if TYPE_CHECKING:
    from conveyor.isolation import ProcessPool
    from conveyor.maintenance.scheduler import CronSchedule
    from conveyor.worker import Worker

T = TypeVar("T")
Handler = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A registered task: its handler and the policy the worker applies to its jobs."""

    name: str
    fn: Handler
    is_async: bool
    max_attempts: int | None = None  # None: the namespace's default (3)
    timeout: float = DEFAULT_TIMEOUT
    backoff: Backoff = DEFAULT_BACKOFF
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    transactional: bool = False
    takes_context: bool = True
    isolation: str | None = None
    """"thread" or "process" for a sync handler; None: the worker's default (`Worker(isolation=...)`, "thread")."""


@dataclass(frozen=True, slots=True)
class RunResult:
    """Answer of `run_next` (GS2 Run): the job executed, its attempt record, and `is_last`: no pending job of the
    user remains, due or scheduled. `job` and `attempt` are None when nothing was due (`is_last` is then False
    if a job scheduled for later still waits)."""

    job: Job | None
    attempt: Attempt | None
    is_last: bool


@dataclass(slots=True)
class EnqueueSpec:
    """One entry of `enqueue_many`. Dicts with the same keys are accepted too."""

    task: str
    payload: JSON = None
    namespace: str = DEFAULT_NAMESPACE
    queue: str | None = None
    priority: int | None = None
    delay: float | timedelta | None = None
    run_at: datetime | None = None
    max_attempts: int | None = None
    user_id: str | None = None
    group_key: str | None = None
    unique_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


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
        self.url = url or (DEFAULT_URL if store is None else f"{store.scheme}://")
        self.store: Store = store if store is not None else open_store(self.url, **store_options)
        self.max_payload_bytes = max_payload_bytes
        self.lease = lease
        self.tasks: dict[str, TaskSpec] = {}
        self.events = EventBus()
        self._home: asyncio.AbstractEventLoop | None = None
        self._portal: _Portal | None = None
        self._open_lock = threading.Lock()
        self._opened: asyncio.Future[None] | None = None
        self.schedules: dict[str, CronSchedule] = {}  # cron entries (app.cron), run by workers' schedulers
        self._run_pool: ProcessPool | None = None  # children for process-isolated tasks run by run_next
        self._served_cache: tuple[float, frozenset[str] | None] | None = None  # aunserved_tasks

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
    ) -> Handler | Callable[[Handler], Handler]:
        """Register a handler: `@app.task`, `@app.task("name")` or `@app.task("name", max_attempts=5, ...)`.

        A handler takes `(payload)` or `(payload, ctx)`; plain functions run in a thread pool, `async def` ones
        on the worker's event loop. Its return value (JSON) becomes the attempt's result.

        `isolation="process"` runs a plain function in a child process that the worker kills when the task times
        out or is cancelled (a hard timeout; a thread cannot be stopped). The function must then be defined at the
        top level of a module, as multiprocessing requires. None follows the worker's default."""
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
    ) -> TaskSpec:
        """Register `fn` as the handler of task `name` (what `@app.task` does). Names starting with `conveyor:`
        are reserved for Conveyor's own tasks."""
        check_public_task_name(name)
        return self._register(
            name,
            fn,
            max_attempts=max_attempts,
            timeout=timeout,
            backoff=backoff,
            queue=queue,
            priority=priority,
            transactional=transactional,
            isolation=isolation,
        )

    def _register_system(self, name: str, fn: Handler, *, max_attempts: int | None = None, timeout: float) -> TaskSpec:
        """Conveyor's internals register their `conveyor:` tasks here (the public `register` refuses them)."""
        if not is_reserved_task(name):
            raise ValueError(f"system tasks are named conveyor:..., got {name!r}")
        return self._register(name, fn, max_attempts=max_attempts, timeout=timeout)

    def _register(
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
    ) -> TaskSpec:
        from conveyor.isolation import PROCESS, validate_isolation

        validate_task_name(name)
        validate_name(queue, "queue")
        validate_isolation(isolation)
        is_async = inspect.iscoroutinefunction(fn)
        if isolation == PROCESS and (is_async or transactional):
            raise ValidationError(
                f"task {name!r}: isolation='process' is for plain (sync) functions; "
                + (
                    "an async handler runs on the worker's loop, where a timeout or cancel stops it"
                    if is_async
                    else "a transactional handler writes through the worker's own connection"
                ),
                field="isolation",
            )
        if name in self.tasks:
            raise TaskAlreadyRegistered(name)
        if timeout <= 0:
            raise ValidationError(f"timeout must be > 0 seconds, got {timeout!r}", field="timeout")
        if transactional and not self.store.supports_transactions:
            raise ValidationError(
                f"task {name!r} is transactional, which needs a store with transactions (PostgreSQL); "
                f"this app uses {self.store.scheme}",
                field="transactional",
            )
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        spec = TaskSpec(
            name=name,
            fn=fn,
            is_async=is_async,
            max_attempts=max_attempts,
            timeout=timeout,
            backoff=backoff or DEFAULT_BACKOFF,
            queue=queue,
            priority=priority,
            transactional=transactional,
            takes_context=len(params) >= 2,
            isolation=isolation,
        )
        self.tasks[name] = spec
        return spec

    # ---- cron ----------------------------------------------------------------------------------------------

    @overload
    def cron(self, spec: str, task: str, payload: JSON = None, *, name: str | None = None, **options: Any) -> None: ...

    @overload
    def cron(
        self, spec: str, task: None = None, payload: JSON = None, *, name: str | None = None, **options: Any
    ) -> Callable[[Handler], Handler]: ...

    def cron(
        self, spec: str, task: str | None = None, payload: JSON = None, *, name: str | None = None, **options: Any
    ) -> Callable[[Handler], Handler] | None:
        """Enqueue `task` on a schedule: `app.cron("*/5 * * * *", "cleanup", {"days": 7})`, or as a decorator on a
        sync or async handler, `@app.cron("@hourly")`, which also registers it as a task. Specs: 5-field crontab,
        @hourly/@daily/@weekly/@monthly/@yearly, or `@every 10m` (UTC). Workers (maintenance on) enqueue each
        occurrence exactly once across processes. `options` are enqueue options (queue, priority, namespace…)."""
        from conveyor.maintenance.scheduler import make_schedule

        def add(task_name: str) -> None:
            entry = make_schedule(spec, task_name, payload, name, **options)
            if entry.name in self.schedules:
                raise ValidationError(
                    f"a cron schedule named {entry.name!r} exists already; give this one a name= of its own",
                    field="name",
                )
            self.schedules[entry.name] = entry

        if task is not None:
            add(task)
            return None

        def decorator(fn: Handler) -> Handler:
            make_schedule(spec, fn.__name__, payload, name, **options)  # validate before registering the task
            if fn.__name__ not in self.tasks:
                self.register(fn.__name__, fn)
            add(fn.__name__)
            return fn

        return decorator

    # ---- loop plumbing -------------------------------------------------------------------------------------

    async def _ensure_open(self) -> None:
        loop = asyncio.get_running_loop()
        with self._open_lock:
            if self._home is None:
                self._home = loop
            opened = self._opened
            if opened is None:
                opened = self._opened = loop.create_future()
                first = True
            else:
                first = False
        if first:
            try:
                await self.store.open()
            except BaseException as exc:
                with self._open_lock:
                    self._opened = None
                opened.set_exception(exc)
                opened.exception()  # mark retrieved
                raise
            opened.set_result(None)
        else:
            await asyncio.shield(opened) if opened.get_loop() is loop else None

    async def _on_home(self, factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run a store coroutine on the home loop, from whichever loop we are on."""
        loop = asyncio.get_running_loop()
        if self._home is None or self._home is loop:
            await self._ensure_open()
            return await factory()
        home = self._home
        if home.is_closed() or not home.is_running():
            raise RuntimeError(
                "this Conveyor app's event loop has stopped; create the app inside the loop that uses it"
            )

        async def on_home() -> T:
            await self._ensure_open()
            return await factory()

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(on_home(), home))

    def _sync(self, factory: Callable[[], Coroutine[Any, Any, T]], *, wake_for_signals: bool = False) -> T:
        """Run from sync code: on the home loop (via its thread) or on a private portal loop. `wake_for_signals`:
        the calling thread wakes up regularly while it waits, so that its signal handlers run (run_worker)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and running is self._home:
            raise RuntimeError(
                "a sync Conveyor method was called from the app's own event loop, which would deadlock; "
                "use the async twin (e.g. await app.aenqueue(...))"
            )
        if self._home is None:
            with self._open_lock:
                if self._home is None:
                    self._portal = _Portal()
                    self._home = self._portal.loop

        async def call() -> T:
            return await self._on_home(factory)

        future: Future[T] = asyncio.run_coroutine_threadsafe(call(), self._home)
        if not wake_for_signals:
            return future.result()
        # A signal that the kernel hands to another thread only trips a flag; the main thread runs its Python
        # handler when it next executes bytecode, which a wait without a timeout would never do.
        while True:
            try:
                return future.result(timeout=0.2)
            except FutureTimeout:
                continue

    async def aopen(self) -> None:
        await self._on_home(self._noop)

    async def _noop(self) -> None:
        return None

    async def _isolation_pool(self) -> ProcessPool:
        """Child processes for the process-isolated tasks that `run_next` executes here (started on first use;
        workers have pools of their own, sized to their slots)."""
        from conveyor.isolation import THREAD, ProcessPool, isolated_handlers

        if self._run_pool is None:
            pool = ProcessPool(isolated_handlers(self.tasks, THREAD), size=2, worker_id="run")
            await pool.start()
            self._run_pool = pool
        return self._run_pool

    async def aclose(self) -> None:
        pool, self._run_pool = self._run_pool, None
        if pool is not None:
            await self._on_home(pool.close)
        if self._opened is not None:
            await self._on_home(self.store.close)
            self._opened = None

    def close(self) -> None:
        pool, self._run_pool = self._run_pool, None
        if pool is not None:
            self._sync(pool.close)
        if self._opened is not None:
            self._sync(self.store.close)
            self._opened = None
        if self._portal is not None:
            self._portal.stop()
            self._portal = None
            self._home = None

    def open(self) -> None:
        self._sync(self._noop)

    # ---- enqueue -------------------------------------------------------------------------------------------

    def build_job(self, task: str, payload: JSON = None, **options: Any) -> NewJob:
        """Validate one job's options (task defaults applied) without storing anything. Task names starting with
        `conveyor:` are refused: they are reserved for Conveyor's own jobs."""
        check_public_task_name(task)
        return self._build_job(task, payload, **options)

    def _build_job(self, task: str, payload: JSON = None, **options: Any) -> NewJob:
        spec = self.tasks.get(task)
        if options.get("queue") is None:
            options["queue"] = spec.queue if spec is not None else DEFAULT_QUEUE
        if options.get("priority") is None:
            options["priority"] = spec.priority if spec is not None else 0
        if spec is not None and spec.max_attempts is not None and options.get("max_attempts") is None:
            options["max_attempts"] = spec.max_attempts
        if "max_payload_bytes" not in options:
            options["max_payload_bytes"] = self.max_payload_bytes
        return NewJob.build(task, payload, **options)

    def _build_many(self, specs: Sequence[EnqueueSpec | Mapping[str, Any]]) -> list[NewJob]:
        return self._build_batch(specs)[0]

    def _build_batch(
        self, specs: Sequence[EnqueueSpec | Mapping[str, Any]], *, system: bool = False
    ) -> tuple[list[NewJob], list[bool]]:
        """Validate a batch (one clock reading for all). Also says, per job, whether max_attempts was chosen by
        the caller or the task (else the namespace's default applies). `system`: Conveyor's own `conveyor:` jobs
        (only `_aenqueue_system` passes it)."""
        build = self._build_job if system else self.build_job
        jobs: list[NewJob] = []
        explicit: list[bool] = []
        now = utcnow()
        ids = new_job_ids(len(specs))
        for index, spec in enumerate(specs):
            values = _spec_dict(spec)
            task = values.pop("task", None)
            payload = values.pop("payload", None)
            values.setdefault("now", now)
            values.setdefault("job_id", ids[index])
            try:
                job = build(task, payload, **values)  # type: ignore[arg-type]
            except ValidationError as exc:
                if len(specs) == 1:
                    raise
                raise type(exc)(f"job #{index}: {exc.message}", field=exc.field) from None
            except TypeError as exc:
                raise ValidationError(f"job #{index}: {exc}") from None
            jobs.append(job)
            spec_task = self.tasks.get(job.task)
            explicit.append(
                values.get("max_attempts") is not None or (spec_task is not None and spec_task.max_attempts is not None)
            )
        return jobs, explicit

    async def _with_namespace_defaults(self, jobs: list[NewJob], explicit: list[bool]) -> list[NewJob]:
        """Apply each namespace's default max_attempts where the caller and the task gave none."""
        if all(job.namespace == DEFAULT_NAMESPACE for job in jobs) or all(explicit):
            return jobs
        defaults: dict[str, int | None] = {}
        out: list[NewJob] = []
        for job, given in zip(jobs, explicit, strict=True):
            if not given and job.namespace != DEFAULT_NAMESPACE:
                if job.namespace not in defaults:
                    ns = await self.store.get_namespace(job.namespace)
                    defaults[job.namespace] = None if ns is None else ns.max_attempts
                wanted = defaults[job.namespace]
                if wanted is not None and wanted != job.max_attempts:
                    job = _replace_attempts(job, wanted)
            out.append(job)
        return out

    async def aenqueue(
        self,
        task: str,
        payload: JSON = None,
        *,
        connection: Any = None,
        require_transaction: bool = True,
        **options: Any,
    ) -> Job:
        """Enqueue one job. Options: namespace, queue, priority, delay, run_at, max_attempts, user_id,
        group_key, unique_key. With `connection=`, the job is inserted through the caller's own connection and
        transaction (psycopg AsyncConnection, sqlite3.Connection, SQLAlchemy Connection/Session): it exists if
        and only if the caller commits. That connection must be inside a transaction — an autocommit or idle one
        is refused (CallerConnectionError) unless `require_transaction=False` says that committing with whatever
        comes next on it (at once, in autocommit mode) is what the caller wants."""
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
        if not specs:
            return []
        built, explicit = self._build_batch(specs)
        return await self._enqueue_built(built, explicit, connection, require_transaction)

    async def _aenqueue_system(self, task: str, payload: JSON = None, **options: Any) -> Job:
        """Enqueue one of Conveyor's own `conveyor:` jobs (e.g. a webhook delivery). The only way such a job is
        created: public enqueues, the HTTP API and the CLI refuse reserved names."""
        if not is_reserved_task(task) or task not in self.tasks:
            raise ValueError(f"{task!r} is not a registered conveyor: system task")
        built, explicit = self._build_batch([{"task": task, "payload": payload, **options}], system=True)
        return (await self._enqueue_built(built, explicit, None, True))[0]

    async def _enqueue_built(
        self, built: list[NewJob], explicit: list[bool], connection: Any, require_transaction: bool
    ) -> list[Job]:
        if connection is not None:
            if _is_async_connection(connection):
                checked = _check_sqlalchemy(connection, require_transaction)
                return await self.store.aenqueue_on_connection(
                    connection, built, require_transaction=require_transaction and not checked
                )
            raw, checked = _unwrap_connection(connection, require_transaction)
            return self.store.enqueue_on_connection(raw, built, require_transaction=require_transaction and not checked)

        async def go() -> list[Job]:
            jobs = await self._with_namespace_defaults(built, explicit)
            stored = await self.store.enqueue(jobs)
            if self.events.is_observed():  # skip building push events nobody reads (batch enqueue hot path)
                for job in stored:
                    if not job.duplicate:
                        self.events.publish_push(job)
            return stored

        return await self._on_home(go)

    def enqueue(
        self,
        task: str,
        payload: JSON = None,
        *,
        connection: Any = None,
        require_transaction: bool = True,
        **options: Any,
    ) -> Job:
        if connection is not None and not _is_async_connection(connection):
            built = self._build_many([{"task": task, "payload": payload, **options}])
            raw, checked = _unwrap_connection(connection, require_transaction)
            return self.store.enqueue_on_connection(
                raw, built, require_transaction=require_transaction and not checked
            )[0]
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
        if connection is not None and not _is_async_connection(connection):
            raw, checked = _unwrap_connection(connection, require_transaction)
            return self.store.enqueue_on_connection(
                raw, self._build_many(specs), require_transaction=require_transaction and not checked
            )
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
        self, filter: JobFilter | None = None, *, limit: int = 20, offset: int = 0, **criteria: Any
    ) -> Page[Job]:
        flt = filter or JobFilter(**{k: (JobStatus(v) if k == "status" and v else v) for k, v in criteria.items()})
        return await self._on_home(lambda: self.store.list_jobs(flt, limit, offset))

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
        validate_name(queue, "queue")
        validate_name(namespace, "namespace")
        await self._on_home(lambda: self.store.put_queue_settings(QueueSettings(namespace, queue, paused=paused)))

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
        from conveyor.webhooks import check_webhook_url

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

    async def adelete_user_data(self, user_id: str) -> int:
        """Delete every job of `user_id` (any namespace, any status) with its attempts, atomically. Returns how many
        jobs were deleted. A job running meanwhile cannot finish onto it (its report is stale and ignored)."""
        return await self._on_home(lambda: self.store.delete_user_data(user_id))

    async def arun_next(self, namespace: str, user_id: str, *, worker_id: str | None = None) -> RunResult:
        """GS2 Run: execute the user's next due job here, record the attempt, and tell whether any pending job of
        the user remains. With auto_run off a retryable failure stays at the head, due at once (unless the
        namespace sets `run_retry_backoff`).

        Raises Conflict (409) while another job of that user is processing."""
        from conveyor.execution import run_user_job

        return await self._on_home(lambda: run_user_job(self, namespace, user_id, worker_id=worker_id))

    async def arun_worker(self, **options: Any) -> None:
        """Run a worker in this process until cancelled or signalled (see conveyor.worker.Worker)."""
        from conveyor.worker import Worker

        worker = Worker(self, **options)
        await self._on_home(worker.run)

    # ---- sync twins ----------------------------------------------------------------------------------------

    def unserved_tasks(self, tasks: Iterable[str]) -> list[str]:
        return self._sync(lambda: self.aunserved_tasks(tasks))

    def get_job(self, job_id: str) -> Job | None:
        return self._sync(lambda: self.aget_job(job_id))

    def list_jobs(
        self, filter: JobFilter | None = None, *, limit: int = 20, offset: int = 0, **criteria: Any
    ) -> Page[Job]:
        return self._sync(lambda: self.alist_jobs(filter, limit=limit, offset=offset, **criteria))

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

    def run_worker(self, **options: Any) -> None:
        """Run a worker in the foreground until SIGTERM/SIGINT (graceful shutdown)."""
        from conveyor.worker import Worker

        if self._home is not None and self._portal is None:
            raise RuntimeError("run_worker() blocks; from async code use `await app.arun_worker()`")
        if self._portal is not None:  # the app was used synchronously before: run on its portal loop
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


def _spec_dict(spec: EnqueueSpec | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(spec, EnqueueSpec):
        values = {
            "task": spec.task,
            "payload": spec.payload,
            "namespace": spec.namespace,
            "queue": spec.queue,
            "priority": spec.priority,
            "delay": spec.delay,
            "run_at": spec.run_at,
            "max_attempts": spec.max_attempts,
            "user_id": spec.user_id,
            "group_key": spec.group_key,
            "unique_key": spec.unique_key,
            **spec.extra,
        }
        return {k: v for k, v in values.items() if v is not None or k in ("task", "payload")}
    return dict(spec)


def _replace_attempts(job: NewJob, max_attempts: int) -> NewJob:
    from dataclasses import replace

    return replace(job, max_attempts=max_attempts)


def _is_async_connection(connection: Any) -> bool:
    module = type(connection).__module__
    name = type(connection).__name__
    return name.startswith("Async") and (module.startswith("psycopg") or module.startswith("sqlalchemy"))


def _unwrap_connection(connection: Any, require_transaction: bool) -> tuple[Any, bool]:
    """Accept SQLAlchemy Session/Connection by reaching the DBAPI connection inside the current transaction.
    Returns (driver connection, whether the caller-connection rules were already checked at SQLAlchemy's level)."""
    module = type(connection).__module__
    if not module.startswith("sqlalchemy"):
        return connection, False
    _check_sqlalchemy(connection, require_transaction)
    if hasattr(connection, "connection") and callable(getattr(connection, "connection", None)):
        connection = connection.connection()  # Session.connection() -> Connection (in the Session's transaction)
    dbapi = connection.connection  # Connection.connection -> PoolProxiedConnection
    raw = getattr(dbapi, "driver_connection", dbapi)
    if require_transaction and _driver_autocommit(raw):
        raise CallerConnectionError(
            "the SQLAlchemy connection passed as connection= runs its driver in autocommit mode, so the jobs would "
            "not commit with your work; " + REQUIRE_TRANSACTION_HINT
        )
    return raw, True


def _driver_autocommit(raw: Any) -> bool:
    if isinstance(getattr(raw, "autocommit", None), bool) and type(raw).__module__.startswith("psycopg"):
        return bool(raw.autocommit)
    if type(raw).__name__ == "Connection" and type(raw).__module__ == "sqlite3":
        autocommit = getattr(raw, "autocommit", None)
        return autocommit is True or (autocommit in (None, -1) and raw.isolation_level is None)
    return False


class _Portal:
    """A private event loop in a daemon thread for sync callers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(ready.set)
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="conveyor-portal", daemon=True)
        self.thread.start()
        ready.wait()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()
