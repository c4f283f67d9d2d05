"""A real Django project (tests/django_project) on Conveyor task backends, with real worker processes.

Django can be set up once per process, so one session fixture (per xdist worker) makes the stores, points the
project's settings at them through the environment, sets Django up in this process (which plays the web process:
it enqueues and reads results through Django's API), runs `migrate`, and starts one long-lived worker per
backend on the queue `default`:

- sqlite: backend `default`, its jobs in the Django SQLite file (URL derived), joining the `default` database's
  transactions; worker `manage.py conveyor_worker`.
- postgresql: backend `pg`, its jobs in a fresh schema of the shared server, joining the transactions of database
  `pg` (the same server; Django's tables in a schema of their own); worker `conveyor --app conveyor.django worker`.
- redis: backend `redis`, a fresh key prefix, MAX_ATTEMPTS 1, no database to join; worker `manage.py
  conveyor_worker`.

Tests that need a worker of their own (ordering, shutdown) start one on a queue nobody else serves.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import selected_stores

PROJECT = Path(__file__).resolve().parent.parent / "django_project"
CONVEYOR = str(Path(sys.executable).parent / "conveyor")
PG_SERVER = os.environ.get("CONVEYOR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
ALIAS_OF_STORE = {"sqlite": "default", "postgresql": "pg", "redis": "redis"}
DATABASE_OF_ALIAS = {"default": "default", "pg": "pg", "redis": "default"}


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def finished(result: Any, timeout: float = 30.0) -> Any:
    """Refresh a TaskResult until it is finished (SUCCESSFUL or FAILED)."""

    def done() -> bool:
        result.refresh()
        return bool(result.is_finished)

    wait_for(done, timeout, f"task {result.task.name} ({result.id}) to finish; last status {result.status}")
    return result


@dataclass
class DjangoEnv:
    aliases: list[str]
    env: dict[str, str]
    tmp: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_worker(
        self, alias: str, *args: str, via: str = "manage", log: str | None = None
    ) -> subprocess.Popen[bytes]:
        """A worker process for backend `alias`: `manage.py conveyor_worker --backend alias ARGS`, or (via="cli")
        `conveyor --app conveyor.django worker ARGS` with CONVEYOR_DJANGO_BACKEND=alias."""
        env = {**self.env, "CONVEYOR_DJANGO_BACKEND": alias}
        if via == "manage":
            cmd = [sys.executable, "manage.py", "conveyor_worker", "--backend", alias, *args]
        else:
            cmd = [CONVEYOR, "--app", "conveyor.django", "worker", *args]
        out = open(self.tmp / (log or f"worker-{alias}-{uuid.uuid4().hex[:6]}.log"), "wb")  # noqa: SIM115
        proc = subprocess.Popen(cmd, cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        self.workers.append(proc)
        return proc

    def wait_serving(self, alias: str, queue: str, timeout: float = 60.0) -> None:
        """Until a worker registered for `queue` on backend `alias`'s store."""
        app = backend(alias).conveyor
        wait_for(lambda: any(queue in w.queues for w in app.list_workers()), timeout, f"a worker on {queue}")

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise


def backend(alias: str) -> Any:
    from conveyor.django._compat import task_backends

    return task_backends[alias]


@pytest.fixture(scope="session")
def django_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DjangoEnv]:
    stores = [s for s in selected_stores() if s in ALIAS_OF_STORE]
    if "sqlite" not in stores:
        pytest.skip("the Django tests keep the project's own database on SQLite: select the sqlite store")
    tmp = tmp_path_factory.mktemp("django")
    tag = uuid.uuid4().hex[:12]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CONVEYOR_TEST_PG", "CONVEYOR_DJANGO"))}
    env["DJANGO_SETTINGS_MODULE"] = "djproject.settings"
    env["DJANGO_TEST_SQLITE"] = str(tmp / "db.sqlite3")
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT), str(PROJECT.parent.parent), env.get("PYTHONPATH", "")])
    django_schema = f"cv_dj_{tag}"
    if "postgresql" in stores:
        env["DJANGO_TEST_PG_SCHEMA"] = django_schema
        env["CONVEYOR_TEST_PG_URL"] = f"{PG_SERVER}?schema=cv_{tag}"
        with psycopg.connect(PG_SERVER, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(django_schema)))
    if "redis" in stores:
        env["CONVEYOR_TEST_REDIS_URL"] = f"redis://127.0.0.1:6379/0?prefix=cvt:dj{tag}"
    os.environ.update({k: v for k, v in env.items() if k.startswith(("DJANGO_", "CONVEYOR_TEST_"))})
    sys.path.insert(0, str(PROJECT))

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", database="default", verbosity=0)
    if "postgresql" in stores:
        call_command("migrate", database="pg", verbosity=0)
    aliases = [ALIAS_OF_STORE[s] for s in stores]
    for alias in aliases:
        backend(alias).conveyor.open()
    denv = DjangoEnv(aliases=aliases, env=env, tmp=tmp)
    try:
        for alias in aliases:
            via = "cli" if alias == "pg" else "manage"
            denv.start_worker(alias, "-q", "default", "-c", "4", "--poll-interval", "0.2", via=via, log=f"{alias}.log")
        for alias in aliases:
            denv.wait_serving(alias, "default")
        yield denv
    finally:
        for proc in denv.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in denv.workers:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for alias in aliases:
            backend(alias).conveyor.close()
        from django.db import connections

        connections.close_all()
        if "postgresql" in stores:
            import asyncio

            from tests.backends import postgres as pg_backend

            asyncio.run(pg_backend.cleanup(env["CONVEYOR_TEST_PG_URL"]))
            with psycopg.connect(PG_SERVER, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(django_schema)))
        if "redis" in stores:
            import asyncio

            from tests.backends import redis as redis_backend

            asyncio.run(redis_backend.cleanup(env["CONVEYOR_TEST_REDIS_URL"]))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "alias" in metafunc.fixturenames:
        stores = [s for s in selected_stores() if s in ALIAS_OF_STORE]
        only = metafunc.definition.get_closest_marker("stores")
        if only is not None:
            stores = [s for s in stores if s in only.args]
        metafunc.parametrize("alias", [ALIAS_OF_STORE[s] for s in stores], ids=stores)
