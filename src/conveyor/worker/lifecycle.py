"""The `Worker`: its settings, and its life — start (open the store, register, start the parts and the elected
maintenance roles), run (the producer's fetch loop), and shut down gracefully (SIGTERM/SIGINT or `stop()`: stop
claiming, let running jobs finish within `grace_period`, then stop the rest and hand them back with
`Finish(release=True)` — no attempt counted —, flush, unregister). The work itself is done by its parts: the
producer claims, the executor runs, the completer reports, the heartbeat keeps leases alive; this module wires
them together and owns what crosses them (the local cancel fast path from `app.events`, the watchdog tick)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from conveyor.events import Event
from conveyor.execution import REASON_SHUTDOWN
from conveyor.maintenance import elected_services
from conveyor.model import DEFAULT_QUEUE
from conveyor.runtime import SupportsRuntime
from conveyor.tasks import TaskSpec, validate_isolation
from conveyor.version import __version__
from conveyor.webhooks import acquire_dispatcher, register_webhook_task, release_dispatcher
from conveyor.worker.completer import Completer
from conveyor.worker.executor import Executor
from conveyor.worker.heartbeat import Heartbeat
from conveyor.worker.outage import MAX_BACKOFF, Outage
from conveyor.worker.producer import BUFFER_WAIT, Producer
from conveyor.worker.signals import Signal, install_signal_handlers, remove_signal_handlers, signal_name
from conveyor.worker.state import QueuePlan, RunState

if TYPE_CHECKING:
    from conveyor.maintenance import Elected

log = logging.getLogger("conveyor.worker")


class Worker:
    """Run jobs from `queues` with `concurrency` slots until stopped.

    >>> worker = Worker(app, queues=["default", "mail"], concurrency=10)
    >>> await worker.run()          # returns after SIGTERM/SIGINT or worker.stop()
    """

    def __init__(
        self,
        app: SupportsRuntime,
        *,
        queues: Sequence[str] | Mapping[str, int] = (DEFAULT_QUEUE,),
        namespaces: Sequence[str] | None = None,
        concurrency: int = 10,
        poll_interval: float = 1.0,
        lease: timedelta | float | None = None,
        grace_period: float = 30.0,
        worker_id: str | None = None,
        maintenance: bool = True,
        install_signal_handlers: bool = True,
        batch_size: int | None = None,
        heartbeat_interval: float | None = None,
        rescue_interval: float | None = None,
        prefetch: int | None = None,
        leader_lease: float | None = None,
        isolation: str = "thread",
        strict: bool = False,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be ≥ 1, got {concurrency}")
        validate_isolation(isolation)
        self.isolation = isolation
        """Where sync handlers run unless their task says otherwise: "thread" (the thread pool) or "process"
        (child processes the worker kills on timeout or cancel; see conveyor/isolation.py)."""
        if isinstance(queues, str):
            queues = [queues]
        runtime = self.runtime = app.runtime
        """The core the worker stands on (store, task registry, event bus, home loop): `Worker(app)` takes an app
        or anything else with a runtime."""
        self.store = runtime.store
        self.queues: list[str] = list(queues) or [DEFAULT_QUEUE]
        self.queue_plan: QueuePlan | None = QueuePlan.build(queues, strict)
        """Weighted (`queues={"critical": 6, "low": 1}`) or strict (`strict=True`) order of the queues' claims;
        None: one claim across every queue (docs/weighted-queues.md)."""
        self.namespaces: list[str] | None = list(namespaces) if namespaces is not None else None
        self.tasks: tuple[str, ...] = tuple(runtime.tasks)
        """The task names this worker claims: those registered on the app when it starts running."""
        self.specs: dict[str, TaskSpec] = runtime.tasks
        self.concurrency = concurrency
        self.batch_size = max(1, batch_size or concurrency)
        self.prefetch = 3 * self.batch_size if prefetch is None else max(0, prefetch)
        self.buffer_wait = BUFFER_WAIT
        self.poll_interval = poll_interval
        if lease is None:
            lease = runtime.lease
        self.lease: timedelta = lease if isinstance(lease, timedelta) else timedelta(seconds=lease)
        self.grace_period = grace_period
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.maintenance = maintenance
        self.install_signal_handlers = install_signal_handlers
        lease_s = self.lease.total_seconds()
        self.heartbeat_interval = heartbeat_interval or max(lease_s / 6, 0.05)
        self.registration_ttl = max(3 * self.heartbeat_interval, 3.0)
        self.rescue_interval = rescue_interval or max(lease_s / 2, 0.1)
        self.leader_lease = leader_lease or default_leader_lease(lease_s)
        """Seconds an elected maintenance leader holds its role unrenewed: a killed leader is replaced within it
        (a third of the job lease by default, see `default_leader_lease`)."""
        self.started = Signal()
        """Set once the worker is registered and claiming: `await worker.started.wait()` from any loop, or
        `worker.started.wait_sync(timeout)` from a thread."""
        self.stopped = Signal()
        self.leading: set[str] = set()
        """The maintenance roles this worker holds now ("maintenance", "scheduler")."""
        register_webhook_task(runtime)  # every worker delivers its namespaces' webhooks (conveyor.webhooks)

        self.state = RunState()
        self.outage = Outage()
        self._listener = self._on_event  # one bound method: added, removed and ignored as the same listener
        self.completer = Completer(
            self, self.state, self.outage, listener=self._listener, wake_at=self._wake_at, wake=self._wake_soon
        )
        self.executor = Executor(self, self.state, self.completer, on_slot_free=self._slot_freed)
        self.producer = Producer(self, self.state, self.outage, self.executor, self.completer)
        self.heartbeat = Heartbeat(self, self.outage, self.producer, self.executor, self.completer, version=__version__)
        self._services: list[Elected] = []
        self._ran = False

    def _queues_text(self) -> str:
        plan = self.queue_plan
        if plan is None:
            return ",".join(self.queues)
        if plan.strict:
            return " > ".join(plan.queues) + " (strict)"
        return ",".join(f"{q}:{w}" for q, w in zip(plan.queues, plan.weights, strict=True)) + " (weighted)"

    # The completer and the executor reach the producer through these (it is built after them).
    def _wake_at(self, when: datetime) -> bool:
        return self.producer.wake_at(when)

    def _wake_soon(self) -> None:
        self.producer.wake_soon()

    def _slot_freed(self) -> None:
        self.producer.slot_freed()

    @property
    def processed(self) -> int:
        """Jobs whose outcome was reported (applied or stale), for tests and the bench."""
        return self.completer.reported + self.executor.committed

    @property
    def handed_off(self) -> int:
        """Jobs an enqueue in this process claimed for this worker while it waited (store hand-off)."""
        return self.producer.handed_off

    @property
    def running_jobs(self) -> list[str]:
        return list(self.executor.running)

    # ---- control -------------------------------------------------------------------------------------------

    def stop(self, *, force: bool = False) -> None:
        """Ask the worker to shut down gracefully (force: without waiting for the grace period). Thread-safe."""
        state = self.state
        state.stop_requested = True
        state.force = state.force or force
        loop = state.loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._begin_shutdown()
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._begin_shutdown)

    async def wait_started(self, timeout: float | None = None) -> bool:
        """Wait until the worker is claiming (or has stopped); True if it started."""
        waits = [asyncio.ensure_future(self.started.wait()), asyncio.ensure_future(self.stopped.wait())]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        return self.started.is_set()

    def _begin_shutdown(self) -> None:
        state = self.state
        if state.stopping:
            if state.force:
                self.executor.stop_all(REASON_SHUTDOWN)
            return
        state.stopping = True
        self.producer.withdraw_idle()
        self.producer.release_buffer()
        self.executor.notify_shutdown(REASON_SHUTDOWN)
        log.info(
            "worker %s stopping: no new claims; waiting up to %gs for %d running job(s)",
            self.worker_id,
            0 if state.force else self.grace_period,
            len(self.executor.running),
        )
        state.wake_up()
        if state.stop_event is not None:
            state.stop_event.set()

    def _on_signal(self, signum: int) -> None:
        if self.state.stopping:
            log.warning("second %s: stopping running jobs now", signal_name(signum))
            self.state.force = True
            self.executor.stop_all(REASON_SHUTDOWN)
            return
        log.info("received %s", signal_name(signum))
        self._begin_shutdown()

    # ---- main ----------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until stopped. Never raises for store outages: it logs and keeps retrying.

        The worker runs on the app's home loop (the loop its store's connections belong to); awaited from another
        loop, it is carried there and this call waits for it."""
        here = asyncio.get_running_loop()
        home = self.runtime.home
        if home is not None and home is not here and home.is_running():
            await self.runtime.on_home(self.run)
            return
        if self._ran:
            raise RuntimeError("a Worker runs once; create a new Worker to run again")
        self._ran = True
        self.tasks = tuple(self.runtime.tasks)
        state = self.state
        loop = here
        state.start(loop)
        self.completer.start()
        self.executor.start()
        self.producer.buffer = {}
        signals = install_signal_handlers(loop, self._on_signal) if self.install_signal_handlers else []
        self.runtime.events.add_listener(self._listener)
        background: list[asyncio.Task[None]] = []
        dispatching = False
        try:
            await self.executor.start_pool()
            if not await self._startup():
                return
            background.append(loop.create_task(self.heartbeat.loop(), name="conveyor-heartbeat"))
            background.append(loop.create_task(self.producer.waiter_loop(), name="conveyor-waiter"))
            background.append(loop.create_task(self._watchdog_loop(), name="conveyor-watchdog"))
            if self.maintenance:
                self._start_services()
            acquire_dispatcher(self.runtime)
            dispatching = True
            if state.stop_requested:
                self._begin_shutdown()
            self.started.set()
            log.info(
                "worker %s started: queues=%s tasks=%s concurrency=%d store=%s",
                self.worker_id,
                self._queues_text(),
                ",".join(self.tasks) or "(none)",
                self.concurrency,
                self.store.scheme,
            )
            await self.producer.fetch_loop()
            await self.executor.drain(REASON_SHUTDOWN)
            await self.completer.final_flush()
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._stop_services()
            await self.executor.close_pool()
            if dispatching:
                await release_dispatcher(self.runtime)
            state.closed = True
            self.producer.cancel_timer()
            self.runtime.events.remove_listener(self._listener)
            remove_signal_handlers(loop, signals)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.store.unregister_worker(self.worker_id), 5.0)
            self.executor.close()
            self.started.clear()
            self.stopped.set()
            log.info("worker %s stopped (%d jobs processed)", self.worker_id, self.processed)

    async def _startup(self) -> bool:
        """Open the store and register, retrying while the store is unavailable. False if stopped meanwhile."""
        delay = 0.1
        while True:
            if self.state.stop_requested:
                return False
            try:
                await self.runtime.ensure_open()
                await self.heartbeat.register()
                self.outage.recovered()
                return True
            except Exception as exc:
                self.outage.unavailable(exc, "starting")
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)

    async def _watchdog_loop(self) -> None:
        """Stop jobs past their task timeout, and hand back prefetched jobs that waited too long. One loop scanning
        the running jobs replaces a timer per job."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.executor.watch_tick)
            now = loop.time()
            self.producer.check_buffer(now)
            self.executor.check_deadlines(now)

    # ---- local cancel --------------------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        """Event-bus listener (runs in the publisher's thread): the local cancel fast path."""
        state = self.state
        if state.closed or event.type != "cancel":
            return
        job_id = event.job_id
        loop = state.loop
        if job_id is not None and (job_id in self.executor.running or job_id in self.producer.buffer) and loop:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._cancel_local, job_id, event.lease_token)

    def _cancel_local(self, job_id: str, token: str | None = None) -> None:
        """A cancel requested in this process, for a job buffered or running here."""
        if not self.producer.cancel(job_id, token):
            self.executor.cancel(job_id, token)

    # ---- services ------------------------------------------------------------------------------------------

    def _start_services(self) -> None:
        """Campaign for the maintenance roles: this worker runs the rescuer, pruner and scheduler only while the
        store has elected it (maintenance/leader.py), so a fleet of workers runs one of each."""
        self._services = elected_services(
            self.runtime,
            candidate=self.worker_id,
            ttl=self.leader_lease,
            rescue_interval=self.rescue_interval,
            on_change=self.leadership_changed,
        )
        for role in self._services:
            role.start()

    def leadership_changed(self, role: str, leading: bool) -> None:
        """Called by the elected roles as this worker wins or loses one (`leading`)."""
        if leading:
            self.leading.add(role)
        else:
            self.leading.discard(role)

    async def _stop_services(self) -> None:
        for role in self._services:
            with contextlib.suppress(Exception):
                await role.stop()
        self._services = []


def default_leader_lease(lease: float) -> float:
    """The election lease for a job lease of `lease` seconds: a third of it, at least 2 s, never more than the job
    lease. Why the floor: a leader stops acting at 90 % of its lease from its last renewal, so the other 10 % is
    how long a stalled process (a loaded machine, a GC pause) may overrun unnoticed while another is elected; 0.2 s
    is the least that margin should be.

    Why a third: a killed worker's job is rescued when its lease runs out, at most one lease after the kill — if a
    leader is there to do it. When the leader dies too, its successor is elected once the election lease lapses
    and rescues at once; so the election lease is what a kill of the leader adds to recovery: 1.33 leases at worst
    (issue 9's target is 1.5). The holder renews every third of it: three small writes per election lease."""
    return min(lease, max(lease / 3, 2.0))
