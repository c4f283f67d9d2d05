"""What the conformance suite needs to know about a store: `StoreHarness`, and how `--conveyor-store` finds one.

A harness names a `Store` subclass and a base URL beside which the suite makes a fresh, isolated space for every test
(`Store.isolated_url`, deleted afterwards with `Store.drop`): the suite never shares data between tests and never
touches the base URL's own space. Three optional hooks let the suite simulate what only the backend can do; a test
that needs a hook the harness lacks is skipped with a message saying which hook.
"""

from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

from conveyor.errors import ValidationError
from conveyor.store import Store, store_class

__all__ = ["BUILTIN_NAMES", "LABEL_PREFIX", "StoreHarness", "load_harness"]

LABEL_PREFIX = "cv_"
"""Every space the suite makes is labelled so (a leftover on a shared server is easy to recognise)."""

BUILTIN_NAMES = ("memory", "sqlite", "postgresql", "redis")
"""The stores shipped with Conveyor, which `--conveyor-store` also accepts by name (see `load_harness`)."""


@dataclass(frozen=True)
class StoreHarness:
    """One store under test.

    name:         the test id suffix (`test_x[name]`).
    store_class:  your `Store` subclass; the suite builds it as `store_class(url)`, as `open_store` does.
    base_url:     a URL of your store on a server the suite may use; the suite makes its spaces beside it.
    spec:         how another process loads this harness (`module:attribute`); set by `load_harness`. Multi-process
                  tests (when `store_class.supports_processes`) run a child that opens the store through it.
    snapshot / restore:  optional. `snapshot(url)` returns everything the space holds now; `restore(url, snap)` puts
                  it back as it was, in one step: what a crash of the backend that lost every later commit leaves
                  behind. Used by the fencing tests ("a claim lost to a crash").
    make_schema_newer:   optional. Record in the space a schema version newer than this code knows (as a newer
                  release would); return False when the store keeps no schema version.
    """

    name: str
    store_class: type[Store]
    base_url: str
    spec: str = ""
    snapshot: Callable[[str], Awaitable[object]] | None = None
    restore: Callable[[str, object], Awaitable[None]] | None = None
    make_schema_newer: Callable[[str], Awaitable[bool]] | None = None

    def open(self, url: str) -> Store:
        """A new (not yet opened) store object on `url`."""
        factory: Callable[..., Store] = self.store_class  # every store takes (url, *, lazy=False, **options)
        return factory(url)

    def isolated_url(self, workdir: Path, label: str | None = None) -> str:
        """A URL naming a new, empty space beside `base_url` (a random label unless given)."""
        return self.store_class.isolated_url(self.base_url, label or f"{LABEL_PREFIX}{uuid.uuid4().hex[:16]}", workdir)

    async def cleanup(self, url: str) -> None:
        """Delete the space `url` names (and whatever a test left in it)."""
        await self.open(url).drop()


def _builtin(name: str, base_url: str | None) -> StoreHarness:
    from conveyor.conformance import builtin

    scheme = {"memory": "memory", "sqlite": "sqlite", "postgresql": "postgresql", "redis": "redis"}[name]
    default = {
        "memory": "memory://",
        "sqlite": "sqlite://",
        "postgresql": os.environ.get("CONVEYOR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        "redis": os.environ.get("CONVEYOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    }[name]
    url = base_url or default
    hooks = builtin.HOOKS[name]
    return StoreHarness(
        name=name,
        store_class=store_class(f"{scheme}://"),
        base_url=url,
        spec=url if base_url else name,
        snapshot=hooks.snapshot,
        restore=hooks.restore,
        make_schema_newer=hooks.make_schema_newer,
    )


def load_harness(spec: str) -> StoreHarness:
    """The harness that a `--conveyor-store` value names:

    - `package.module:attribute`: a `StoreHarness`, or a callable taking no argument that returns one (your store);
    - a built-in store's name (memory, sqlite, postgresql, redis): that store on this machine's default server
      (PostgreSQL and Redis from CONVEYOR_TEST_POSTGRES_URL / CONVEYOR_TEST_REDIS_URL, else 127.0.0.1);
    - a built-in store's URL (`postgresql://user@host/db`, `redis://host:6379/0`): that store on that server.
    """
    spec = spec.strip()
    if spec in BUILTIN_NAMES:
        return _builtin(spec, None)
    scheme = spec.split(":", 1)[0].lower()
    if "://" in spec:
        name = {"postgres": "postgresql", "rediss": "redis"}.get(scheme, scheme)
        if name not in BUILTIN_NAMES:
            raise ValidationError(
                f"--conveyor-store {spec!r}: only Conveyor's own stores are named by URL ({', '.join(BUILTIN_NAMES)}); "
                "name your store's harness as package.module:attribute"
            )
        return _builtin(name, spec)
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValidationError(
            f"--conveyor-store {spec!r} is neither package.module:attribute (a StoreHarness or a function returning "
            f"one) nor a built-in store ({', '.join(BUILTIN_NAMES)}, or its URL)"
        )
    try:
        target: object = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValidationError(f"--conveyor-store {spec!r}: cannot load it: {exc}") from exc
    if not isinstance(target, StoreHarness) and callable(target):
        target = target()
    if not isinstance(target, StoreHarness):
        raise ValidationError(
            f"--conveyor-store {spec!r} is a {type(target).__name__}, not a StoreHarness (or a function returning one)"
        )
    if not (isinstance(target.store_class, type) and issubclass(target.store_class, Store)):
        raise ValidationError(f"--conveyor-store {spec!r}: store_class must be a subclass of conveyor.store.Store")
    return target if target.spec else replace(target, spec=spec)
