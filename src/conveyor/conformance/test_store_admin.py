"""Store conformance: namespaces, queue settings and listing, worker registrations, and the key-value space."""

from __future__ import annotations

from datetime import timedelta

import pytest

from conveyor.conformance.helpers import claim_one, complete, enqueue_one, eventually, same_instant
from conveyor.errors import ValidationError
from conveyor.model import (
    DEFAULT_NAMESPACE,
    JobFilter,
    JobStatus,
    Namespace,
    QueueInfo,
    QueueSettings,
    WorkerInfo,
    utcnow,
)
from conveyor.store import Store

# ---- namespaces --------------------------------------------------------------------------------------------------


async def test_default_namespace_always_exists(store: Store) -> None:
    ns = await store.get_namespace(DEFAULT_NAMESPACE)
    assert ns is not None and ns.name == DEFAULT_NAMESPACE and ns.auto_run is True
    assert [n.name for n in await store.list_namespaces()] == [DEFAULT_NAMESPACE]


async def test_unknown_namespace_is_none(store: Store) -> None:
    assert await store.get_namespace("nope") is None


async def test_put_and_get_namespace_with_every_setting(store: Store) -> None:
    ns = Namespace(
        name="game-1",
        description="per-user jobs ü",
        auto_run=False,
        max_attempts=9,
        completed_retention=60.0,
        failed_retention=120.5,
        push_notification=True,
        run_notification=True,
        webhook_url="https://example.com/hook",
        webhook_secret="s3cret",
        extra={"transactionSetting": {"enableAutoRun": False}, "list": [1, 2]},
    )
    stored = await store.put_namespace(ns)
    got = await store.get_namespace("game-1")
    assert got is not None
    for value in (stored, got):
        assert value.name == "game-1" and value.description == "per-user jobs ü"
        assert value.auto_run is False and value.max_attempts == 9
        assert (value.completed_retention, value.failed_retention) == (60.0, 120.5)
        assert value.push_notification is True and value.run_notification is True
        assert (value.webhook_url, value.webhook_secret) == ("https://example.com/hook", "s3cret")
        assert dict(value.extra) == {"transactionSetting": {"enableAutoRun": False}, "list": [1, 2]}
    assert got.revision == stored.revision
    assert same_instant(got.updated, stored.updated)


async def test_replacing_a_namespace_bumps_its_revision(store: Store) -> None:
    first = await store.put_namespace(Namespace(name="n", description="one"))
    second = await store.put_namespace(Namespace(name="n", description="two"))
    assert second.revision == first.revision + 1
    assert second.updated >= first.updated
    third = await store.put_namespace(Namespace(name="n", description="three", auto_run=False))
    assert third.revision == first.revision + 2
    got = await store.get_namespace("n")
    assert got is not None and got.description == "three" and got.auto_run is False
    assert got.revision == third.revision


async def test_default_namespace_can_be_configured(store: Store) -> None:
    await store.put_namespace(Namespace(name=DEFAULT_NAMESPACE, max_attempts=5))
    got = await store.get_namespace(DEFAULT_NAMESPACE)
    assert got is not None and got.max_attempts == 5
    assert [n.name for n in await store.list_namespaces()] == [DEFAULT_NAMESPACE]


async def test_list_namespaces_by_name(store: Store) -> None:
    for name in ("zeta", "alpha", "mid"):
        await store.put_namespace(Namespace(name=name))
    assert [n.name for n in await store.list_namespaces()] == ["alpha", "default", "mid", "zeta"]


async def test_delete_namespace_removes_its_record(store: Store) -> None:
    """(Its jobs go with it: conveyor/conformance/test_store_namespaces.py.)"""
    await store.put_namespace(Namespace(name="gone"))
    assert await store.delete_namespace("gone") is True
    assert await store.get_namespace("gone") is None
    assert await store.delete_namespace("gone") is False
    assert [n.name for n in await store.list_namespaces()] == [DEFAULT_NAMESPACE]


async def test_default_namespace_cannot_be_deleted(store: Store) -> None:
    with pytest.raises(ValidationError):
        await store.delete_namespace(DEFAULT_NAMESPACE)
    assert await store.get_namespace(DEFAULT_NAMESPACE) is not None


# ---- queues ------------------------------------------------------------------------------------------------------


def _by_key(queues: list[QueueInfo]) -> dict[tuple[str, str], QueueInfo]:
    return {(q.namespace, q.name): q for q in queues}


async def test_list_queues_counts_jobs_by_status(store: Store) -> None:
    await enqueue_one(store, queue="mail")
    await enqueue_one(store, queue="mail")
    await enqueue_one(store, queue="mail", delay=3600)
    job = await claim_one(store, queues=["mail"])
    assert await complete(store, job)
    await enqueue_one(store, queue="mail")
    await claim_one(store, queues=["mail"])
    await enqueue_one(store, queue="img", namespace="n2")
    queues = _by_key(await store.list_queues())
    assert set(queues) == {("default", "mail"), ("n2", "img")}
    mail = queues[("default", "mail")]
    assert mail.paused is False and mail.concurrency is None
    counts = {k: mail.counts.get(k, 0) for k in ("pending", "processing", "completed", "failed", "cancelled")}
    assert counts == {"pending": 2, "processing": 1, "completed": 1, "failed": 0, "cancelled": 0}
    assert mail.counts.get("scheduled", 0) == 1
    assert queues[("n2", "img")].counts.get("pending", 0) == 1


async def test_list_queues_includes_queues_with_settings_only(store: Store) -> None:
    stored = await store.put_queue_settings(QueueSettings("n1", "quiet", paused=True, concurrency=3))
    assert stored == QueueSettings("n1", "quiet", paused=True, concurrency=3)
    queues = _by_key(await store.list_queues())
    quiet = queues[("n1", "quiet")]
    assert quiet.paused is True and quiet.concurrency == 3
    assert sum(quiet.counts.get(s.value, 0) for s in JobStatus) == 0


async def test_list_queues_filters_by_namespace(store: Store) -> None:
    await enqueue_one(store, queue="a", namespace="n1")
    await enqueue_one(store, queue="b", namespace="n2")
    await store.put_queue_settings(QueueSettings("n2", "c", paused=True))
    assert {(q.namespace, q.name) for q in await store.list_queues("n2")} == {("n2", "b"), ("n2", "c")}
    assert await store.list_queues("empty") == []


async def test_queue_settings_are_replaced(store: Store) -> None:
    await store.put_queue_settings(QueueSettings("default", "q", paused=True, concurrency=2))
    await store.put_queue_settings(QueueSettings("default", "q", paused=False, concurrency=None))
    (q,) = await store.list_queues()
    assert q.paused is False and q.concurrency is None


# ---- workers -----------------------------------------------------------------------------------------------------


def _worker(worker_id: str, ttl: float = 60.0, running: tuple[str, ...] = ()) -> WorkerInfo:
    now = utcnow()
    return WorkerInfo(
        id=worker_id,
        hostname="host-1",
        pid=4242,
        queues=["default", "mail"],
        concurrency=10,
        started_at=now,
        heartbeat_at=now,
        expires_at=now + timedelta(seconds=ttl),
        running=running,
        version="0.1.0",
    )


async def test_register_and_list_workers(store: Store) -> None:
    info = _worker("w1", running=("job-a", "job-b"))
    await store.register_worker(info)
    (got,) = await store.list_workers()
    assert (got.id, got.hostname, got.pid, got.concurrency, got.version) == ("w1", "host-1", 4242, 10, "0.1.0")
    assert list(got.queues) == ["default", "mail"]
    assert list(got.running) == ["job-a", "job-b"]
    assert same_instant(got.started_at, info.started_at) and same_instant(got.expires_at, info.expires_at)


async def test_register_worker_is_an_upsert(store: Store) -> None:
    await store.register_worker(_worker("w1"))
    refreshed = _worker("w1", ttl=120, running=("job-x",))
    await store.register_worker(refreshed)
    (got,) = await store.list_workers()
    assert list(got.running) == ["job-x"]
    assert same_instant(got.expires_at, refreshed.expires_at)


async def test_unregister_worker(store: Store) -> None:
    await store.register_worker(_worker("w1"))
    await store.register_worker(_worker("w2"))
    await store.unregister_worker("w1")
    assert [w.id for w in await store.list_workers()] == ["w2"]
    await store.unregister_worker("never-registered")  # harmless


async def test_worker_registrations_expire_by_themselves(store: Store) -> None:
    await store.register_worker(_worker("stale", ttl=-1))
    await store.register_worker(_worker("short", ttl=0.3))
    await store.register_worker(_worker("live", ttl=600))
    assert "stale" not in [w.id for w in await store.list_workers()]

    async def short_gone() -> bool:
        return [w.id for w in await store.list_workers()] == ["live"]

    await eventually(short_gone, what="the short registration to expire")


async def test_a_refresh_keeps_a_registration_alive(store: Store) -> None:
    await store.register_worker(_worker("w1", ttl=-1))
    await store.register_worker(_worker("w1", ttl=600))
    assert [w.id for w in await store.list_workers()] == ["w1"]


# ---- key-value ---------------------------------------------------------------------------------------------------


async def test_kv_set_get_delete(store: Store) -> None:
    assert await store.kv_get("k") is None
    assert await store.kv_set("k", "v1") is True
    assert await store.kv_get("k") == "v1"
    assert await store.kv_set("k", "v2 ü") is True
    assert await store.kv_get("k") == "v2 ü"
    await store.kv_delete("k")
    assert await store.kv_get("k") is None
    await store.kv_delete("k")  # deleting nothing is harmless


async def test_kv_only_if_absent_is_test_and_set(store: Store) -> None:
    assert await store.kv_set("lock", "a", only_if_absent=True) is True
    assert await store.kv_set("lock", "b", only_if_absent=True) is False
    assert await store.kv_get("lock") == "a"
    await store.kv_delete("lock")
    assert await store.kv_set("lock", "c", only_if_absent=True) is True
    assert await store.kv_get("lock") == "c"


async def test_kv_ttl_expires(store: Store) -> None:
    assert await store.kv_set("short", "x", ttl=0.3) is True
    assert await store.kv_set("long", "y", ttl=600) is True
    assert await store.kv_get("short") == "x"

    async def short_gone() -> bool:
        return await store.kv_get("short") is None

    await eventually(short_gone, what="the kv value to expire")
    assert await store.kv_get("long") == "y"


async def test_kv_only_if_absent_succeeds_after_expiry(store: Store) -> None:
    assert await store.kv_set("cron:tick", "w1", ttl=0.3, only_if_absent=True) is True
    assert await store.kv_set("cron:tick", "w2", ttl=0.3, only_if_absent=True) is False

    async def taken_again() -> bool:
        return await store.kv_set("cron:tick", "w3", ttl=60, only_if_absent=True)

    await eventually(taken_again, what="the kv value to expire")
    assert await store.kv_get("cron:tick") == "w3"


async def test_kv_plain_set_clears_an_old_ttl(store: Store) -> None:
    await store.kv_set("k", "temp", ttl=0.2)
    await store.kv_set("k", "forever")
    await store.kv_set("probe", "p", ttl=0.3)

    async def probe_gone() -> bool:
        return await store.kv_get("probe") is None

    await eventually(probe_gone, what="the probe to expire")
    assert await store.kv_get("k") == "forever"


async def test_kv_keys_are_independent_of_jobs(store: Store) -> None:
    await store.kv_set("job", "x")
    assert (await store.list_jobs(JobFilter())).total == 0
