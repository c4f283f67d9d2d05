"""Shared fixtures. The conformance suite runs every test over every store selected by CONVEYOR_TEST_STORES
(default: all four). A backend missing from the machine is a failure, never a skip: CI must prove every store.

Each backend module in tests/backends/<name>.py provides:

    BASE: str
        The store's base URL on this machine (the shared PostgreSQL and Redis servers).
    def fresh_url(tmp_path: Path) -> str
        A URL naming a new, empty, isolated store (a fresh SQLite file, PostgreSQL schema, Redis key prefix), made by
        the store itself (`conveyor.store.isolated_url`). Other processes can open the same URL (multi-process and
        kill -9 tests).
    async def cleanup(url: str) -> None
        Remove what fresh_url's store left behind (`Store.drop`). Called after the test.
    snapshot / restore / make_schema_newer: test-only hooks (a crash that loses writes, a newer schema).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor.store import Store, open_store

ALL_STORES = ("memory", "sqlite", "postgresql", "redis")
BACKEND_MODULES = {"memory": "memory", "sqlite": "sqlite", "postgresql": "postgres", "redis": "redis"}


def selected_stores() -> list[str]:
    raw = os.environ.get("CONVEYOR_TEST_STORES", ",".join(ALL_STORES))
    names = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL_STORES]
    if unknown:
        raise pytest.UsageError(f"CONVEYOR_TEST_STORES names unknown stores {unknown}; choose from {ALL_STORES}")
    return names


def backend(name: str):  # type: ignore[no-untyped-def]
    return importlib.import_module(f"tests.backends.{BACKEND_MODULES[name]}")


def base_url(name: str) -> str:
    """The base URL of store `name` on this machine (isolated spaces are made beside it)."""
    url: str = backend(name).BASE
    return url


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" in metafunc.fixturenames:
        kinds = selected_stores()
        only = metafunc.definition.get_closest_marker("stores")
        if only is not None:
            kinds = [k for k in kinds if k in only.args]
        metafunc.parametrize("store_kind", kinds)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "stores(*names): run this test only on the named stores")


@pytest.fixture
async def store_url(store_kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """A URL naming a fresh, isolated store of the current kind; cleaned up after the test."""
    module = backend(store_kind)
    url: str = module.fresh_url(tmp_path)
    try:
        yield url
    finally:
        await module.cleanup(url)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """An opened, migrated, empty store."""
    s = open_store(store_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()
