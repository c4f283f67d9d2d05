"""Events cross processes (issue 11 item 6, conveyor.relay): a real `conveyor serve --no-worker` process streams,
over SSE, the push and run events of jobs that were enqueued by another process (the test's CLI) and run by a
separate `conveyor worker` process — each exactly once per connection — and a transactional enqueue's push event
only after the caller commits.

Robust without being weaker: the server subscribes to the store before it reports healthy, the SSE stream is read
until its `: connected` line before anything is enqueued, and every wait is for a condition (generous deadlines on
a shared machine), never for a fixed time — except the check that nothing arrives twice or before a commit, which
waits a fixed settle time after the expected event, as a negative can only be checked that way.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from tests.cli.conftest import SAMPLE_APP, Cli, wait_for
from tests.cli.test_worker_process import StartWorker
from tests.server.test_notify import EventReader
from tests.server.test_serve_process import ServeProcess

ADMIN = "events-admin-token"
SETTLE = 1.0  # after the expected events: time for a duplicate (or an early event) to show up if there were one


@pytest.fixture
def serve(cli: Cli) -> Iterator[ServeProcess]:
    server = ServeProcess(
        cli.url, "--no-worker", env={"CONVEYOR_ADMIN_TOKEN": ADMIN, "CONVEYOR_APP": SAMPLE_APP, "CONVEYOR_URL": cli.url}
    )
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.stop()


def _stream(server: ServeProcess, **params: str) -> EventReader:
    return EventReader(SimpleNamespace(base_url=server.base_url), ADMIN, **params)  # type: ignore[arg-type]


def _of(reader: EventReader, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [(kind, data) for kind, data in reader.events if data.get("jobName") == job_id]


@pytest.mark.stores("sqlite", "postgresql", "redis")
def test_sse_streams_events_of_jobs_enqueued_and_run_by_other_processes(
    cli: Cli, serve: ServeProcess, worker_process: StartWorker
) -> None:
    stream = _stream(serve)
    filtered = _stream(serve, user_id="p1", types="run")
    try:
        elsewhere = cli.ok("enqueue", "echo", '{"n": 1}', "--user", "p1").stdout.strip()  # another process
        here = httpx.post(
            serve.base_url + "/api/v1/namespaces/default/users/p2/jobs",
            json={"jobs": [{"task": "echo", "payload": {"n": 2}}]},
            headers={"Authorization": f"Bearer {ADMIN}"},
        ).json()["items"][0]["id"]  # the server's own push
        wait_for(lambda: {k for k, _ in _of(stream, elsewhere)} == {"push"}, 60, "the push of a job enqueued elsewhere")
        worker = worker_process(cli.url, "--poll-interval", "0.2")
        wait_for(lambda: len(_of(stream, elsewhere)) >= 2 and len(_of(stream, here)) >= 2, 60, "both run events")
        wait_for(lambda: len(filtered.events) >= 1, 30, "the run event on the filtered stream")
        time.sleep(SETTLE)
        assert Counter((k, d["jobName"]) for k, d in stream.events if d.get("jobName") in (elsewhere, here)) == {
            ("push", elsewhere): 1,
            ("run", elsewhere): 1,
            ("push", here): 1,
            ("run", here): 1,
        }, stream.events
        run = next(d for k, d in _of(stream, elsewhere) if k == "run")
        assert run["statusCode"] == 200 and run["outcome"] == "completed" and run["userId"] == "p1"
        assert run["namespaceName"] == "default" and run["task"] == "echo" and run["tryNumber"] == 1
        assert run["startedAt"] and run["runAt"] and run["at"].endswith("Z")
        assert [(k, d["jobName"]) for k, d in filtered.events] == [("run", elsewhere)]
        assert worker.stop() == 0, worker.stderr
    finally:
        stream.close()
        filtered.close()


@pytest.mark.stores("sqlite", "postgresql")
def test_a_transactional_enqueue_is_streamed_after_its_commit(cli: Cli, serve: ServeProcess, tmp_path: Path) -> None:
    from conveyor import Conveyor

    stream = _stream(serve)
    app = Conveyor(cli.url)
    try:
        conn, begin = _caller_connection(cli.url)
        try:
            begin()
            job = app.enqueue("echo", {"tx": 1}, user_id="p3", connection=conn)
            time.sleep(SETTLE)
            assert _of(stream, job.id) == []  # not committed yet: nobody may hear of it
            conn.commit()
            wait_for(lambda: _of(stream, job.id), 60, "the push after the commit")
            begin()
            rolled_back = app.enqueue("echo", {"tx": 2}, user_id="p3", connection=conn)
            conn.rollback()
            time.sleep(SETTLE)
            assert [k for k, _ in _of(stream, job.id)] == ["push"]
            assert _of(stream, rolled_back.id) == []
        finally:
            conn.close()
    finally:
        app.close()
        stream.close()


def _caller_connection(url: str) -> tuple[Any, Callable[[], object]]:
    """The application's own connection to the store's database, and how it opens a transaction."""
    if url.startswith("sqlite"):
        import sqlite3

        from conveyor.store.sqlite.url import parse_sqlite_url

        lite = sqlite3.connect(parse_sqlite_url(url)[0])
        return lite, lambda: lite.execute("BEGIN")
    import psycopg

    from conveyor.store.postgres.url import read_url

    pg = psycopg.connect(read_url(url)[0])
    return pg, lambda: pg.execute("SELECT 1")
