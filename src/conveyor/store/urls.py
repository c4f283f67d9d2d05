"""Small helpers on store URLs, shared by the stores and the tools above them."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["redact", "with_param"]


def redact(url: str) -> str:
    """A store URL safe to print or report: the password replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def with_param(url: str, key: str, value: str | None) -> str:
    """`url` with its query parameter `key` set to `value` (removed when None); every other parameter is kept."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != key]
    if value is not None:
        query.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(query)))
