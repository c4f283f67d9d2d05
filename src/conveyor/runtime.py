"""The runtime core: the one object the worker, the executor, the maintenance services and the surfaces stand on.

A `Runtime` holds what every part of Conveyor shares — the store, the task registry, the cron registrations, the
event bus, the configuration (payload limit, lease) — and the event-loop plumbing that makes one store usable from
every loop and thread. `Conveyor` is the public facade over one runtime (`app.runtime`); everything below the
facade takes a runtime, or anything that has one (`SupportsRuntime`: a `Conveyor` does, and so does a runtime
itself), so nothing below imports the facade.

**The home loop.** Async drivers (psycopg pools, redis-py asyncio clients) belong to the event loop that opened
them, so the runtime binds its store to one *home loop*: the first running loop that uses it, or a private portal
thread when the first call is a sync one. Calls from any other loop or thread are carried to the home loop and
back (`on_home`, `call_sync`), which keeps every store single-loop and lets sync and async callers share one app.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from conveyor.backoff import DEFAULT_BACKOFF, Backoff
from conveyor.cron import CronSchedule
from conveyor.errors import TaskAlreadyRegistered, ValidationError
from conveyor.events import EventBus
from conveyor.model import (
    DEFAULT_LEASE,
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_QUEUE,
    DEFAULT_TIMEOUT,
    UniqueOptions,
    UniqueRule,
    check_public_task_name,
    is_reserved_task,
    validate_name,
    validate_task_name,
)
from conveyor.relay import EventRelay
from conveyor.store import Store
from conveyor.tasks import PROCESS, Handler, TaskSpec, takes_context, validate_isolation

T = TypeVar("T")


class SupportsRuntime(Protocol):
    """Anything that stands on a runtime: a `Conveyor` app, or a `Runtime` (whose `runtime` is itself). The parts
    that users construct with an app (`Worker(app)`, the maintenance services, `JobContext`) take this, so they
    accept the facade without importing it."""

    @property
    def runtime(self) -> Runtime: ...


class Portal:
    """A private event loop in a daemon thread, the home loop of a runtime first used from sync code."""

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


@dataclass(slots=True)
class Binding:
    """A runtime's store and loop as they were before `Runtime.rebind` (restored by `Runtime.restore`)."""

    store: Store
    url: str
    home: asyncio.AbstractEventLoop | None
    portal: Portal | None
    opened: asyncio.Future[None] | None


class Runtime:
    """The store, the registries, the event bus, the configuration and the home loop of one app (module doc)."""

    def __init__(
        self,
        store: Store,
        *,
        url: str,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        lease: timedelta = DEFAULT_LEASE,
    ) -> None:
        self.store = store
        self.url = url
        self.max_payload_bytes = max_payload_bytes
        self.lease = lease
        self.tasks: dict[str, TaskSpec] = {}
        self.schedules: dict[str, CronSchedule] = {}  # cron entries (app.cron), run by workers' schedulers
        self.events = EventBus()
        self.relay = EventRelay(self)
        """Events across processes (conveyor.relay): this runtime's events go out through the store; `relay.listen()`
        puts other processes' events on `events` too."""
        self.app: Any = None
        """The public facade this runtime serves (a `Conveyor`), handed to handlers as `ctx.app`; typed loosely
        because the core sits below the facade and does not import it."""
        self._home: asyncio.AbstractEventLoop | None = None
        self._portal: Portal | None = None
        self._open_lock = threading.Lock()
        self._opened: asyncio.Future[None] | None = None

    @property
    def runtime(self) -> Runtime:
        return self

    # ---- task registration ---------------------------------------------------------------------------------

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
        system: bool = False,
    ) -> TaskSpec:
        """Register `fn` as the handler of task `name`. Names starting with `conveyor:` are Conveyor's own tasks:
        only `system=True` registers them (and only them), so no user task can pose as one."""
        if system:
            if not is_reserved_task(name):
                raise ValueError(f"system tasks are named conveyor:..., got {name!r}")
        else:
            check_public_task_name(name)
        validate_task_name(name)
        validate_name(queue, "queue")
        validate_isolation(isolation)
        if unique is not None and unique is not False:
            UniqueRule.parse({} if unique is True else unique)  # a bad rule fails at registration, not enqueue
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
            takes_context=takes_context(fn),
            isolation=isolation,
            unique=unique,
        )
        self.tasks[name] = spec
        return spec

    def add_schedule(self, entry: CronSchedule) -> None:
        if entry.name in self.schedules:
            raise ValidationError(
                f"a cron schedule named {entry.name!r} exists already; give this one a name= of its own",
                field="name",
            )
        self.schedules[entry.name] = entry

    # ---- the home loop -------------------------------------------------------------------------------------

    @property
    def home(self) -> asyncio.AbstractEventLoop | None:
        """The loop the store belongs to (None until the first call)."""
        return self._home

    @property
    def has_portal(self) -> bool:
        """Whether the home loop is the runtime's own portal thread (the app was first used from sync code)."""
        return self._portal is not None

    @property
    def is_open(self) -> bool:
        """Whether the store was opened (or is being opened) on the home loop."""
        return self._opened is not None

    async def ensure_open(self) -> None:
        """Open the store once, on the running loop, which becomes the home loop if there is none yet."""
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

    async def on_home(self, factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run a store coroutine on the home loop, from whichever loop we are on."""
        loop = asyncio.get_running_loop()
        if self._home is None or self._home is loop:
            await self.ensure_open()
            return await factory()
        home = self._home
        if home.is_closed() or not home.is_running():
            raise RuntimeError(
                "this Conveyor app's event loop has stopped; create the app inside the loop that uses it"
            )

        async def on_home() -> T:
            await self.ensure_open()
            return await factory()

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(on_home(), home))

    def use_portal(self) -> None:
        """Make a private portal thread the home loop now (before any call), as a sync-first app would get."""
        with self._open_lock:
            if self._home is None:
                self._portal = Portal()
                self._home = self._portal.loop

    def call_sync(self, factory: Callable[[], Coroutine[Any, Any, T]], *, wake_for_signals: bool = False) -> T:
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
            self.use_portal()
        assert self._home is not None

        async def call() -> T:
            return await self.on_home(factory)

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

    async def aclose(self) -> None:
        """Close the store (on the home loop) if it was opened; the runtime can be opened again."""
        if self._opened is not None:
            await self.on_home(self.relay.aclose)
            await self.on_home(self.store.close)
            self._opened = None

    def close(self) -> None:
        """Close the store and stop the portal thread, if any."""
        if self._opened is not None:
            self.call_sync(self.relay.aclose)
            self.call_sync(self.store.close)
            self._opened = None
        if self._portal is not None:
            self._portal.stop()
            self._portal = None
            self._home = None

    # ---- swapping the store (conveyor.testing) ---------------------------------------------------------------

    def replace_store(self, store: Store) -> None:
        """Put `store` in place of the current one, which the caller has closed; it opens on the next call."""
        self.store = store
        self._opened = None

    def rebind(self, store: Store, url: str) -> Binding:
        """Point the runtime at `store` on a fresh portal loop; returns what `restore` puts back."""
        saved = Binding(self.store, self.url, self._home, self._portal, self._opened)
        self.store, self.url = store, url
        self._portal = Portal()
        self._home = self._portal.loop
        self._opened = None
        return saved

    def restore(self, saved: Binding) -> None:
        """Close the store `rebind` installed (on its portal), stop that portal, and put `saved` back."""
        portal = self._portal
        if self._opened is not None and portal is not None:
            asyncio.run_coroutine_threadsafe(self.store.close(), portal.loop).result()
        if portal is not None:
            portal.stop()
        self.store, self.url = saved.store, saved.url
        self._home, self._portal, self._opened = saved.home, saved.portal, saved.opened
