"""A worker under rate limits per key, on every store: it runs each key's jobs at that key's rate, the keys side by
side (a key out of tokens holds back only its own jobs), and it sleeps until the next token instead of claiming in
a loop (issue 13 item 1: "the worker sleeps until the next token, it does not spin")."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from conveyor import Conveyor
from conveyor.worker import Worker


async def test_a_worker_runs_each_key_at_its_rate_and_sleeps_between_tokens(store_url: str) -> None:
    app = Conveyor(store_url)
    await app.aopen()
    ran: list[tuple[str, float]] = []
    all_ran = asyncio.Event()

    @app.task("flow:tick")
    async def tick(payload: dict[str, Any]) -> None:
        ran.append((payload["k"], time.monotonic()))
        if len(ran) == 8:
            all_ran.set()

    try:
        await app.aupdate_queue("default", rate_limit="4/s", rate_burst=1, rate_key="payload.k")
        claims = 0
        claim: Callable[..., Awaitable[Any]] = app.store.claim

        async def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal claims
            claims += 1
            return await claim(*args, **kwargs)

        app.store.claim = counted  # type: ignore[method-assign]
        worker = Worker(app, concurrency=4, install_signal_handlers=False, poll_interval=5.0, maintenance=False)
        running = asyncio.create_task(worker.run())
        await asyncio.sleep(0.2)  # idle first: the jobs come to a waiting worker
        began = time.monotonic()
        await app.aenqueue_many(
            [{"task": "flow:tick", "payload": {"k": k, "n": n}} for n in range(4) for k in ("a", "b")]
        )
        await asyncio.wait_for(all_ran.wait(), 10)
        worker.stop()
        await asyncio.wait_for(running, 30)
    finally:
        await app.aclose()
    assert len(ran) == 8
    for key in ("a", "b"):
        times = [t for k, t in ran if k == key]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 0.2, (key, gaps)  # 4/s with a burst of 1: one every 250 ms
    first_of = {k: min(t for kk, t in ran if kk == k) for k in ("a", "b")}
    assert abs(first_of["a"] - first_of["b"]) < 0.2  # side by side, not one key after the other
    total = max(t for _, t in ran) - began
    assert 0.6 < total < 2.5, total  # three intervals after the first claims, plus the machine's delays
    assert claims <= 40, claims  # a claim per token and a few more, not a loop
