"""A large batch (PostgreSQL's COPY path) stores tricky text exactly: backslashes, tabs, newlines, `\\N`,
quotes and non-ASCII in payloads, task names, user ids and group keys come back unchanged, on every store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from conveyor import Conveyor

TRICKY = ["back\\slash", "tab\there", "new\nline", "cr\rreturn", "\\N", "\\\\N", 'quote"s', "ünïcødé ✓", "", "\\t"]


async def test_a_large_batch_round_trips_every_field(store_url: str) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    specs = []
    for i in range(200):
        text = TRICKY[i % len(TRICKY)]
        specs.append(
            {
                "task": f"task {text or 'x'}",
                "payload": {"text": text, "i": i, "nested": [text, {"k" + text: None}], "f": 1.5},
                "priority": (i % 7) - 3,
                "max_attempts": 1 + i % 5,
                "user_id": f"u{text}" if i % 3 == 0 else None,
                "group_key": f"g{text}" if i % 3 == 1 else None,
                **({"run_at": later} if i % 4 == 0 else {}),
            }
        )
    async with Conveyor(store_url) as app:
        jobs = await app.aenqueue_many(specs)
        assert len(jobs) == 200
        for spec, job in zip(specs, jobs, strict=True):
            stored = await app.aget_job(job.id)
            assert stored is not None
            assert stored.task == spec["task"]
            assert stored.payload == spec["payload"]
            assert stored.priority == spec["priority"]
            assert stored.max_attempts == spec["max_attempts"]
            assert stored.user_id == spec["user_id"]
            assert stored.group_key == spec["group_key"]
            assert stored.run_at == job.run_at
            assert stored.created == job.created
            if "run_at" in spec:
                assert stored.run_at == later


@pytest.mark.stores("postgresql")
async def test_a_large_batch_on_the_callers_connection_round_trips(store_url: str) -> None:
    import psycopg

    dsn = store_url.split("?", 1)[0]
    specs = [{"task": "t", "payload": {"text": TRICKY[i % len(TRICKY)], "i": i}} for i in range(100)]
    async with Conveyor(store_url) as app:
        with psycopg.connect(dsn) as conn:
            conn.execute("SELECT 1")  # in the caller's transaction
            jobs = await asyncio.to_thread(app.enqueue_many, specs, connection=conn)
            conn.commit()
        for spec, job in zip(specs, jobs, strict=True):
            stored = await app.aget_job(job.id)
            assert stored is not None and stored.payload == spec["payload"]
