"""The PostgreSQL store's URL: `postgresql://user@host:port/db?schema=NAME&…` → libpq conninfo, schema, options.

The query may hold the store's own options (`URL_OPTIONS`, docs/postgres.md "Options") and libpq's connection
parameters (sslmode, application_name, options, …), which go to libpq untouched. Anything else is refused when the
store is built, naming it (urls.take_options): a misspelt `fast_worker_commits` must not leave the store running
with a durability nobody chose.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg.pq

from conveyor.errors import ValidationError
from conveyor.store.base import DEFAULT_SPACE
from conveyor.store.urls import Option, boolean, number, take_options

__all__ = ["DEFAULT_SCHEMA", "OPTIONS", "SYSTEM_SCHEMAS", "driver_parameters", "parse_url", "read_url"]

DEFAULT_SCHEMA = DEFAULT_SPACE
SYSTEM_SCHEMAS = ("public", "information_schema")  # never dropped, whatever the caller says (nor pg_*)
_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _schema(value: object) -> str:
    if isinstance(value, str) and _SCHEMA_RE.match(value):
        return value
    raise ValueError(value)


OPTIONS: dict[str, Option] = {
    "schema": Option(_schema, "a plain identifier (letters, digits, '_'; at most 63 characters)"),
    "min_size": number(int),
    "max_size": number(int, minimum=1),
    "timeout": number(float, above=True),
    "listen": boolean(),
    "fast_worker_commits": boolean(),
}
"""The store's own options, in the URL's query or as keyword arguments (keyword arguments win)."""

_PSYCOPG_CONNECT = ("prepare_threshold", "context", "row_factory", "cursor_factory")
"""Keyword arguments of psycopg's connect() that are not libpq parameters (passed through as keyword arguments)."""


@cache
def driver_parameters() -> frozenset[str]:
    """Every connection parameter the installed libpq knows (PQconndefaults)."""
    return frozenset(d.keyword.decode() for d in psycopg.pq.Conninfo.get_defaults())


def read_url(url: str) -> tuple[str, str, dict[str, Any]]:
    """(libpq conninfo URL without the store's options, schema name, the store's other options read from the URL)."""
    parts = urlsplit(url)
    own, rest = take_options(
        "PostgreSQL",
        parse_qsl(parts.query, keep_blank_values=True),
        OPTIONS,
        driver=driver_parameters(),
        driver_name="libpq",
    )
    schema: str = own.pop("schema", DEFAULT_SCHEMA)
    if not _SCHEMA_RE.match(schema):
        raise ValidationError(
            f"schema must be a plain identifier (letters, digits, '_'; at most 63 characters), got {schema!r}",
            field="schema",
        )
    scheme = parts.scheme.split("+", 1)[0]  # accept SQLAlchemy-style postgresql+psycopg:// too
    query = urlencode([(k, str(v)) for k, v in rest], quote_via=quote)
    return urlunsplit((scheme, parts.netloc, parts.path, query, parts.fragment)), schema, own


def parse_url(url: str) -> tuple[str, str]:
    """Split a store URL into (libpq conninfo URL without the store's options, schema name)."""
    conninfo, schema, _ = read_url(url)
    return conninfo, schema


def read_keywords(given: dict[str, Any], passthrough: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The store's keyword arguments: (its own options that were given, read; the rest for psycopg's connect, which
    must be libpq parameters or psycopg's own connect arguments)."""
    own, _ = take_options("PostgreSQL", {k: v for k, v in given.items() if v is not None}, OPTIONS)
    _, rest = take_options(
        "PostgreSQL",
        passthrough,
        {},
        driver=driver_parameters() | set(_PSYCOPG_CONNECT),
        driver_name="libpq and psycopg.connect",
    )
    return own, dict(rest)
