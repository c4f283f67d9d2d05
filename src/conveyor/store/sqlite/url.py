"""The SQLite store's URL and options: `sqlite:///path.db?busy_timeout=…` → file path, options (read strictly)."""

from __future__ import annotations

import logging
import os
from typing import TypeVar
from urllib.parse import parse_qsl, unquote

from conveyor.errors import (
    ValidationError,
)
from conveyor.store.urls import choice, number

__all__ = ["OPTIONS", "parse_sqlite_url"]

log = logging.getLogger("conveyor.store.sqlite")

T = TypeVar("T")


OPTIONS = {
    "busy_timeout": number(float),
    "busy_retry": number(float),
    "synchronous": choice("OFF", "NORMAL", "FULL", "EXTRA"),
    "cache_size_kib": number(int, minimum=0, above=True),
}
"""The SQLite store's options (URL query parameters or keyword arguments; docs/sqlite.md "Options")."""


def parse_sqlite_url(url: str) -> tuple[str, list[tuple[str, str]]]:
    """`sqlite:///relative.db` (relative to the current directory) or `sqlite:////abs/path.db`, with optional
    `?busy_timeout=…` style options. Returns the absolute path and the options as given (read by `take_options`:
    an empty or repeated one is refused, not dropped)."""
    scheme, _, rest = url.partition(":")
    if scheme.lower() != "sqlite" or not rest.startswith("///"):
        raise ValidationError(
            f"SQLite store URL must look like sqlite:///relative/path.db or sqlite:////absolute/path.db, got {url!r}",
            field="url",
        )
    raw_path, _, query = rest[3:].partition("?")
    path = unquote(raw_path)
    if not path or path == ":memory:" or path.startswith("file:"):
        raise ValidationError(
            f"SQLite store URL {url!r} names no file; give a path (sqlite:///conveyor.db). "
            "For an in-memory store use memory://",
            field="url",
        )
    return os.path.abspath(path), parse_qsl(query, keep_blank_values=True)
