"""The backend's settings and its mapping of Conveyor attempt records to Django TaskErrors, without workers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from conveyor.model import Attempt, AttemptOutcome
from tests.django_backend.conftest import DjangoEnv


@pytest.fixture
def configured(django_env: DjangoEnv) -> None:
    return None


def attempt(outcome: AttemptOutcome, status_code: int, error: str | None = None, tb: str | None = None) -> Attempt:
    now = datetime.now(UTC)
    return Attempt("j", 1, outcome, status_code, now, now, "w", None, error, tb)


def test_options_are_checked_and_defaulted(configured: None, tmp_path: Any) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from conveyor.django.config import parse_options

    derived = parse_options("default", {})
    assert derived.url.startswith("sqlite:////") and derived.database == "default"
    assert derived.max_attempts is None and derived.timeout == 300.0 and derived.namespace == "default"
    explicit = parse_options("x", {"URL": "redis://127.0.0.1:6379/0", "MAX_ATTEMPTS": 5, "TIMEOUT": 60})
    assert explicit.database is None and explicit.max_attempts == 5 and explicit.timeout == 60.0

    for options, words in [
        ({"URLS": "x"}, "unknown key(s) 'URLS'"),
        ({"URL": "jobs.db"}, "Conveyor store URL"),
        ({"MAX_ATTEMPTS": 0}, "MAX_ATTEMPTS"),
        ({"TIMEOUT": -1}, "TIMEOUT"),
        ({"TASK_MODULES": "shop.extra"}, "list of module names"),
        ({"NAMESPACE": "no spaces"}, "NAMESPACE"),
        ({"URL": "redis://127.0.0.1:6379/0", "DATABASE": "default"}, "not SQLite or PostgreSQL"),
        ({"DATABASE": "missing"}, "no database 'missing'"),
    ]:
        with pytest.raises(ImproperlyConfigured, match=words.replace("(", r"\(").replace(")", r"\)")):
            parse_options("x", options)


def test_store_urls_derived_from_django_databases(configured: None) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from conveyor.django.config import url_for_database

    pg = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "shop",
        "USER": "app",
        "PASSWORD": "p@ss:w/rd",
        "HOST": "db.internal",
        "PORT": 6432,
        "OPTIONS": {"sslmode": "require", "server_side_binding": True},
    }
    socket = {"ENGINE": "django.db.backends.postgresql", "NAME": "shop", "HOST": "/var/run/postgresql"}
    databases = {
        "pg": pg,
        "socket": socket,
        "mem": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
        "maria": {"ENGINE": "django.db.backends.mysql", "NAME": "shop"},
    }
    assert url_for_database("pg", databases=databases) == (
        "postgresql://app:p%40ss%3Aw%2Frd@db.internal:6432/shop?sslmode=require"
    )
    assert url_for_database("socket", databases=databases) == "postgresql:///shop?host=%2Fvar%2Frun%2Fpostgresql"
    with pytest.raises(ImproperlyConfigured, match="in-memory SQLite"):
        url_for_database("mem", databases=databases)
    with pytest.raises(ImproperlyConfigured, match="PostgreSQL and SQLite"):
        url_for_database("maria", databases=databases)


def test_failed_tries_become_task_errors(configured: None) -> None:
    from conveyor import Retry
    from conveyor.django import TaskCancelled, TaskLost
    from conveyor.django.results import NOTE_PREFIX, task_error
    from conveyor.errors import TaskNotRegistered

    tb = 'Traceback (most recent call last):\n  File "x.py", line 1, in f\nshop.errors.PaymentDeclined: no\n'
    noted = task_error(attempt(AttemptOutcome.RETRY, 500, "PaymentDeclined: no", tb + f"{NOTE_PREFIX}shop.errors.X\n"))
    assert noted.exception_class_path == "shop.errors.X" and noted.traceback == tb
    assert task_error(attempt(AttemptOutcome.FAILED, 500, "PaymentDeclined: no", tb)).exception_class_path == (
        "shop.errors.PaymentDeclined"
    )
    lost = task_error(attempt(AttemptOutcome.LOST, 0, "lease expired"))
    assert lost.exception_class is TaskLost and lost.traceback == "lease expired"
    assert task_error(attempt(AttemptOutcome.CANCELLED, 499, "cancelled")).exception_class is TaskCancelled
    assert task_error(attempt(AttemptOutcome.TIMEOUT, 504, "TimeoutError: late")).exception_class is TimeoutError
    assert task_error(attempt(AttemptOutcome.FAILED, 500, "TaskNotRegistered: x")).exception_class is (
        TaskNotRegistered
    )
    assert task_error(attempt(AttemptOutcome.RETRY, 503, "retry requested")).exception_class is Retry
    nested = (
        "ExceptionGroup: two (2 sub-exceptions)\n"
        + f"{NOTE_PREFIX}builtins.ExceptionGroup\n"
        + (f"  | {NOTE_PREFIX}builtins.ValueError\n")
    )
    assert task_error(attempt(AttemptOutcome.FAILED, 500, "x", nested)).exception_class is ExceptionGroup
