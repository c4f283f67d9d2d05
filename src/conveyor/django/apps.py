"""The Django app `conveyor.django`: adds the `conveyor_worker` management command, and creates (migrates)
Conveyor's tables when `manage.py migrate` runs on the database a Conveyor task backend keeps its jobs in."""

from __future__ import annotations

import logging
from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate

log = logging.getLogger("conveyor.django")


class ConveyorConfig(AppConfig):  # type: ignore[misc]
    name = "conveyor.django"
    label = "conveyor"
    verbose_name = "Conveyor"

    def ready(self) -> None:
        post_migrate.connect(migrate_stores, dispatch_uid="conveyor.django.migrate_stores")


_migrated: set[str] = set()


def migrate_stores(using: str = "default", verbosity: int = 1, **kwargs: Any) -> None:
    """After `migrate` on database `using`: bring Conveyor's tables up to date (its own versioned migrations, as
    `conveyor migrate` applies them) for every Conveyor task backend whose jobs live in that database — its
    `DATABASE` is `using`, and its URL is either given or derived from that database as it is now (so a test
    database that Django's test runner created under another name is left alone). Django sends this signal once
    per app with models; the work is done once per store and process."""
    from django.conf import settings

    from conveyor.django._compat import task_backends
    from conveyor.django.backend import ConveyorBackend
    from conveyor.django.config import url_for_database

    for alias, params in (getattr(settings, "TASKS", None) or {}).items():
        if not str(params.get("BACKEND", "")).startswith("conveyor.django"):
            continue
        chosen = task_backends[alias]
        if not isinstance(chosen, ConveyorBackend):
            continue
        options = chosen.conveyor_options
        if options.database != using or options.url in _migrated:
            continue
        if not (params.get("OPTIONS") or {}).get("URL"):
            try:
                here = url_for_database(using)
            except Exception:
                continue
            if here != options.url:
                continue
        _migrated.add(options.url)
        chosen.conveyor.open()  # opening a store applies its pending migrations
        if verbosity >= 1:
            log.info("Conveyor: the job tables of task backend %r are up to date", alias)
