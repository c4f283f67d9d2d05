"""Conveyor's store conformance suite, shipped as a pytest plugin: prove that a `Store` keeps Conveyor's contract.

Run it against your own store (a subclass of `conveyor.store.Store`, contract in `conveyor/store/base.py`):

    pip install 'conveyor-queue[conformance]'
    pytest --pyargs conveyor.conformance --conveyor-store=mypkg.conformance:harness

where `mypkg/conformance.py` says how to reach a server your store may use:

    from conveyor.conformance import StoreHarness
    from mypkg.store import MyStore

    harness = StoreHarness(name="mystore", store_class=MyStore, base_url="mystore://127.0.0.1/test")

The suite makes a fresh, isolated space beside `base_url` for every test (`MyStore.isolated_url`) and drops it
afterwards (`MyStore.drop`). Conveyor's own stores run the very same suite by name or URL
(`--conveyor-store=postgresql://postgres@127.0.0.1/test`); docs/own-store.md has the details.

Where new tests go: a test of behaviour *every store* must show (what `store/base.py` promises) is a module
`test_store_<topic>.py` here, taking the `store` / `store_url` / `store_kind` / `store_harness` fixtures of
`conveyor.conformance.plugin` and the helpers of `conveyor.conformance.helpers`; it must not import `tests.` nor
name a particular store (use `Store` capability flags such as `supports_processes`, or the `processes` marker).
Tests of one store's internals go to the repository's tests/stores/; tests of the worker or the app over every
store stay in tests/conformance/ (they use the same fixtures, through tests/conftest.py).
"""

from __future__ import annotations

from conveyor.conformance.harness import StoreHarness, load_harness

__all__ = ["StoreHarness", "load_harness"]
