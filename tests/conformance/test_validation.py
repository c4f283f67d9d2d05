"""Bad input is refused with an error that names the field, and nothing is stored — on every store."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from conveyor import Conveyor
from conveyor.errors import PayloadTooLarge, ValidationError


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"task": "t\x00x"}, "task"),
        ({"task": ""}, "task"),
        ({"task": "x" * 1025}, "task"),
        ({"task": "t", "payload": {"s": "a\x00b"}}, "payload.s"),
        ({"task": "t", "payload": {"k\x00": 1}}, "payload.k\\u0000"),
        # a lone UTF-16 surrogate (JSON "\ud800" without its pair) is not Unicode: no store can encode it
        ({"task": "t\ud800"}, "task"),
        ({"task": "t", "payload": {"a": ["x", "\ud800"]}}, "payload.a[1]"),
        ({"task": "t", "payload": {"\udc00": 1}}, "payload.\\udc00"),
        ({"task": "t", "payload": "\udfff"}, "payload"),
        ({"task": "t", "user_id": "u\ud800"}, "user_id"),
        ({"task": "t", "group_key": "\ud800"}, "group_key"),
        ({"task": "t", "unique_key": "\udbff"}, "unique_key"),
        ({"task": "t", "delay": math.inf}, "delay"),
        ({"task": "t", "delay": math.nan}, "delay"),
        ({"task": "t", "delay": True}, "delay"),
        ({"task": "t", "run_at": datetime(1, 1, 1, tzinfo=UTC)}, "run_at"),
        ({"task": "t", "run_at": 123}, "run_at"),
        # past the end of the calendar once converted to UTC (was an OverflowError, a 500 over HTTP)
        ({"task": "t", "run_at": datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-14)))}, "run_at"),
        ({"task": "t", "run_at": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))}, "run_at"),
        ({"task": "t", "payload": {"when": datetime(2026, 1, 1)}}, "payload"),
        ({"task": "t", "payload": math.nan}, "payload"),
        ({"task": "t", "user_id": "u\x00"}, "user_id"),
        ({"task": "t", "max_attempts": 0}, "max_attempts"),
        ({"task": "t", "max_attempts": 101}, "max_attempts"),
        ({"task": "t", "priority": 2**15}, "priority"),
        ({"task": "t", "namespace": "bad name"}, "namespace"),
        ({"task": "t", "queue": "q/1"}, "queue"),
        ({"task": "t", "delay": -1}, "delay"),
        ({"task": "t", "run_at": datetime(2030, 1, 1)}, "run_at"),
    ],
)
async def test_bad_input_is_refused_and_nothing_is_stored(store_url: str, options: dict[str, Any], field: str) -> None:
    options = dict(options)  # parametrised values are shared between stores
    async with Conveyor(store_url) as app:
        task = options.pop("task")
        with pytest.raises(ValidationError) as info:
            await app.aenqueue(task, options.pop("payload", None), **options)
        assert info.value.field == field
        assert info.value.message  # says what was wrong
        assert (await app.astats()).total == 0


async def test_a_batch_with_one_bad_entry_stores_none_of_it(store_url: str) -> None:
    async with Conveyor(store_url) as app:
        with pytest.raises(ValidationError, match="job #2"):
            await app.aenqueue_many([{"task": "a"}, {"task": "b"}, {"task": "c", "max_attempts": 0}])
        assert (await app.astats()).total == 0


async def test_payload_over_the_limit_is_refused_with_its_size(store_url: str) -> None:
    async with Conveyor(store_url, max_payload_bytes=1024) as app:
        with pytest.raises(PayloadTooLarge, match="limit is 1024 bytes"):
            await app.aenqueue("t", {"blob": "x" * 2000})
        assert (await app.astats()).total == 0
        job = await app.aenqueue("t", {"blob": "x" * 900})
        assert (await app.aget_job(job.id)) is not None


async def test_a_backslash_u0000_text_is_not_mistaken_for_nul(store_url: str) -> None:
    async with Conveyor(store_url) as app:
        job = await app.aenqueue("t", {"s": "back\\u0000slash"})
        stored = await app.aget_job(job.id)
        assert stored is not None and stored.payload == {"s": "back\\u0000slash"}


def test_raw_json_payloads_are_checked_like_any_payload() -> None:
    from conveyor.errors import PayloadTooLarge, ValidationError
    from conveyor.model import NewJob, RawJSON

    job = NewJob.build("t", RawJSON(' {"b": 1,  "a": [1.0]}\n'))
    assert job.payload == {"b": 1, "a": [1.0]} and job.payload_json == '{"b": 1,  "a": [1.0]}'
    for bad in ("{", '{"a": NaN}', "[Infinity]", '{"a": "\\u0000"}', ""):
        with pytest.raises(ValidationError):
            NewJob.build("t", RawJSON(bad))
    with pytest.raises(PayloadTooLarge):
        NewJob.build("t", RawJSON('"' + "x" * 100 + '"'), max_payload_bytes=50)
    with pytest.raises(ValidationError):
        RawJSON(b"{}")  # type: ignore[arg-type]
