"""Conveyor for Django: a backend for Django's Tasks framework and a worker that runs Django tasks.

    # settings.py
    INSTALLED_APPS = [..., "conveyor.django"]          # the conveyor_worker command; Conveyor's tables on migrate
    TASKS = {"default": {"BACKEND": "conveyor.django.ConveyorBackend"}}

    # myapp/tasks.py
    from django.tasks import task                      # Django 6; `from django_tasks import task` on 5.2

    @task(priority=10, queue_name="default")
    def send_welcome(user_id: int) -> str: ...

    result = send_welcome.enqueue(42)                   # a Conveyor job; result.id is its id
    send_welcome.get_result(result.id).status           # READY → RUNNING → SUCCESSFUL / FAILED

    $ python manage.py conveyor_worker                  # or: conveyor --app conveyor.django worker

This module imports nothing from Django until asked, so the Conveyor CLI can load `conveyor.django` (the `app`
factory below) before Django is set up. See docs/django.md.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConveyorError

if TYPE_CHECKING:
    from conveyor.app import Conveyor
    from conveyor.django.backend import ConveyorBackend
    from conveyor.django.errors import TaskCancelled, TaskLost

__all__ = ["BACKEND_ENV", "ConveyorBackend", "TaskCancelled", "TaskLost", "app", "get_backend"]

BACKEND_ENV = "CONVEYOR_DJANGO_BACKEND"
"""Environment variable naming the TASKS alias that `conveyor --app conveyor.django worker` serves (default
"default")."""


def __getattr__(name: str) -> Any:
    if name == "ConveyorBackend":
        from conveyor.django.backend import ConveyorBackend

        return ConveyorBackend
    if name in ("TaskCancelled", "TaskLost"):
        from conveyor.django import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'conveyor.django' has no attribute {name!r}")


def get_backend(alias: str | None = None) -> ConveyorBackend:
    """The Conveyor task backend `alias` of this Django project (default: $CONVEYOR_DJANGO_BACKEND or "default"),
    with the project's task modules imported. Sets Django up first when needed (DJANGO_SETTINGS_MODULE)."""
    alias = alias or os.environ.get(BACKEND_ENV) or "default"
    import django
    from django.apps import apps
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        if not apps.ready:
            if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
                raise ConveyorError(
                    "Django is not configured: set DJANGO_SETTINGS_MODULE (e.g. mysite.settings) and run from the "
                    "project directory, or use `python manage.py conveyor_worker`"
                )
            django.setup()
        from conveyor.django._compat import task_backends
        from conveyor.django.backend import ConveyorBackend

        tasks = getattr(settings, "TASKS", None) or {}
        if alias not in tasks:
            raise ConveyorError(
                f"settings.TASKS has no backend {alias!r}"
                + (f" (it has {', '.join(map(repr, tasks))})" if tasks else "")
                + f"; choose one with --backend or ${BACKEND_ENV}"
            )
        chosen = task_backends[alias]
        if not isinstance(chosen, ConveyorBackend):
            raise ConveyorError(
                f"TASKS[{alias!r}] uses {type(chosen).__module__}.{type(chosen).__qualname__}, not "
                "conveyor.django.ConveyorBackend"
            )
        chosen.binding.discover()
    except ImproperlyConfigured as exc:
        raise ConveyorError(f"Django settings: {exc}") from exc
    return chosen


def app(alias: str | None = None) -> Conveyor:
    """The Conveyor app behind a Django task backend, with every task of the project registered: the target of
    `conveyor --app conveyor.django worker` (with DJANGO_SETTINGS_MODULE set)."""
    chosen = get_backend(alias)
    if not chosen.binding.task_names:
        raise ConveyorError(
            f"no Django tasks use the {chosen.alias!r} backend: declare them with @task in a `tasks` module of an "
            "installed app, or list their modules in TASKS[...]['OPTIONS']['TASK_MODULES']"
        )
    return chosen.conveyor
