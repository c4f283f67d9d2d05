"""A leader that loses its store steps down before its lease can lapse (issue 9, item 7).

A private redis-server is frozen with SIGSTOP — to the leader it looks like a partition: its renewal hangs rather
than fails. The leader must stop its services on its own clock, before the lease it last renewed can lapse in the
store (and another process be elected), and take office again once the store is back.

Times are taken by the leaders' own account (`on_change`, called at the moment a process takes office; the log
record written the moment it stops leading), not when this test's polling of a loaded machine happens to see them.
"""

from __future__ import annotations

import asyncio
import logging
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

TTL = 2.0
"""The election lease of the partition test: the least the worker uses (`default_leader_lease`). A holder acts on 90 %
of it, so the other 10 % — 0.2 s here — is how late a stalled process may step down and still be inside its lease;
at 1 s the margin (0.1 s) was less than a loaded machine stalls a process, and the test's own slack let the leader
overrun the lease it was meant to respect."""


class StepDowns(logging.Handler):
    """When each candidate logged that it stops leading (leader.py writes it the moment it stops, before its
    services are stopped), by this process's monotonic clock."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.at: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if "stops leading" in record.msg and isinstance(record.args, tuple) and record.args:
            self.at.setdefault(str(record.args[0]), time.monotonic())


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
    step_downs = StepDowns()
    logging.getLogger("conveyor.maintenance").addHandler(step_downs)
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
        stepped_down = step_downs.at["a"]
        # At 90 % of the lease from its last renewal, and in any case before the lease can lapse in the store.
        assert stepped_down - renewed_before <= SAFETY * TTL + 0.15 < TTL, stepped_down - renewed_before
        last_tick = ticks[-1]
        await asyncio.sleep(0.2)
        assert ticks[-1] == last_tick, "the services went on after stepping down"
        os.kill(redis_server.proc.pid, signal.SIGCONT)
        await wait_until(lambda: a.leading or b.leading, timeout=10 * TTL)
        roles = await app.aleaders()
        assert len(roles) == 1 and roles[0].holder in ("a", "b")
        assert a.terms_won + b.terms_won == 2  # one new term after the outage, for exactly one of them
    finally:
        logging.getLogger("conveyor.maintenance").removeHandler(step_downs)
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
    took_office: list[float] = []

    def on_change(_: str, leading: bool) -> None:
        if leading:
            took_office.append(time.monotonic())

    a = Elected(app, "maintenance", "a", lambda: [], ttl=3.0)
    b = Elected(app, "maintenance", "b", lambda: [], ttl=3.0, on_change=on_change)
    try:
        a.start()
        await wait_until(lambda: a.leading, timeout=10)
        b.start()
        await asyncio.sleep(0.2)
        await a.stop()  # steps down and resigns: the role is free from here
        resigned = time.monotonic()
        await wait_until(lambda: b.leading, timeout=10)
        # b, refused while a held the role, asks again at most ttl/3 later (by b's own account of taking office).
        assert took_office[0] - resigned <= 3.0 / 3 + 0.5, took_office[0] - resigned
    finally:
        await a.stop()
        await b.stop()
        await app.aclose()
