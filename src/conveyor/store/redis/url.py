"""The Redis store's URL: `redis://host:port/db?prefix=NAME&…` → the URL for redis-py, the key prefix, options.

The query may hold the store's own options (`OPTIONS`, docs/redis.md "Options") and redis-py's URL parameters
(`DRIVER_PARAMETERS`: ssl_cert_reqs, health_check_interval, client_name, …), which go to redis-py untouched.
Anything else is refused when the store is built, naming it (urls.take_options).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS

from conveyor.store.redis.keys import DEFAULT_PREFIX
from conveyor.store.urls import Option, number, take_options

__all__ = ["DRIVER_PARAMETERS", "OPTIONS", "read_options", "split_url"]

OPTIONS: dict[str, Option] = {
    "socket_timeout": number(float, above=True),
    "wake_block": number(float, above=True),
    "max_connections": number(int, minimum=1),
}
"""The store's own options besides `prefix`, in the URL's query or as keyword arguments (keyword arguments win)."""

DRIVER_PARAMETERS = (
    frozenset(URL_QUERY_ARGUMENT_PARSERS)
    | {
        "client_name",
        "username",
        "password",
        "ssl_keyfile",
        "ssl_certfile",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_ciphers",
        "ssl_password",
    }
) - set(OPTIONS)
"""redis-py's URL query parameters (those it parses, and the plain-text ones its connections take); the store's own
options are not among them: the store reads those itself and passes them on."""


def split_url(url: str) -> tuple[str, str]:
    """(URL for redis-py without our `prefix` parameter, the key prefix)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = DEFAULT_PREFIX
    kept: list[tuple[str, str]] = []
    for k, v in query:
        if k == "prefix":
            prefix = v or DEFAULT_PREFIX
        else:
            kept.append((k, v))
    return urlunsplit(parts._replace(query=urlencode(kept))), prefix


def read_options(url: str, keywords: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(URL for redis-py without the store's options, the key prefix, the store's options: the URL's, then the
    keyword arguments')."""
    base, prefix = split_url(url)
    parts = urlsplit(base)
    values, rest = take_options(
        "Redis",
        parse_qsl(parts.query, keep_blank_values=True),
        OPTIONS,
        driver=DRIVER_PARAMETERS,
        driver_name="redis-py's URLs",
    )
    values.update(take_options("Redis", keywords, OPTIONS)[0])
    return urlunsplit(parts._replace(query=urlencode(rest))), prefix, values
