"""Store conformance: isolated spaces (store/base.py "Isolated spaces"). `isolated_url` names a separate, empty
space beside a base URL's; `drop()` deletes everything in it and refuses the default space unless told otherwise,
so a wrong URL cannot wipe production jobs. Benchmarks and this suite's own fixtures stand on these two calls."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from conveyor.conformance.harness import StoreHarness
from conveyor.conformance.helpers import enqueue_one
from conveyor.errors import ValidationError
from conveyor.model import DEFAULT_NAMESPACE, JobFilter, Namespace
from conveyor.store import DEFAULT_SPACE, Store, isolated_url


def _label() -> str:
    return f"cv_{uuid.uuid4().hex[:16]}"


async def _is_empty(store: Store) -> bool:
    return (
        (await store.list_jobs(JobFilter())).total == 0
        and [ns.name for ns in await store.list_namespaces()] == [DEFAULT_NAMESPACE]
        and await store.kv_get("k") is None
    )


async def test_isolated_spaces_are_separate_and_drop_deletes_everything(
    store_harness: StoreHarness, tmp_path: Path
) -> None:
    urls = [store_harness.isolated_url(tmp_path, _label()) for _ in range(2)]
    assert urls[0] != urls[1]
    a, b = store_harness.open(urls[0]), store_harness.open(urls[1])
    await a.open()
    await b.open()
    try:
        assert await _is_empty(a) and await _is_empty(b)
        job = await enqueue_one(a)
        await a.create_namespace(Namespace("mine"))
        await a.kv_set("k", "v")
        assert await b.get_job(job.id) is None and await _is_empty(b)

        await a.drop()
        again = store_harness.open(urls[0])
        await again.open()  # the space is made afresh, empty
        try:
            assert await again.get_job(job.id) is None and await _is_empty(again)
        finally:
            await again.drop()
        await again.drop()  # dropping what is gone is harmless
    finally:
        await b.drop()


async def test_drop_without_opening_deletes_the_space(store_harness: StoreHarness, tmp_path: Path) -> None:
    url = store_harness.isolated_url(tmp_path, _label())
    first = store_harness.open(url)
    await first.open()
    job = await enqueue_one(first)
    await first.close()
    await store_harness.open(url).drop()
    second = store_harness.open(url)
    await second.open()
    try:
        assert await second.get_job(job.id) is None
    finally:
        await second.drop()


async def test_drop_refuses_the_default_space(store_harness: StoreHarness, tmp_path: Path) -> None:
    """Never opened: the test must not touch a real default space whatever drop() does."""
    store = store_harness.open(store_harness.isolated_url(tmp_path, DEFAULT_SPACE))
    with pytest.raises(ValidationError, match="default"):
        await store.drop()


def test_labels_must_be_plain_identifiers(tmp_path: Path) -> None:
    for bad in ("", "a-b", "1abc", "x" * 64, "a b", "a/b", "a:b"):
        with pytest.raises(ValidationError, match="label"):
            isolated_url("memory://", bad, tmp_path)
