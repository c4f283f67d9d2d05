"""A leader that loses its store steps down before its lease can lapse (issue 9, item 7).

A private redis-server is frozen with SIGSTOP — to the leader it looks like a partition: its renewal hangs rather
than fails. The leader must stop its services on its own clock, before the lease it last renewed can lapse in the
store (and another process be elected), and take office again once the store is back.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.conformance.worker_support import wait_until
from tests.stores.redis_server import PrivateRedis

from conveyor import Conveyor
from conveyor.maintenance import Elected, Service
from conveyor.maintenance.leader import SAFETY

TTL = 1.0


class Probe(Service):
    name = "probe"

    def __init__(self, ticks: list[float]) -> None:
        super().__init__(0.02)
        self.ticks = ticks

    async def tick(self) -> None:
        self.ticks.append(time.monotonic())


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            os.kill(server.proc.pid, signal.SIGCONT)
        server.kill()


async def test_a_partitioned_leader_stops_before_its_lease_lapses(redis_server: PrivateRedis) -> None:
    url = f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:8]}&socket_timeout=30"
    app, other = Conveyor(url), Conveyor(url)
    await app.aopen()
    await other.aopen()
    ticks: list[float] = []
    a = Elected(app, "maintenance", "a", lambda: [Probe(ticks)], ttl=TTL)
    b = Elected(other, "maintenance", "b", lambda: [], ttl=TTL)
    a.start()
    try:
        await wait_until(lambda: a.leading, timeout=10)
        b.start()
        await asyncio.sleep(0.5)
        assert a.leading and not b.leading
        assert redis_server.proc is not None
        renewed_before = time.monotonic()  # every renewal a made was sent before this instant
        os.kill(redis_server.proc.pid, signal.SIGSTOP)
        await wait_until(lambda: not a.leading, timeout=5 * TTL, interval=0.005)
        stepped_down = time.monotonic()
        assert stepped_down - renewed_before <= SAFETY * TTL + 0.15, stepped_down - renewed_before
        last_tick = ticks[-1]
        await asyncio.sleep(0.2)
        assert ticks[-1] == last_tick, "the services went on after stepping down"
        os.kill(redis_server.proc.pid, signal.SIGCONT)
        await wait_until(lambda: a.leading or b.leading, timeout=10 * TTL)
        roles = await app.aleaders()
        assert len(roles) == 1 and roles[0].holder in ("a", "b")
        assert a.terms_won + b.terms_won == 2  # one new term after the outage, for exactly one of them
    finally:
        if redis_server.proc is not None:
            os.kill(redis_server.proc.pid, signal.SIGCONT)
        await a.stop()
        await b.stop()
        await app.aclose()
        await other.aclose()


async def test_a_resigning_leader_is_replaced_within_a_third_of_the_lease(redis_server: PrivateRedis) -> None:
    url = f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:8]}"
    app = Conveyor(url)
    await app.aopen()
    a = Elected(app, "maintenance", "a", lambda: [], ttl=3.0)
    b = Elected(app, "maintenance", "b", lambda: [], ttl=3.0)
    try:
        a.start()
        await wait_until(lambda: a.leading, timeout=10)
        b.start()
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await a.stop()
        await wait_until(lambda: b.leading, timeout=10)
        assert time.monotonic() - started <= 3.0 / 3 + 0.5
    finally:
        await a.stop()
        await b.stop()
        await app.aclose()
