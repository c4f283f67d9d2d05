"""Store conformance: options are read strictly (store/urls.py). An option the store does not know — misspelt in
the URL or passed as a keyword — or a value it cannot read is refused when the store is built, with an error that
names the option and lists the valid ones; it is never silently ignored (a misspelt durability setting would leave
the store running with one nobody chose)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.conformance.harness import StoreHarness
from conveyor.errors import ValidationError
from conveyor.store import Store


def _with(url: str, query: str) -> str:
    """`url` with `query` appended (by hand: urlsplit would fold sqlite:////abs/path's empty host)."""
    return url + ("&" if "?" in url else "?") + query


def _build(harness: StoreHarness, url: str, **keywords: object) -> Store:
    factory = harness.store_class
    return factory(url, **keywords)  # type: ignore[call-arg]


def test_an_unknown_option_in_the_url_is_refused_by_name(store_harness: StoreHarness, tmp_path: Path) -> None:
    url = _with(store_harness.isolated_url(tmp_path), "no_such_option=1")
    with pytest.raises(ValidationError, match="no_such_option") as refused:
        _build(store_harness, url)
    assert "valid options" in str(refused.value)


def test_an_unknown_keyword_option_is_refused_by_name(store_harness: StoreHarness, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="no_such_option"):
        _build(store_harness, store_harness.isolated_url(tmp_path), no_such_option=1)


def test_an_option_given_twice_in_the_url_is_refused(store_harness: StoreHarness, tmp_path: Path) -> None:
    url = _with(store_harness.isolated_url(tmp_path), "no_such_option=1&no_such_option=2")
    with pytest.raises(ValidationError, match="no_such_option"):
        _build(store_harness, url)
