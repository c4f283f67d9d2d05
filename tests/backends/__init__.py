"""Each store's test backend for the tests outside the conformance package (worker, server, CLI, Django tests):
its base URL on this machine's servers and fresh isolated spaces, both taken from the store's conformance harness
(`conveyor.conformance.load_harness`), so this repository's tests and the shipped suite make spaces the same way."""

from __future__ import annotations

from pathlib import Path

from conveyor.conformance import StoreHarness, load_harness


class Backend:
    """One built-in store's harness, as the module-like object `tests.conftest.backend(name)` returns."""

    def __init__(self, name: str) -> None:
        self.harness: StoreHarness = load_harness(name)
        self.BASE = self.harness.base_url

    def fresh_url(self, tmp_path: Path) -> str:
        """A URL naming a new, empty, isolated space (other processes can open it too)."""
        return self.harness.isolated_url(tmp_path)

    async def cleanup(self, url: str) -> None:
        """Delete what fresh_url's space holds (`Store.drop`)."""
        await self.harness.cleanup(url)
