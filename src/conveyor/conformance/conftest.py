"""Loads the suite's plugin when pytest collects this package (`pytest --pyargs conveyor.conformance`)."""

from __future__ import annotations

import pytest

pytest_plugins = ["conveyor.conformance.plugin"]


def pytest_configure(config: pytest.Config) -> None:
    """The suite's tests are coroutines; run them whatever asyncio mode the calling project configured."""
    if config.pluginmanager.hasplugin("asyncio") and config.getoption("asyncio_mode", None) is None:
        config.option.asyncio_mode = "auto"
