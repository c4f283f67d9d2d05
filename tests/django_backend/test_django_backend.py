"""Django's Tasks API on Conveyor, end to end: `task.enqueue(...)` in this process, real worker processes, results
read back with `task.get_result(id)` / `result.refresh()` (see conftest.py for the project and its stores)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.django_backend.conftest import CONVEYOR, DATABASE_OF_ALIAS, PROJECT, DjangoEnv, backend, finished, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def tasks(django_env: DjangoEnv) -> Any:
    from shop import tasks

    return tasks


def max_attempts(alias: str) -> int:
    return backend(alias).conveyor_options.max_attempts or 3


def test_enqueue_run_and_read_the_result(alias: str, tasks: Any) -> None:
    from conveyor.django._compat import TaskResultStatus, task_backends

    result = tasks.add.using(backend=alias).enqueue(2, 3)
    assert result.status == TaskResultStatus.READY
    assert result.backend == alias
    assert result.args == [2, 3] and result.kwargs == {}
    assert result.enqueued_at is not None and result.enqueued_at.tzinfo is not None
    assert result.started_at is None and result.finished_at is None and result.attempts == 0

    finished(result)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5
    assert result.attempts == 1 and len(result.worker_ids) == 1 and result.errors == []
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.last_attempted_at == result.started_at

    again = tasks.add.using(backend=alias).get_result(result.id)
    assert (again.id, again.status, again.return_value) == (result.id, TaskResultStatus.SUCCESSFUL, 5)
    assert task_backends[alias].get_result(result.id).return_value == 5
    job = backend(alias).conveyor.get_job(result.id)
    assert job is not None and job.task == "shop.tasks.add" and job.payload == {"args": [2, 3], "kwargs": {}}


def test_arguments_and_return_values_are_normalised_as_json(alias: str, tasks: Any) -> None:
    result = finished(tasks.echo.using(backend=alias).enqueue(1, (2, 3), key={"nested": (4, b"five")}))
    assert result.args == [1, [2, 3]]
    assert result.kwargs == {"key": {"nested": [4, "five"]}}
    assert result.return_value == {"args": [1, [2, 3]], "kwargs": {"key": {"nested": [4, "five"]}}}


def test_failing_tasks_record_each_try_with_its_exception_class_and_traceback(alias: str, tasks: Any) -> None:
    from shop.errors import PaymentDeclined

    from conveyor import Fail
    from conveyor.django._compat import TaskResultStatus

    tries = max_attempts(alias)
    # Enqueued together and awaited together: their retries' backoff overlaps.
    boom = tasks.boom.using(backend=alias).enqueue("bad input")
    declined = tasks.declined.using(backend=alias).enqueue()
    not_json = tasks.not_json.using(backend=alias).enqueue()
    fail_now = tasks.fail_now.using(backend=alias).enqueue()
    for result in (boom, declined, not_json, fail_now):
        finished(result, timeout=60)
        assert result.status == TaskResultStatus.FAILED

    assert boom.attempts == tries and len(boom.errors) == tries
    for error in boom.errors:
        assert error.exception_class is ValueError
        assert error.exception_class_path == "builtins.ValueError"
        assert "raise ValueError(message)" in error.traceback
        assert error.traceback.rstrip().endswith("ValueError: bad input")
        assert "[conveyor.django]" not in error.traceback  # the worker's note is taken out
    with pytest.raises(ValueError, match="Task failed"):
        _ = boom.return_value

    assert declined.errors[-1].exception_class is PaymentDeclined
    assert declined.errors[-1].exception_class_path == "shop.errors.PaymentDeclined"
    assert not_json.errors[-1].exception_class is TypeError  # a return value JSON cannot hold fails the try
    assert fail_now.attempts == 1  # conveyor.Fail: no more tries
    assert fail_now.errors[0].exception_class is Fail and "no such customer" in fail_now.errors[0].traceback


@pytest.mark.stores("sqlite", "postgresql")  # the redis backend gives up after one try
def test_a_retried_task_is_ready_again_between_tries(alias: str, tasks: Any) -> None:
    from conveyor.django._compat import TaskResultStatus

    result = tasks.flaky.using(backend=alias).enqueue()
    seen: list[tuple[str, int]] = []

    def done() -> bool:
        result.refresh()
        seen.append((str(result.status), len(result.errors)))
        return bool(result.is_finished)

    wait_for(done, 60, "flaky to finish")
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 2
    assert result.attempts == 2 and [e.exception_class for e in result.errors] == [RuntimeError]
    assert ("READY", 1) in seen  # waiting for its second try: ready again, with the first try's error


def test_a_task_with_context_sees_its_running_result(alias: str, tasks: Any) -> None:
    result = finished(tasks.whoami.using(backend=alias).enqueue("hello"))
    value = result.return_value
    assert value["id"] == result.id and value["attempt"] == 1 and value["status"] == "RUNNING"
    assert value["args"] == ["hello"] and value["tag"] == "hello"
    assert value["worker_ids"] == result.worker_ids


async def test_async_tasks_and_the_async_api(alias: str, tasks: Any) -> None:
    from conveyor.django._compat import TaskResultStatus

    result = await tasks.async_add.using(backend=alias).aenqueue(20, 22)
    deadline = time.monotonic() + 30
    while not result.is_finished:
        assert time.monotonic() < deadline, "async_add did not finish"
        await result.arefresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 42
    again = await tasks.async_add.using(backend=alias).aget_result(result.id)
    assert again.return_value == 42

    from shop.models import Order

    database = DATABASE_OF_ALIAS[alias]
    await Order.objects.using(database).acreate(item="async")
    count = await Order.objects.using(database).acount()
    counted = await tasks.async_count.using(backend=alias).aenqueue(database)
    deadline = time.monotonic() + 30
    while not counted.is_finished:
        assert time.monotonic() < deadline, "async_count did not finish"
        await counted.arefresh()
    assert counted.return_value >= count  # the worker's ORM reads the same database


def test_unknown_foreign_and_mismatched_ids(alias: str, tasks: Any) -> None:
    from conveyor.django._compat import TaskResultDoesNotExist

    try:
        from django.tasks.exceptions import TaskResultMismatch
    except ImportError:
        from django_tasks.exceptions import TaskResultMismatch

    chosen = backend(alias)
    with pytest.raises(TaskResultDoesNotExist, match="no task result"):
        chosen.get_result("no-such-id")
    with pytest.raises(TaskResultDoesNotExist):
        tasks.add.using(backend=alias).get_result(str(uuid.uuid4()))
    native = chosen.conveyor.enqueue("native.task", {"x": 1}, queue="nobody-serves-this")
    with pytest.raises(TaskResultDoesNotExist, match="not a Django task"):
        chosen.get_result(native.id)
    echoed = tasks.echo.using(backend=alias).enqueue("x")
    with pytest.raises(TaskResultMismatch):
        tasks.add.using(backend=alias).get_result(echoed.id)


def test_invalid_tasks_are_refused_before_anything_is_stored(alias: str, tasks: Any) -> None:
    from conveyor.django._compat import InvalidTask

    chosen = backend(alias)
    before = chosen.conveyor.stats().total
    with pytest.raises(InvalidTask, match="not a valid Conveyor queue name"):
        tasks.add.using(backend=alias, queue_name="no spaces allowed")
    with pytest.raises(InvalidTask, match="priority"):
        tasks.add.using(backend=alias, priority=101)
    with pytest.raises(InvalidTask, match="aware"):
        tasks.add.using(backend=alias, run_after=datetime.now() + timedelta(hours=1))
    with pytest.raises(TypeError):
        tasks.add.using(backend=alias).enqueue(object(), 1)
    assert chosen.conveyor.stats().total == before


def test_priorities_run_highest_first(alias: str, tasks: Any, django_env: DjangoEnv) -> None:
    queue = f"prio-{uuid.uuid4().hex[:8]}"
    priorities = [-100, 0, 50, 100, -10, 50]
    results = [
        tasks.started.using(backend=alias, queue_name=queue, priority=p).enqueue(f"{i}:{p}")
        for i, p in enumerate(priorities)
    ]
    for result, priority in zip(results, priorities, strict=True):
        job = backend(alias).conveyor.get_job(result.id)
        assert job is not None and job.priority == -priority and job.queue == queue
        assert result.task.priority == priority and result.task.queue_name == queue
    worker = django_env.start_worker(alias, "-q", queue, "-c", "1")
    try:
        for result in results:
            finished(result, timeout=60)
    finally:
        assert django_env.stop(worker) == 0
    order = [r.return_value["label"] for r in sorted(results, key=lambda r: r.started_at)]
    assert order == ["3:100", "2:50", "5:50", "1:0", "4:-10", "0:-100"]  # equal priorities: first enqueued first


def test_run_after_defers_the_task(alias: str, tasks: Any) -> None:
    from conveyor.django._compat import TaskResultStatus

    run_after = datetime.now(UTC) + timedelta(seconds=2)
    result = tasks.add.using(backend=alias, run_after=run_after).enqueue(1, 1)
    job = backend(alias).conveyor.get_job(result.id)
    assert job is not None and abs((job.run_at - run_after).total_seconds()) < 0.001
    time.sleep(1.0)
    result.refresh()
    assert result.status == TaskResultStatus.READY
    finished(result)
    assert result.return_value == 2
    assert result.started_at >= run_after


def test_a_task_can_enqueue_another(alias: str, tasks: Any) -> None:
    parent = finished(tasks.enqueue_child.using(backend=alias).enqueue(41, alias))
    child = finished(tasks.add.using(backend=alias).get_result(parent.return_value))
    assert child.return_value == 42


def test_tasks_outside_tasks_modules_run_when_listed_in_task_modules(alias: str, django_env: DjangoEnv) -> None:
    from shop.extra import shout

    assert finished(shout.using(backend=alias).enqueue("hey")).return_value == "HEY"


def test_a_cancelled_job_is_a_failed_result(alias: str, tasks: Any) -> None:
    from conveyor.django import TaskCancelled
    from conveyor.django._compat import TaskResultStatus

    result = tasks.add.using(backend=alias, queue_name=f"idle-{uuid.uuid4().hex[:8]}").enqueue(1, 2)
    backend(alias).conveyor.cancel(result.id)
    result.refresh()
    assert result.status == TaskResultStatus.FAILED and result.is_finished
    assert result.errors[-1].exception_class is TaskCancelled


# ---- transactions -------------------------------------------------------------------------------------------------


@pytest.mark.stores("sqlite", "postgresql")
def test_an_enqueue_inside_atomic_commits_and_rolls_back_with_the_transaction(alias: str, tasks: Any) -> None:
    from django.db import transaction
    from shop.models import Order

    from conveyor.django._compat import TaskResultDoesNotExist, TaskResultStatus

    database = DATABASE_OF_ALIAS[alias]
    app = backend(alias).conveyor
    read_order = tasks.read_order.using(backend=alias)

    # Rolled back: neither the order nor the job ever existed.
    with pytest.raises(RuntimeError), transaction.atomic(using=database):
        order = Order.objects.using(database).create(item="ghost")
        ghost = read_order.enqueue(order.pk, database)
        raise RuntimeError("roll back")
    assert app.get_job(ghost.id) is None
    with pytest.raises(TaskResultDoesNotExist):
        read_order.get_result(ghost.id)

    # Committed: no worker sees the job before the commit (so it never finds the order missing); then it runs.
    with transaction.atomic(using=database):
        order = Order.objects.using(database).create(item="sword")
        result = read_order.enqueue(order.pk, database)
        time.sleep(0.6)  # several polls of the worker (0.2 s), and a LISTEN/NOTIFY wake-up would come at once
        assert app.get_job(result.id) is None  # not visible outside the transaction
    finished(result)
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == "sword"

    # A savepoint rolled back takes its job with it; the outer transaction keeps its own.
    with transaction.atomic(using=database):
        kept = read_order.enqueue(order.pk, database)
        with pytest.raises(RuntimeError), transaction.atomic(using=database):
            dropped = read_order.enqueue(order.pk, database)
            raise RuntimeError("roll back the savepoint")
    assert finished(kept).return_value == "sword"
    assert app.get_job(dropped.id) is None


@pytest.mark.stores("redis")
def test_without_a_database_an_enqueue_inside_atomic_is_committed_at_once(alias: str, tasks: Any) -> None:
    from django.db import transaction

    app = backend(alias).conveyor
    with pytest.raises(RuntimeError), transaction.atomic():
        result = tasks.add.using(backend=alias).enqueue(1, 2)
        raise RuntimeError("roll back")
    assert app.get_job(result.id) is not None  # Django's advice applies: use transaction.on_commit
    assert finished(result).return_value == 3


# ---- the database and the worker commands ---------------------------------------------------------------------------


def test_migrate_creates_conveyor_tables_in_the_django_database(django_env: DjangoEnv) -> None:
    with sqlite3.connect(django_env.env["DJANGO_TEST_SQLITE"]) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"shop_order", "conveyor_jobs", "conveyor_attempts"} <= tables


def test_the_management_command_shuts_down_gracefully(tasks: Any, django_env: DjangoEnv) -> None:
    from conveyor.django._compat import TaskResultStatus

    queue = f"grace-{uuid.uuid4().hex[:8]}"
    worker = django_env.start_worker("default", "-q", queue, "-c", "1", "--grace-period", "20")
    result = tasks.sleep_for.using(queue_name=queue).enqueue(1.5)

    def running() -> bool:
        result.refresh()
        return bool(result.status == TaskResultStatus.RUNNING)

    wait_for(running, 60, "the task to start")
    assert django_env.stop(worker) == 0  # SIGTERM: the running task finishes within the grace period
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 1.5


def test_worker_commands_say_what_is_wrong(django_env: DjangoEnv) -> None:
    env = dict(django_env.env)
    bad = subprocess.run(
        [sys.executable, "manage.py", "conveyor_worker", "--backend", "nope"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "no backend 'nope'" in bad.stderr

    no_settings = {k: v for k, v in env.items() if k != "DJANGO_SETTINGS_MODULE"}
    cli = subprocess.run(
        [CONVEYOR, "--app", "conveyor.django", "worker"],
        cwd=PROJECT,
        env=no_settings,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 1 and "DJANGO_SETTINGS_MODULE" in cli.stderr


def test_a_job_cannot_make_a_process_import_or_call_what_it_names(
    alias: str, django_env: DjangoEnv, tasks: Any
) -> None:
    """Workers run only declared tasks: a job naming any other function (through Conveyor's API, the admin UI…)
    is never even claimed — workers claim only the tasks they registered — so it stays pending with no attempt,
    and neither the worker nor get_result imports the module it names."""
    from conveyor import JobStatus
    from conveyor.django._compat import TaskResultDoesNotExist

    marker = Path(django_env.env["DJANGO_TEST_SQLITE"])
    app = backend(alias).conveyor
    jobs = [
        app.enqueue(name, {"args": ["x"], "kwargs": {}}, max_attempts=1)
        for name in ("shop.sideeffect.run", "os.system", "shop.models.Order.delete")
    ]
    finished(tasks.add.using(backend=alias).enqueue(2, 3))  # enqueued after them: the workers claimed past them
    for job in jobs:
        stored = app.get_job(job.id)
        assert stored is not None and (stored.status, stored.attempts) == (JobStatus.PENDING, 0), stored
        assert app.attempts(job.id) == []
        with pytest.raises(TaskResultDoesNotExist):
            backend(alias).get_result(job.id)
    assert "shop.sideeffect" not in sys.modules
    assert not Path(f"{marker}.sideeffect-imported").exists() and not Path(f"{marker}.sideeffect-ran").exists()
