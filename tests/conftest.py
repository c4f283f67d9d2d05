"""Shared fixtures. Every test that takes `store_kind` (or `store_url`, `store`, `store_harness`) runs over every
store selected by CONVEYOR_TEST_STORES (default: the `conveyor_stores` ini option, all four). A backend missing
from the machine is a failure, never a skip: CI must prove every store.

The fixtures and the store selection are the shipped conformance suite's own plugin (`conveyor.conformance.plugin`),
the same entry a third party runs against its store (docs/own-store.md); the store-level tests themselves live in
src/conveyor/conformance/. tests/backends/<name>.py gives the other tests a store's base URL and fresh spaces.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

pytest_plugins = ["conveyor.conformance.plugin"]

ALL_STORES = ("memory", "sqlite", "postgresql", "redis")
BACKEND_MODULES = {"memory": "memory", "sqlite": "sqlite", "postgresql": "postgres", "redis": "redis"}


def selected_stores() -> list[str]:
    raw = os.environ.get("CONVEYOR_TEST_STORES", ",".join(ALL_STORES))
    names = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL_STORES]
    if unknown:
        raise pytest.UsageError(f"CONVEYOR_TEST_STORES names unknown stores {unknown}; choose from {ALL_STORES}")
    return names


def backend(name: str) -> ModuleType:
    return importlib.import_module(f"tests.backends.{BACKEND_MODULES[name]}")


def base_url(name: str) -> str:
    """The base URL of store `name` on this machine (isolated spaces are made beside it)."""
    url: str = backend(name).BASE
    return url
