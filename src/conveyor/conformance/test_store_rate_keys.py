"""Store conformance: rate limits partitioned by a key (issue 13 item 1) — `QueueSettings.rate_key` gives every value
of a job column or a top-level payload field its own GCRA bucket, applied inside the atomic claim; a key out of
tokens never hides the jobs of other keys; per-key state expires once its bucket is full again (store/base.py
"Rate limits"; model.rate_key_value)."""

from __future__ import annotations

import asyncio

import pytest

from conveyor.conformance.helpers import Taker, claim, complete, new, offer
from conveyor.errors import ValidationError
from conveyor.model import (
    Job,
    NewJob,
    QueueChange,
    QueueSettings,
    RateLimit,
    check_rate_key,
    rate_key_value,
)
from conveyor.store import Store


def keyed(key: str | None, n: int = 0, **options: object) -> NewJob:
    return new("t", n, concurrency_key=key, **options)


def by_key(jobs: list[Job]) -> dict[str, int]:
    out: dict[str, int] = {}
    for j in jobs:
        k = j.concurrency_key or ""
        out[k] = out.get(k, 0) + 1
    return out


async def per_key(store: Store, rate: RateLimit, rate_key: str = "concurrency_key", queue: str = "default") -> None:
    await store.update_queue_settings("default", queue, QueueChange(rate_limit=rate, rate_key=rate_key))


def test_rate_keys_are_checked() -> None:
    for good in ("user_id", "group_key", "concurrency_key", "payload.account", "payload._x9"):
        assert check_rate_key(good) == good
    assert check_rate_key(None) is None
    for bad in ("", "payload.", "payload.a.b", "payload.a-b", "user", "payload." + "x" * 65, 3):
        with pytest.raises(ValidationError) as err:
            check_rate_key(bad)
        assert err.value.field == "rate_key"


def test_the_key_of_a_job() -> None:
    assert rate_key_value("user_id", "u1", "g", "c", {}) == "u1"
    assert rate_key_value("group_key", "u1", "g", "c", {}) == "g"
    assert rate_key_value("concurrency_key", "u1", "g", None, {}) == ""
    assert rate_key_value("payload.a", None, None, None, {"a": "x"}) == "x"
    assert rate_key_value("payload.a", None, None, None, {"a": 7}) == "7"
    for other in ({"a": 1.5}, {"a": True}, {"a": None}, {"a": [1]}, {}, [1], "a", None, {"a": 2**60}):
        assert rate_key_value("payload.a", None, None, None, other) == ""


async def test_a_bad_rate_key_is_refused_and_nothing_is_written(store: Store) -> None:
    with pytest.raises(ValidationError):
        await store.update_queue_settings("default", "q", QueueChange(rate_limit=RateLimit(5), rate_key="payload."))
    assert await store.get_queue_settings("default", "q") == QueueSettings("default", "q")


async def test_the_rate_key_is_kept_across_pause_and_listed(store: Store) -> None:
    rate = RateLimit(10, 60.0, burst=2)
    await per_key(store, rate, "payload.account", queue="q")
    await store.update_queue_settings("default", "q", QueueChange(paused=True))
    got = await store.update_queue_settings("default", "q", QueueChange(paused=False, concurrency=4))
    assert got == QueueSettings("default", "q", concurrency=4, rate_limit=rate, rate_key="payload.account")
    assert await store.get_queue_settings("default", "q") == got
    (info,) = [q for q in await store.list_queues("default") if q.name == "q"]
    assert (info.rate_limit, info.rate_key, info.concurrency) == (rate, "payload.account", 4)
    cleared = await store.update_queue_settings("default", "q", QueueChange(rate_key=None))
    assert cleared.rate_key is None and cleared.rate_limit == rate


async def test_each_key_has_its_own_bucket(store: Store) -> None:
    await per_key(store, RateLimit(2, 60.0))
    jobs = await store.enqueue([keyed(k, i) for i in range(5) for k in ("a", "b", None)])
    got = await claim(store, limit=50)
    assert by_key(got) == {"a": 2, "b": 2, "": 2}  # keyless jobs share one bucket
    assert await claim(store, limit=50, worker_id="w2") == []
    waiting = [await store.get_job(j.id) for j in jobs if j.id not in {g.id for g in got}]
    assert len(waiting) == 9
    assert all(w is not None and w.status.value == "pending" and w.attempts == 0 for w in waiting)
    wait = await store.next_due(["default"])
    assert wait is not None and 25 < wait <= 30.5  # the next token of the keys: one interval (30 s) away


async def test_a_key_out_of_tokens_does_not_hide_the_jobs_behind_it(store: Store) -> None:
    await per_key(store, RateLimit(1, 60.0))
    await store.enqueue([keyed("busy", i) for i in range(60)])
    await store.enqueue([keyed("other")])
    (first,) = await claim(store, limit=1)
    assert first.concurrency_key == "busy"
    (second,) = await claim(store, limit=1)
    assert second.concurrency_key == "other"
    assert await claim(store, limit=5) == []
    wait = await store.next_due(["default"])
    assert wait is not None and wait > 50  # no spinning on the blocked key's backlog


async def test_a_payload_field_partitions_the_rate(store: Store) -> None:
    await per_key(store, RateLimit(1, 60.0), "payload.account")
    payloads: list[object] = [{"account": "x"}, {"account": "x"}, {"account": 7}, {"account": "7"}, {}, {"a": 1}]
    payloads += [{"account": 1.5}, {"account": True}, None]
    await store.enqueue([new("t", p) for p in payloads])
    got = await claim(store, limit=20)
    accounts = sorted(str(j.payload.get("account")) if isinstance(j.payload, dict) else "-" for j in got)
    assert len(got) == 3, accounts  # one of "x", one of 7 / "7", one keyless
    assert "x" in accounts and ("7" in accounts)


async def test_the_user_id_partitions_the_rate(store: Store) -> None:
    await per_key(store, RateLimit(1, 60.0), "user_id")
    await store.enqueue([new("t", i, user_id=u) for i in range(2) for u in ("u1", "u2")])
    got = await claim(store, limit=10)
    assert sorted(j.user_id or "" for j in got) == ["u1", "u2"]
    for j in got:
        assert await complete(store, j)
    assert await claim(store, limit=10) == []  # the lanes are free, the buckets are not


async def test_a_keyed_rate_holds_across_concurrent_claims(store: Store) -> None:
    await per_key(store, RateLimit(2, 60.0))
    await store.enqueue([keyed(k, i) for i in range(10) for k in ("a", "b", "c")])
    batches = await asyncio.gather(*(claim(store, limit=3, worker_id=f"w{i}") for i in range(8)))
    assert by_key([j for b in batches for j in b]) == {"a": 2, "b": 2, "c": 2}


async def test_a_keyed_rate_refills_with_time(store: Store) -> None:
    await per_key(store, RateLimit(20, 1.0, burst=1))
    await store.enqueue([keyed(k, i) for i in range(5) for k in ("a", "b")])
    assert by_key(await claim(store, limit=10)) == {"a": 1, "b": 1}
    await asyncio.sleep(0.16)  # three tokens' time, but each bucket holds one
    assert by_key(await claim(store, limit=10)) == {"a": 1, "b": 1}


async def test_key_buckets_and_the_queue_cap_both_bind(store: Store) -> None:
    await store.update_queue_settings(
        "default", "default", QueueChange(rate_limit=RateLimit(2, 60.0), rate_key="concurrency_key", concurrency=3)
    )
    await store.enqueue([keyed(k, i) for i in range(3) for k in ("a", "b")])
    got = await claim(store, limit=10)
    assert len(got) == 3
    for j in got:
        assert await complete(store, j)
    assert len(await claim(store, limit=10)) == 1  # 4 tokens in all, 3 spent


async def test_a_hand_off_honours_the_keyed_rate(store: Store) -> None:
    await per_key(store, RateLimit(1, 60.0))
    taker = Taker()
    offer(store, taker, limit=5)
    await store.enqueue([keyed("k", i) for i in range(3)])
    assert len(taker.jobs) + len(await claim(store)) == 1


async def test_removing_the_rate_key_goes_back_to_one_bucket(store: Store) -> None:
    await per_key(store, RateLimit(2, 60.0))
    await store.enqueue([keyed(k, i) for i in range(3) for k in ("a", "b", "c")])
    assert len(await claim(store, limit=20)) == 6
    await store.update_queue_settings("default", "default", QueueChange(rate_key=None))
    assert len(await claim(store, limit=20)) == 2  # the queue's own bucket: untouched by the keyed claims


async def test_idle_keys_are_forgotten(store: Store) -> None:
    await per_key(store, RateLimit(2, 1.0, burst=1))  # a key's bucket is full again 0.5 s after its claim
    await store.enqueue([keyed(f"k{i}") for i in range(20)])
    assert len(await claim(store, limit=50)) == 20
    state = await store.rate_state("default", "default")
    assert state.key_count == 20 and len(state.keys) == 10  # the ten most limited (latest arrival time) listed
    assert all(state.now_us < tat <= state.now_us + 500_000 for _, tat in state.keys)
    await asyncio.sleep(0.55)
    await store.enqueue([keyed("last")])
    assert len(await claim(store, limit=50)) == 1
    state = await store.rate_state("default", "default")
    assert state.key_count == 1 and [k for k, _ in state.keys] == ["last"]  # only "last" still holds state
