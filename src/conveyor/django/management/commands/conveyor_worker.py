"""`python manage.py conveyor_worker`: run a Conveyor worker for this project's Django tasks.

It is `conveyor worker` on the project's task backend — the same options, logging, graceful shutdown (SIGTERM:
running tasks get --grace-period to finish, the rest are handed back) and exit codes — run through Conveyor's own
command line, so both ways of starting a worker behave alike. Without --queue it serves every queue the backend's
QUEUES setting names.
"""

from __future__ import annotations

import os
from argparse import ArgumentParser
from typing import Any, ClassVar

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):  # type: ignore[misc]
    help = (
        "Run a Conveyor worker for the Django tasks of a Conveyor task backend until SIGTERM/SIGINT "
        "(the options of `conveyor worker`)."
    )
    requires_system_checks: ClassVar[list[str]] = []  # the worker checks what it needs; unrelated checks can't stop it

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--backend", default=None, help="The TASKS alias to serve (default: 'default').")
        parser.add_argument(
            "--queue",
            "-q",
            action="append",
            default=None,
            help="Queue to serve; repeat for several (default: every queue in the backend's QUEUES, else 'default').",
        )
        parser.add_argument("--concurrency", "-c", type=int, default=None, help="Tasks run at once (default 10).")
        parser.add_argument(
            "--namespace", "-n", action="append", default=None, help="Serve only these Conveyor namespaces."
        )
        parser.add_argument("--grace-period", type=float, default=None, help="Seconds running tasks get on SIGTERM.")
        parser.add_argument("--lease", type=float, default=None, help="Lease in seconds (default 30).")
        parser.add_argument("--poll-interval", type=float, default=None, help="Seconds between polls (default 1).")
        parser.add_argument("--id", dest="worker_id", default=None, help="Worker id (default host:pid:random).")
        parser.add_argument(
            "--no-maintenance",
            action="store_true",
            help="Don't run the rescuer, pruner and scheduler in this worker.",
        )
        parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR (default INFO).")

    def handle(self, *args: Any, **options: Any) -> None:
        from conveyor.cli import app as cli
        from conveyor.django import BACKEND_ENV, get_backend
        from conveyor.errors import ConveyorError

        alias = options["backend"] or os.environ.get(BACKEND_ENV) or "default"
        try:
            chosen = get_backend(alias)
        except ConveyorError as exc:
            raise CommandError(exc.message) from None
        queues = options["queue"] or sorted(chosen.queues) or ["default"]
        argv = ["--app", "conveyor.django", "worker"]
        for queue in queues:
            argv += ["--queue", queue]
        for namespace in options["namespace"] or ():
            argv += ["--namespace", namespace]
        for flag, key in (
            ("--concurrency", "concurrency"),
            ("--grace-period", "grace_period"),
            ("--lease", "lease"),
            ("--poll-interval", "poll_interval"),
            ("--id", "worker_id"),
            ("--log-level", "log_level"),
        ):
            if options[key] is not None:
                argv += [flag, str(options[key])]
        if options["no_maintenance"]:
            argv.append("--no-maintenance")
        os.environ[BACKEND_ENV] = alias  # the CLI loads the app through conveyor.django.app(), which reads it
        code = cli(args=argv, prog_name="manage.py conveyor_worker", standalone_mode=False)
        if isinstance(code, int) and code != 0:
            raise SystemExit(code)
