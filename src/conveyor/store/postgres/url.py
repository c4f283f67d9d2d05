"""The PostgreSQL store's URL: `postgresql://user@host:port/db?schema=NAME&…` → libpq conninfo + schema."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from conveyor.errors import ValidationError
from conveyor.store.base import DEFAULT_SPACE

__all__ = ["DEFAULT_SCHEMA", "SYSTEM_SCHEMAS", "parse_url"]

DEFAULT_SCHEMA = DEFAULT_SPACE
SYSTEM_SCHEMAS = ("public", "information_schema")  # never dropped, whatever the caller says (nor pg_*)
_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def parse_url(url: str) -> tuple[str, str]:
    """Split a store URL into (libpq conninfo URL without `schema=`, schema name)."""
    parts = urlsplit(url)
    schema = DEFAULT_SCHEMA
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "schema":
            schema = value
        else:
            rest.append((key, value))
    if not _SCHEMA_RE.match(schema):
        raise ValidationError(
            f"schema must be a plain identifier (letters, digits, '_'; at most 63 characters), got {schema!r}",
            field="schema",
        )
    scheme = parts.scheme.split("+", 1)[0]  # accept SQLAlchemy-style postgresql+psycopg:// too
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(rest, quote_via=quote), parts.fragment)), schema
