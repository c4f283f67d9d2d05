"""Small helpers on store URLs, shared by the stores and the tools above them: setting one query parameter, hiding
a password, and reading a store's options strictly.

Why strict: a misspelt option (`?synchronus=FULL`, `?fast_worker_commit=off`) that is silently ignored leaves the
store running with a durability the operator did not choose. Every store therefore names its options (`Option`),
and `take_options` refuses, when the store is built, an option it does not know or a value it cannot read, naming
the option and listing the valid ones. Parameters meant for the driver (libpq's, redis-py's) are passed through
only when the store says the driver knows them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from conveyor.errors import ValidationError

__all__ = ["Option", "boolean", "choice", "number", "redact", "take_options", "with_param"]


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


@dataclass(frozen=True)
class Option:
    """One option of a store: how its value is read (from URL text or a keyword argument), and what it expects."""

    read: Callable[[object], Any]
    expects: str


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(value)


def boolean() -> Option:
    """true/false (also 1/0, yes/no, on/off)."""
    return Option(_boolean, "true or false (1/0, yes/no, on/off)")


def number(kind: type[int] | type[float], *, minimum: float = 0, above: bool = False) -> Option:
    """An int or float of at least `minimum` (above it, when `above`)."""

    def read(value: object) -> Any:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(value)
        got = kind(value.strip()) if isinstance(value, str) else kind(value)
        if got != got or got < minimum or (above and got == minimum):  # NaN, or out of range
            raise ValueError(value)
        return got

    bound = f"> {minimum:g}" if above else f">= {minimum:g}"
    return Option(read, f"{'an integer' if kind is int else 'a number'} {bound}")


def choice(*values: str) -> Option:
    """One of `values` (any case); read as written in `values`."""
    by_upper = {v.upper(): v for v in values}

    def read(value: object) -> str:
        if isinstance(value, str) and value.strip().upper() in by_upper:
            return by_upper[value.strip().upper()]
        raise ValueError(value)

    return Option(read, "one of " + ", ".join(values))


def take_options(
    store: str,
    given: Iterable[tuple[str, object]] | Mapping[str, object],
    options: Mapping[str, Option],
    *,
    driver: Collection[str] = (),
    driver_name: str = "",
) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """Read a store's options strictly: `given` (URL query pairs, or keyword arguments) → (the store's own options,
    read; the parameters left for the driver, as given). An option named twice, unknown (neither the store's nor in
    `driver`), or whose value cannot be read raises ValidationError naming it and listing the valid options."""
    pairs = list(given.items()) if isinstance(given, Mapping) else list(given)
    valid = ", ".join(sorted(options)) or "none"
    also = f" (and the parameters of {driver_name})" if driver else ""
    seen: set[str] = set()
    own: dict[str, Any] = {}
    rest: list[tuple[str, Any]] = []
    for name, value in pairs:
        if name in seen:
            raise ValidationError(f"{store} store option {name!r} is given twice; give it once", field=name)
        seen.add(name)
        option = options.get(name)
        if option is None:
            if name in driver:
                rest.append((name, value))
                continue
            raise ValidationError(f"unknown {store} store option {name!r}; valid options: {valid}{also}", field=name)
        try:
            own[name] = option.read(value)
        except (TypeError, ValueError, OverflowError):
            raise ValidationError(
                f"{store} store option {name}={value!r} is not valid: expected {option.expects} "
                f"(valid options: {valid})",
                field=name,
            ) from None
    return own, rest
