"""The suite's command-line and ini options, registered in every pytest run through the `pytest11` entry point
`conveyor_conformance` (inert unless used): `pytest --pyargs conveyor.conformance` reads its arguments before it
imports the package, so `--conveyor-store` must be known by then. The fixtures stay in `plugin`, loaded only by the
suite's conftest (and this repository's tests/conftest.py), so no other project gets a `store` fixture."""

from __future__ import annotations

import pytest

from conveyor.conformance.harness import BUILTIN_NAMES

__all__ = ["ENTRY_POINT", "pytest_addoption", "pytest_configure"]

ENTRY_POINT = "conveyor_conformance"
"""This module's name as a pytest plugin (pyproject.toml [project.entry-points.pytest11])."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conveyor", "Conveyor store conformance suite (docs/own-store.md)")
    group.addoption(
        "--conveyor-store",
        action="append",
        default=[],
        metavar="SPEC",
        help="a store to test: package.module:attribute (a conveyor.conformance.StoreHarness, or a function "
        f"returning one), or a built-in store's name ({', '.join(BUILTIN_NAMES)}) or URL. Repeat for several.",
    )
    parser.addini("conveyor_stores", "stores to test when --conveyor-store is not given (same forms)", type="args")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "stores(*names): run this test only on the named stores")
    config.addinivalue_line("markers", "processes: run this test only on stores other processes can open")
