"""`ConveyorBackend`: Django's Tasks framework (`django.tasks`, or the `django-tasks` backport) on Conveyor.

    TASKS = {
        "default": {
            "BACKEND": "conveyor.django.ConveyorBackend",
            "QUEUES": ["default", "emails"],           # Django's own setting ([] allows any queue name)
            "OPTIONS": {},                             # see config.BackendOptions
        }
    }

A Django app enqueues and reads results through Django's API (`task.enqueue(...)`, `task.get_result(id)`,
`result.refresh()`), and `python manage.py conveyor_worker` (or `conveyor --app conveyor.django worker`) runs them.

How the parts map (docs/django.md has the whole story):

- A Django task is a Conveyor task named by its module path; its job's payload is `{"args": [...], "kwargs": {...}}`
  (JSON, after Django's own normalisation). `queue_name` is the job's queue, `run_after` its `run_at`, and the
  priority is negated: Django runs higher priorities first (−100…100), Conveyor lower ones.
- Which function a worker may run is decided by the registry of this process: a task is registered when its
  `@task` declaration is evaluated (Django validates every Task with its backend: `validate_task`). A worker
  imports each installed app's `tasks` module and the modules in `TASK_MODULES` at start. Nothing is ever imported
  because of a name read from a job, so a job cannot make a worker import or call anything but a declared task.
- Enqueue in the caller's transaction: with `DATABASE` (the default when the jobs live in the Django database), an
  enqueue made inside `transaction.atomic()` on that database writes the job through Django's own connection, in
  that transaction: the job exists if and only if the transaction commits, and no worker can start it before.
  Outside an atomic block the job is committed at once.
- One Conveyor app (its store connections and event loop) serves each backend configuration in a process, however
  many threads Django creates backend instances for.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime
from inspect import iscoroutinefunction
from types import ModuleType
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core import checks
from django.utils import timezone

from conveyor.app import Conveyor
from conveyor.django._compat import (
    AnyResult,
    AnyTask,
    BaseTaskBackend,
    InvalidTask,
    Task,
    TaskResultDoesNotExist,
    normalize_json,
    task_enqueued,
)
from conveyor.django.config import BackendOptions, parse_options
from conveyor.django.results import arguments, to_task_result
from conveyor.django.runner import make_handler
from conveyor.errors import ValidationError
from conveyor.model import MAX_TASK_NAME, validate_name

if TYPE_CHECKING:
    from conveyor.model import Job


class Binding:
    """What every backend instance with the same configuration shares in a process: the Conveyor app and the
    registry of the Django tasks declared for it (module path → Task)."""

    def __init__(self, alias: str, options: BackendOptions, backend_class: type[ConveyorBackend]) -> None:
        self.alias = alias
        self.options = options
        self.backend_class = backend_class
        self.app = Conveyor(options.url)
        self._tasks: dict[str, AnyTask] = {}
        self._lock = threading.Lock()  # guards registration (never held while importing)
        self._discover_lock = threading.Lock()  # one discovery at a time; held while importing, so never by register
        self._discovered = False

    def task(self, name: str) -> AnyTask | None:
        return self._tasks.get(name)

    @property
    def task_names(self) -> list[str]:
        return sorted(self._tasks)

    def register(self, task: AnyTask) -> None:
        """Remember a Django task and give Conveyor a handler for it (once per module path)."""
        name = task.module_path
        known = self._tasks.get(name)
        if known is not None and known.func is task.func:
            return
        with self._lock:
            known = self._tasks.get(name)
            if known is not None and known.func is task.func:
                return
            self._tasks[name] = task  # a module reloaded: its new function replaces the old one
            if name not in self.app.tasks:
                is_async = iscoroutinefunction(task.func)
                self.app.register(
                    name,
                    make_handler(self, name, is_async),
                    max_attempts=self.options.max_attempts,
                    timeout=self.options.timeout,
                    isolation=None if is_async else "thread",
                )

    def discover(self) -> list[str]:
        """Import each installed app's `tasks` module and the `TASK_MODULES`, and register every Django task
        defined at the top level of those modules — whichever backend it was declared for, since any task can be
        sent to this one with `task.using(backend=...)`. What a worker does at start, and what resolving an unknown
        task name tries once. Returns the registered names."""
        with self._discover_lock:
            if not self._discovered:
                for module in discover_modules(self.options.task_modules):
                    for value in list(vars(module).values()):
                        if isinstance(value, Task) and value.func.__module__ == module.__name__:
                            self.register(value)
                self._discovered = True
        return self.task_names

    def resolve(self, name: str) -> AnyTask | None:
        """The Django task a job of Conveyor task `name` runs, if it is one of this backend's."""
        task = self._tasks.get(name)
        if task is None and not self._discovered:
            self.discover()
            task = self._tasks.get(name)
        return task


def discover_modules(extra: Iterable[str] = ()) -> list[ModuleType]:
    """The `tasks` module of every installed app that has one (imported), then the modules named in `extra`."""
    from django.apps import apps
    from django.utils.module_loading import module_has_submodule

    modules: list[ModuleType] = []
    for config in apps.get_app_configs():
        if module_has_submodule(config.module, "tasks"):
            modules.append(importlib.import_module(f"{config.name}.tasks"))
    for name in extra:
        modules.append(importlib.import_module(name))
    return modules


_bindings: dict[tuple[str, BackendOptions], Binding] = {}
_bindings_lock = threading.Lock()


def binding_for(alias: str, options: BackendOptions, backend_class: type[ConveyorBackend]) -> Binding:
    key = (alias, options)
    binding = _bindings.get(key)
    if binding is None:
        with _bindings_lock:
            binding = _bindings.get(key)
            if binding is None:
                binding = _bindings[key] = Binding(alias, options, backend_class)
    return binding


class ConveyorBackend(BaseTaskBackend):
    """Django Tasks backend that keeps tasks as Conveyor jobs (SQLite, PostgreSQL or Redis)."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.conveyor_options = parse_options(alias, self.options)
        for queue in self.queues:
            try:
                validate_name(queue, "queue")
            except ValidationError as exc:
                from django.core.exceptions import ImproperlyConfigured

                raise ImproperlyConfigured(f"TASKS[{alias!r}]['QUEUES']: {exc.message}") from None
        self.binding = binding_for(alias, self.conveyor_options, type(self))

    @property
    def conveyor(self) -> Conveyor:
        """The Conveyor app behind this backend (shared by every instance with the same settings)."""
        return self.binding.app

    # ---- Django's backend API -------------------------------------------------------------------------------

    def validate_task(self, task: AnyTask) -> None:
        super().validate_task(task)
        try:
            validate_name(task.queue_name, "queue")
        except ValidationError:
            raise InvalidTask(
                f"Queue {task.queue_name!r} is not a valid Conveyor queue name: use 1-128 letters, digits, '-', '_' "
                "or '.'"
            ) from None
        if len(task.module_path) > MAX_TASK_NAME:
            raise InvalidTask(f"Task module path is longer than {MAX_TASK_NAME} characters: {task.module_path[:80]}…")
        self.binding.register(task)

    def enqueue(self, task: AnyTask, args: Any, kwargs: Any) -> AnyResult:
        self.validate_task(task)
        call_args = normalize_json(list(args))
        call_kwargs = normalize_json(dict(kwargs))
        options: dict[str, Any] = {
            "namespace": self.conveyor_options.namespace,
            "queue": task.queue_name,
            "priority": -task.priority,
        }
        if task.run_after is not None:
            options["run_at"] = _aware(task.run_after)
        if self.conveyor_options.max_attempts is not None:
            options["max_attempts"] = self.conveyor_options.max_attempts
        payload = {"args": call_args, "kwargs": call_kwargs}
        connection = self._transaction_connection()
        if connection is not None:
            # Django's atomic block is the transaction (checked above); its driver may not have begun one yet,
            # which Conveyor's own check would refuse as an idle connection.
            job = self.conveyor.enqueue(
                task.module_path, payload, connection=connection, require_transaction=False, **options
            )
        else:
            job = self.conveyor.enqueue(task.module_path, payload, **options)
        result = self._result(task, job, [], call_args, call_kwargs)
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> AnyResult:
        if not isinstance(result_id, str) or not result_id:
            raise TaskResultDoesNotExist(f"no task result with id {result_id!r}")
        job = self.conveyor.get_job(result_id)
        if job is None:
            raise TaskResultDoesNotExist(f"no task result with id {result_id!r}")
        task = self.binding.resolve(job.task)
        parsed = arguments(job.payload)
        if task is None or parsed is None:
            raise TaskResultDoesNotExist(
                f"{result_id!r} is a Conveyor job of task {job.task!r}, not a Django task of the {self.alias!r} backend"
            )
        attempts = self.conveyor.attempts(job.id)
        return self._result(task, job, attempts, parsed[0], parsed[1])

    def check(self, **kwargs: Any) -> Iterable[checks.CheckMessage]:
        messages: list[checks.CheckMessage] = []
        database = self.conveyor_options.database
        if database is not None:
            from django.db import connections

            if database not in connections:
                messages.append(
                    checks.Error(
                        f"TASKS[{self.alias!r}]['OPTIONS']['DATABASE'] names database {database!r}, which is not in "
                        "DATABASES",
                        id="conveyor.E001",
                    )
                )
            else:
                vendor = connections[database].vendor
                if vendor not in ("sqlite", "postgresql"):
                    messages.append(
                        checks.Error(
                            f"TASKS[{self.alias!r}]: enqueues join transactions of database {database!r}, a {vendor} "
                            "database; Conveyor can do that on PostgreSQL and SQLite only. Set DATABASE to None.",
                            id="conveyor.E002",
                        )
                    )
        return messages

    # ---- helpers ----------------------------------------------------------------------------------------------

    def _result(self, task: AnyTask, job: Job, attempts: Any, args: list[Any], kwargs: dict[str, Any]) -> AnyResult:
        return to_task_result(task, job, attempts, self.alias, args, kwargs)

    def _transaction_connection(self) -> Any:
        """Django's DB-API connection when an enqueue should join its open transaction, else None."""
        database = self.conveyor_options.database
        if database is None:
            return None
        from django.db import connections

        connection = connections[database]
        if not connection.in_atomic_block:
            return None  # autocommit: Conveyor commits the job at once (and wakes workers at once)
        connection.validate_no_broken_transaction()  # Django's TransactionManagementError, as for any query
        return connection.connection


def _aware(value: datetime) -> datetime:
    """`run_after` as an aware datetime (Django allows naive ones when USE_TZ is off: they are in TIME_ZONE)."""
    if timezone.is_aware(value):
        return value
    aware: datetime = timezone.make_aware(value, timezone.get_default_timezone())
    return aware


def configured_backends() -> Mapping[str, Mapping[str, Any]]:
    """TASKS entries that use a Conveyor backend (by class path)."""
    tasks: Mapping[str, Mapping[str, Any]] = getattr(settings, "TASKS", {}) or {}
    return {alias: params for alias, params in tasks.items() if str(params.get("BACKEND", "")).startswith("conveyor.")}


__all__ = ["Binding", "ConveyorBackend", "binding_for"]
