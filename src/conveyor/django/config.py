"""The backend's settings: `TASKS[alias]["OPTIONS"]`, checked once, with the store URL derived from Django's own
database when none is given.

Why derive it: the most useful place for a Django project's jobs is the database it already has. There a job can be
written in the same transaction as the rows it is about (see `backend.py`), and nothing new has to be run. So
without a `URL` the backend keeps its jobs in the Django database named by `DATABASE` (PostgreSQL: the schema
`conveyor` of that database; SQLite: the same file, in tables named `conveyor_*`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from django.core.exceptions import ImproperlyConfigured

from conveyor.model import DEFAULT_NAMESPACE, MAX_ATTEMPTS_RANGE, validate_name

DEFAULT_DATABASE = "default"

# libpq parameters that Django's PostgreSQL OPTIONS may carry and that mean the same to Conveyor's own connections.
_LIBPQ_OPTIONS = frozenset(
    {
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslpassword",
        "connect_timeout",
        "passfile",
        "service",
        "target_session_attrs",
        "application_name",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "gssencmode",
        "channel_binding",
    }
)

_KNOWN = ("URL", "DATABASE", "NAMESPACE", "MAX_ATTEMPTS", "TIMEOUT", "TASK_MODULES")


@dataclass(frozen=True, slots=True)
class BackendOptions:
    """`OPTIONS` of one Conveyor task backend, validated.

    - `url`: the Conveyor store (`sqlite:///…`, `postgresql://…`, `redis://…`).
    - `database`: the Django database alias whose open transaction (`transaction.atomic()`) an enqueue joins, or
      None: every enqueue commits on its own, through Conveyor's connections.
    - `namespace`: the Conveyor namespace of the jobs.
    - `max_attempts`: tries per task before it fails for good (None: the namespace's default, 3).
    - `timeout`: seconds one try may run before it counts as failed (504) and is retried.
    - `task_modules`: modules a worker imports at start besides each installed app's `tasks` module.
    """

    url: str
    database: str | None
    namespace: str = DEFAULT_NAMESPACE
    max_attempts: int | None = None
    timeout: float = 300.0
    task_modules: tuple[str, ...] = ()


def parse_options(alias: str, options: Mapping[str, Any]) -> BackendOptions:
    """Check `OPTIONS` and fill in the defaults; a wrong value raises ImproperlyConfigured naming the setting."""
    where = f"TASKS[{alias!r}]['OPTIONS']"
    if not isinstance(options, Mapping):
        raise ImproperlyConfigured(f"{where} must be a dict, got {type(options).__name__}")
    unknown = sorted(set(options) - set(_KNOWN))
    if unknown:
        raise ImproperlyConfigured(
            f"{where} has unknown key(s) {', '.join(map(repr, unknown))}; the Conveyor backend knows "
            f"{', '.join(_KNOWN)}"
        )
    url = options.get("URL")
    if url is not None and (not isinstance(url, str) or "://" not in url):
        raise ImproperlyConfigured(
            f"{where}['URL'] must be a Conveyor store URL such as sqlite:///jobs.db, postgresql://user@host/db or "
            f"redis://host:6379/0, got {url!r}"
        )
    if "DATABASE" in options:
        database = options["DATABASE"]
        if database is not None and not isinstance(database, str):
            raise ImproperlyConfigured(f"{where}['DATABASE'] must be a database alias (a str) or None")
    else:
        # Join the caller's transactions only where the jobs surely live in that database: when the URL is
        # derived from it. With a URL of its own, say DATABASE explicitly (and make sure it is the same database).
        database = DEFAULT_DATABASE if url is None else None
    if url is None:
        url = url_for_database(database or DEFAULT_DATABASE, where)
    elif database is not None and not url.startswith(("sqlite:", "postgresql:", "postgresql+", "postgres:")):
        raise ImproperlyConfigured(
            f"{where}: DATABASE={database!r} makes enqueues join that database's transactions, which needs the "
            f"jobs in that same database; URL {_redacted(url)} is not SQLite or PostgreSQL. Remove DATABASE (or set "
            "it to None) to enqueue through Conveyor's own connections."
        )
    namespace = options.get("NAMESPACE", DEFAULT_NAMESPACE)
    try:
        validate_name(namespace, "namespace")
    except Exception as exc:
        raise ImproperlyConfigured(f"{where}['NAMESPACE']: {exc}") from None
    max_attempts = options.get("MAX_ATTEMPTS")
    lo, hi = MAX_ATTEMPTS_RANGE
    if max_attempts is not None and (
        not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or not lo <= max_attempts <= hi
    ):
        raise ImproperlyConfigured(
            f"{where}['MAX_ATTEMPTS'] must be an integer from {lo} to {hi}, got {max_attempts!r}"
        )
    timeout = options.get("TIMEOUT", 300.0)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
        raise ImproperlyConfigured(f"{where}['TIMEOUT'] must be a number of seconds > 0, got {timeout!r}")
    modules = options.get("TASK_MODULES", ())
    if isinstance(modules, str) or not all(isinstance(m, str) and m for m in modules):
        raise ImproperlyConfigured(f"{where}['TASK_MODULES'] must be a list of module names, got {modules!r}")
    return BackendOptions(
        url=url,
        database=database,
        namespace=namespace,
        max_attempts=max_attempts,
        timeout=float(timeout),
        task_modules=tuple(modules),
    )


def url_for_database(
    alias: str, where: str = "OPTIONS", databases: Mapping[str, Mapping[str, Any]] | None = None
) -> str:
    """The Conveyor store URL of a Django database (of `databases`, default settings.DATABASES): the same SQLite
    file, or the same PostgreSQL database."""
    if databases is None:
        from django.conf import settings

        databases = getattr(settings, "DATABASES", {})
    assert databases is not None
    if alias not in databases:
        raise ImproperlyConfigured(
            f"{where}: there is no database {alias!r} in DATABASES to keep the jobs in; set DATABASE to one of "
            f"{', '.join(map(repr, databases)) or '(none configured)'}, or give a URL"
        )
    db = databases[alias]
    engine = str(db.get("ENGINE", ""))
    name = db.get("NAME")
    if engine.endswith(".sqlite3") or engine.endswith(".spatialite"):
        text = str(name or "")
        if not text or text == ":memory:" or text.startswith("file:") or "mode=memory" in text:
            raise ImproperlyConfigured(
                f"{where}: database {alias!r} is an in-memory SQLite database, which a worker process cannot "
                "share; use a file, or give the Conveyor store a URL of its own"
            )
        return f"sqlite:///{os.path.abspath(text)}"
    if "postgresql" in engine or "postgis" in engine:
        return _postgres_url(db)
    raise ImproperlyConfigured(
        f"{where}: Conveyor cannot keep jobs in database {alias!r} ({engine or 'no ENGINE'}); it works on "
        "PostgreSQL and SQLite. Give the store a URL of its own (e.g. redis://host:6379/0 or postgresql://…) and set "
        "DATABASE to None."
    )


def _postgres_url(db: Mapping[str, Any]) -> str:
    user = str(db.get("USER") or "")
    password = str(db.get("PASSWORD") or "")
    host = str(db.get("HOST") or "")
    port = str(db.get("PORT") or "")
    name = str(db.get("NAME") or "")
    params: dict[str, str] = {}
    for key, value in (db.get("OPTIONS") or {}).items():
        if key in _LIBPQ_OPTIONS and isinstance(value, str | int) and not isinstance(value, bool):
            params[key] = str(value)
    auth = quote(user, safe="")
    if password:
        auth += ":" + quote(password, safe="")
    if auth:
        auth += "@"
    netloc = auth
    if host.startswith("/"):  # a Unix socket directory: libpq takes it as the host parameter
        params["host"] = host
        if port:
            params["port"] = port
    else:
        netloc += f"[{host}]" if ":" in host else host
        if port:
            netloc += f":{port}"
    query = f"?{urlencode(params)}" if params else ""
    return f"postgresql://{netloc}/{quote(name, safe='')}{query}"


def _redacted(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
