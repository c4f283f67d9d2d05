"""`conveyor:` task names are Conveyor's own: no public enqueue, registration, cron entry, HTTP call or CLI command
may create them, and nothing is stored when one tries. Only Conveyor's internals (`enqueue_system`) can.

The HTTP and CLI surfaces are covered in tests/server/test_access_matrix.py and tests/cli/test_commands.py; this
file covers the Python API on every store, because the rule lives in the app, below every surface."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from conveyor import Conveyor
from conveyor.enqueue import enqueue_system
from conveyor.errors import ValidationError
from conveyor.model import JobFilter


async def _noop(payload: Any) -> None:
    return None


async def test_public_enqueues_refuse_reserved_names_and_store_nothing(store_url: str) -> None:
    app = Conveyor(store_url)
    app.runtime.register("conveyor:test", _noop, timeout=5, system=True)
    try:
        for call in (
            lambda: app.aenqueue("conveyor:webhook", {"namespace": "victim"}),
            lambda: app.aenqueue("conveyor:test"),
            lambda: app.aenqueue_many([{"task": "ok"}, {"task": "conveyor:x"}]),
        ):
            with pytest.raises(ValidationError) as info:
                await call()
            assert "reserved" in info.value.message and "conveyor:" in info.value.message
            assert info.value.field == "task"
        with pytest.raises(ValidationError, match="reserved"):
            app.build_job("conveyor:webhook")
        page = await app.alist_jobs(JobFilter(), limit=10)
        assert page.total == 0  # the valid first job of the refused batch was not stored either

        job = await enqueue_system(app.runtime, "conveyor:test", {"n": 1})
        assert job.task == "conveyor:test"
    finally:
        await app.aclose()


def test_reserved_names_cannot_be_registered_or_scheduled() -> None:
    app = Conveyor("memory://reserved-register")
    with pytest.raises(ValidationError, match="reserved"):
        app.register("conveyor:webhook", _noop)
    with pytest.raises(ValidationError, match="reserved"):
        app.task("conveyor:mine")(_noop)
    with pytest.raises(ValidationError, match="reserved"):
        app.cron("@hourly", "conveyor:webhook")
    assert "conveyor:webhook" not in app.tasks and not app.schedules
    # the private path takes only reserved names, and only registered ones can be enqueued through it
    with pytest.raises(ValueError):
        app.runtime.register("plain", _noop, timeout=1, system=True)


def test_sync_enqueue_on_callers_sqlite_connection_refuses_reserved(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    app = Conveyor(url)
    app.open()
    try:
        conn = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
        conn.execute("BEGIN")
        with pytest.raises(ValidationError, match="reserved"):
            app.enqueue("conveyor:webhook", {}, connection=conn)
        with pytest.raises(ValidationError, match="reserved"):
            app.enqueue_many([{"task": "conveyor:webhook"}], connection=conn)
        conn.execute("COMMIT")
        conn.close()
        assert app.list_jobs(JobFilter()).total == 0
    finally:
        app.close()
