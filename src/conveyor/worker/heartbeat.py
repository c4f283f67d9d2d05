"""Heartbeats and the worker's registration. Every `heartbeat_interval` (lease/6) one store call extends every
lease this worker holds — running, buffered and finished-but-unreported jobs — and stops the jobs whose lease was
lost or whose cancel was requested elsewhere; then the worker's `WorkerInfo` is written again (it expires after
`registration_ttl`, 3 intervals, so a killed worker drops out of `conveyor workers` by itself)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from datetime import timedelta

from conveyor.execution import REASON_CANCEL, REASON_LOST
from conveyor.model import Lease, WorkerInfo, utcnow
from conveyor.worker.completer import Completer
from conveyor.worker.executor import Executor
from conveyor.worker.outage import Outage
from conveyor.worker.producer import Producer
from conveyor.worker.state import WorkerSettings

log = logging.getLogger("conveyor.worker")


class Heartbeat:
    """Keeps the leases this worker holds, and its registration, alive."""

    def __init__(
        self,
        settings: WorkerSettings,
        outage: Outage,
        producer: Producer,
        executor: Executor,
        completer: Completer,
        *,
        version: str,
    ) -> None:
        """`version`: Conveyor's, as the registration shows it."""
        self.settings = settings
        self.version = version
        self.outage = outage
        self.producer = producer
        self.executor = executor
        self.completer = completer
        self.started_at = utcnow()

    def info(self) -> WorkerInfo:
        """This worker as `conveyor workers` lists it."""
        now = utcnow()
        settings = self.settings
        return WorkerInfo(
            id=settings.worker_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues=tuple(settings.queues),
            concurrency=settings.concurrency,
            started_at=self.started_at,
            heartbeat_at=now,
            expires_at=now + timedelta(seconds=settings.registration_ttl),
            running=(*self.executor.running, *self.producer.buffer),
            version=self.version,
            tasks=settings.tasks,
        )

    async def register(self) -> None:
        await self.settings.store.register_worker(self.info())

    async def loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            await self.beat()

    async def beat(self) -> None:
        settings = self.settings
        producer, executor = self.producer, self.executor
        leases: list[Lease] = [ctx.job.lease for ctx in executor.running.values()]
        leases.extend(producer.leases())
        leases.extend(self.completer.leases())
        try:
            if leases:
                states = await settings.store.heartbeat(leases, settings.lease)
                for state in states:
                    queued = producer.buffer.get(state.lease.job_id)
                    if queued is not None and queued.lease_token == state.lease.token:
                        if not state.held:
                            producer.lease_lost(queued)
                        elif state.cancel_requested:
                            producer.cancel_buffered(queued)
                        continue
                    ctx = executor.running.get(state.lease.job_id)
                    if ctx is None or ctx.job.lease_token != state.lease.token:
                        continue
                    if not state.held:
                        log.warning("job %s (%s): lease lost; stopping it", ctx.job.id, ctx.job.task)
                        executor.stop_job(ctx, REASON_LOST)
                    elif state.cancel_requested:
                        log.info("job %s (%s): cancel requested; stopping it", ctx.job.id, ctx.job.task)
                        executor.stop_job(ctx, REASON_CANCEL)
            await self.register()
            if self.outage.down:
                self.outage.recovered()
        except Exception as exc:
            self.outage.unavailable(exc, "heartbeating")
