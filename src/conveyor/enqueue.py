"""Creating jobs: validate the options (task and namespace defaults applied), store the batch, announce it.

One path for every producer of jobs — `Conveyor.enqueue*` (and through it the HTTP API and the CLI), the cron
scheduler, the webhook dispatcher (Conveyor's own `conveyor:` jobs, through `enqueue_system` only) and the
user-data import — so the defaults, the reserved-name rule and the `push` events are the same whoever enqueues.
Each function takes the runtime; none needs the public facade.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from conveyor.errors import REQUIRE_TRANSACTION_HINT, CallerConnectionError, Unsupported, ValidationError
from conveyor.ids import new_job_ids
from conveyor.model import (
    DEFAULT_NAMESPACE,
    DEFAULT_QUEUE,
    JSON,
    Job,
    NewJob,
    check_public_task_name,
    is_reserved_task,
    utcnow,
)
from conveyor.runtime import Runtime
from conveyor.store.caller import check_sqlalchemy
from conveyor.tasks import EnqueueSpec

Spec = EnqueueSpec | Mapping[str, Any]


def build_job(rt: Runtime, task: str, payload: JSON, options: Mapping[str, Any], *, system: bool = False) -> NewJob:
    """Validate one job's options, the task's defaults (queue, priority, max_attempts) applied, storing nothing.
    Task names starting with `conveyor:` are refused unless `system` (Conveyor's own jobs)."""
    if not system:
        check_public_task_name(task)
    values = dict(options)
    spec = rt.tasks.get(task)
    if values.get("queue") is None:
        values["queue"] = spec.queue if spec is not None else DEFAULT_QUEUE
    if values.get("priority") is None:
        values["priority"] = spec.priority if spec is not None else 0
    if spec is not None and spec.max_attempts is not None and values.get("max_attempts") is None:
        values["max_attempts"] = spec.max_attempts
    # the task's `unique=` rule, unless the enqueue gave its own (or a unique_key, which stands instead)
    has_own = values.get("unique") is not None or values.get("unique_key") is not None
    if spec is not None and spec.unique is not None and not has_own:
        values["unique"] = spec.unique
    if "max_payload_bytes" not in values:
        values["max_payload_bytes"] = rt.max_payload_bytes
    return NewJob.build(task, payload, **values)


def build_batch(rt: Runtime, specs: Sequence[Spec], *, system: bool = False) -> tuple[list[NewJob], list[bool]]:
    """Validate a batch (one clock reading for all). Also says, per job, whether max_attempts was chosen by the
    caller or the task (else the namespace's default applies). `system`: Conveyor's own `conveyor:` jobs."""
    jobs: list[NewJob] = []
    explicit: list[bool] = []
    now = utcnow()
    ids = new_job_ids(len(specs))
    for index, spec in enumerate(specs):
        values = spec.as_dict() if isinstance(spec, EnqueueSpec) else dict(spec)
        task = values.pop("task", None)
        payload = values.pop("payload", None)
        values.setdefault("now", now)
        values.setdefault("job_id", ids[index])
        try:
            job = build_job(rt, task, payload, values, system=system)  # type: ignore[arg-type]
        except ValidationError as exc:
            if len(specs) == 1:
                raise
            raise type(exc)(f"job #{index}: {exc.message}", field=exc.field) from None
        except TypeError as exc:
            raise ValidationError(f"job #{index}: {exc}") from None
        jobs.append(job)
        spec_task = rt.tasks.get(job.task)
        explicit.append(
            values.get("max_attempts") is not None or (spec_task is not None and spec_task.max_attempts is not None)
        )
    return jobs, explicit


async def with_namespace_defaults(rt: Runtime, jobs: list[NewJob], explicit: list[bool]) -> list[NewJob]:
    """Apply each namespace's default max_attempts where the caller and the task gave none."""
    if all(job.namespace == DEFAULT_NAMESPACE for job in jobs) or all(explicit):
        return jobs
    defaults: dict[str, int | None] = {}
    out: list[NewJob] = []
    for job, given in zip(jobs, explicit, strict=True):
        if not given and job.namespace != DEFAULT_NAMESPACE:
            if job.namespace not in defaults:
                ns = await rt.store.get_namespace(job.namespace)
                defaults[job.namespace] = None if ns is None else ns.max_attempts
            wanted = defaults[job.namespace]
            if wanted is not None and wanted != job.max_attempts:
                job = replace(job, max_attempts=wanted)
        out.append(job)
    return out


async def store_jobs(
    rt: Runtime, built: list[NewJob], explicit: list[bool], connection: Any = None, require_transaction: bool = True
) -> list[Job]:
    """Store validated jobs, through the caller's connection (`connection=`) or on the home loop, and publish
    a `push` event per new job when someone listens."""
    if connection is not None:
        if is_async_connection(connection):
            checked = check_sqlalchemy(connection, require_transaction)
            stored = await rt.store.aenqueue_on_connection(
                connection, built, require_transaction=require_transaction and not checked
            )
            messages = rt.relay.published_on_connection(stored)
            if messages:  # inside the caller's transaction: sent at its commit (conveyor.relay)
                with contextlib.suppress(Unsupported):
                    await rt.store.apublish_events_on_connection(connection, messages)
            return stored
        return enqueue_on_connection(rt, built, connection, require_transaction)

    async def go() -> list[Job]:
        jobs = await with_namespace_defaults(rt, built, explicit)
        stored = await rt.store.enqueue(jobs)
        if rt.events.is_observed():  # skip building push events nobody reads (batch enqueue hot path)
            for job in stored:
                if not job.duplicate:
                    rt.events.publish_push(job)
        return stored

    return await rt.on_home(go)


def enqueue_on_connection(rt: Runtime, built: list[NewJob], connection: Any, require_transaction: bool) -> list[Job]:
    """Insert through a caller's sync connection (psycopg, sqlite3, SQLAlchemy), in the caller's transaction."""
    raw, checked = unwrap_connection(connection, require_transaction)
    stored = rt.store.enqueue_on_connection(raw, built, require_transaction=require_transaction and not checked)
    messages = rt.relay.published_on_connection(stored)
    if messages:  # inside the caller's transaction: sent at its commit (conveyor.relay)
        with contextlib.suppress(Unsupported):
            rt.store.publish_events_on_connection(raw, messages)
    return stored


async def enqueue_many(
    rt: Runtime, specs: Sequence[Spec], *, connection: Any = None, require_transaction: bool = True
) -> list[Job]:
    """Enqueue several jobs in one round trip, all or nothing."""
    if not specs:
        return []
    built, explicit = build_batch(rt, specs)
    return await store_jobs(rt, built, explicit, connection, require_transaction)


async def enqueue(rt: Runtime, task: str, payload: JSON = None, options: Mapping[str, Any] | None = None) -> Job:
    """Enqueue one job of a public task (the scheduler's and the facade's path)."""
    return (await enqueue_many(rt, [{"task": task, "payload": payload, **(options or {})}]))[0]


async def enqueue_system(rt: Runtime, task: str, payload: JSON = None, options: Mapping[str, Any] | None = None) -> Job:
    """Enqueue one of Conveyor's own `conveyor:` jobs (e.g. a webhook delivery). The only way such a job is
    created: public enqueues, the HTTP API and the CLI refuse reserved names."""
    if not is_reserved_task(task) or task not in rt.tasks:
        raise ValueError(f"{task!r} is not a registered conveyor: system task")
    built, explicit = build_batch(rt, [{"task": task, "payload": payload, **(options or {})}], system=True)
    return (await store_jobs(rt, built, explicit))[0]


# ---- the caller's own connection -------------------------------------------------------------------------------


def is_async_connection(connection: Any) -> bool:
    module = type(connection).__module__
    name = type(connection).__name__
    return name.startswith("Async") and (module.startswith("psycopg") or module.startswith("sqlalchemy"))


def unwrap_connection(connection: Any, require_transaction: bool) -> tuple[Any, bool]:
    """Accept SQLAlchemy Session/Connection by reaching the DBAPI connection inside the current transaction.
    Returns (driver connection, whether the caller-connection rules were already checked at SQLAlchemy's level)."""
    module = type(connection).__module__
    if not module.startswith("sqlalchemy"):
        return connection, False
    check_sqlalchemy(connection, require_transaction)
    if hasattr(connection, "connection") and callable(getattr(connection, "connection", None)):
        connection = connection.connection()  # Session.connection() -> Connection (in the Session's transaction)
    dbapi = connection.connection  # Connection.connection -> PoolProxiedConnection
    raw = getattr(dbapi, "driver_connection", dbapi)
    if require_transaction and _driver_autocommit(raw):
        raise CallerConnectionError(
            "the SQLAlchemy connection passed as connection= runs its driver in autocommit mode, so the jobs would "
            "not commit with your work; " + REQUIRE_TRANSACTION_HINT
        )
    return raw, True


def _driver_autocommit(raw: Any) -> bool:
    if isinstance(getattr(raw, "autocommit", None), bool) and type(raw).__module__.startswith("psycopg"):
        return bool(raw.autocommit)
    if type(raw).__name__ == "Connection" and type(raw).__module__ == "sqlite3":
        autocommit = getattr(raw, "autocommit", None)
        return autocommit is True or (autocommit in (None, -1) and raw.isolation_level is None)
    return False
