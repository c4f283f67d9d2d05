"""The pytest plugin behind `pytest --pyargs conveyor.conformance --conveyor-store=…` (see the package doc).

It chooses the stores under test, parametrizes every test that asks for `store_kind` (or a fixture built on it)
over them, and gives each test a fresh, isolated space of its store:

    store_harness   the `StoreHarness` of the store under test
    store_kind      its name (the test id suffix)
    store_url       a URL naming a new, empty space of it, deleted after the test (`Store.drop`)
    store           a store opened (and so migrated) on `store_url`, closed after the test

The stores come from, first found: `--conveyor-store` (repeatable), the CONVEYOR_TEST_STORES environment variable
(comma-separated), the `conveyor_stores` ini option. Markers: `stores(*names)` keeps a test to the named stores;
`processes` keeps it to stores that other processes can open (`Store.supports_processes`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from conveyor.conformance import options
from conveyor.conformance.harness import BUILTIN_NAMES, StoreHarness, load_harness
from conveyor.errors import ValidationError
from conveyor.store import Store

__all__ = ["harnesses"]

_HARNESSES = pytest.StashKey[dict[str, StoreHarness]]()


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    """The options, unless the entry point registered them already (an install without its entry point)."""
    if pluginmanager.get_plugin(options.ENTRY_POINT) is None:
        options.pytest_addoption(parser)


def pytest_configure(config: pytest.Config) -> None:
    options.pytest_configure(config)


def harnesses(config: pytest.Config) -> dict[str, StoreHarness]:
    """The stores under test, by name (loaded once per session)."""
    if _HARNESSES in config.stash:
        return config.stash[_HARNESSES]
    specs: list[str] = list(config.getoption("conveyor_store") or [])
    origin = "--conveyor-store"
    if not specs and os.environ.get("CONVEYOR_TEST_STORES", "").strip():
        specs = [s for s in os.environ["CONVEYOR_TEST_STORES"].split(",") if s.strip()]
        origin = "CONVEYOR_TEST_STORES"
    if not specs:
        specs = list(config.getini("conveyor_stores"))
        origin = "conveyor_stores (ini)"
    if not specs:
        raise pytest.UsageError(
            "the Conveyor conformance suite needs a store: pass --conveyor-store=package.module:attribute (your "
            f"StoreHarness) or a built-in store ({', '.join(BUILTIN_NAMES)}); see docs/own-store.md"
        )
    found: dict[str, StoreHarness] = {}
    for spec in specs:
        try:
            harness = load_harness(spec)
        except ValidationError as exc:
            raise pytest.UsageError(f"{origin}: {exc}") from exc
        if harness.name in found:
            raise pytest.UsageError(f"{origin}: two stores are named {harness.name!r}; give each harness its own name")
        found[harness.name] = harness
    config.stash[_HARNESSES] = found
    return found


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" not in metafunc.fixturenames:
        return
    chosen = list(harnesses(metafunc.config).values())
    only = metafunc.definition.get_closest_marker("stores")
    if only is not None:
        chosen = [h for h in chosen if h.name in only.args]
    if metafunc.definition.get_closest_marker("processes") is not None:
        chosen = [h for h in chosen if h.store_class.supports_processes]
    metafunc.parametrize("store_kind", [h.name for h in chosen])


@pytest.fixture
def store_harness(request: pytest.FixtureRequest, store_kind: str) -> StoreHarness:
    """The harness of the store this test runs on."""
    return harnesses(request.config)[store_kind]


@pytest_asyncio.fixture
async def store_url(store_harness: StoreHarness, tmp_path: Path) -> AsyncIterator[str]:
    """A URL naming a fresh, isolated space of the current store; deleted after the test."""
    url = store_harness.isolated_url(tmp_path)
    try:
        yield url
    finally:
        await store_harness.cleanup(url)


@pytest_asyncio.fixture
async def store(store_harness: StoreHarness, store_url: str) -> AsyncIterator[Store]:
    """An opened, migrated, empty store."""
    s = store_harness.open(store_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()
