"""`conveyor worker` as a real process: it runs what `conveyor enqueue` queued, `jobs show` prints the attempts,
and SIGTERM shuts it down gracefully with exit code 0."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable

import pytest

from tests.cli.conftest import SAMPLE_APP, Cli, WorkerProcess, wait_for

StartWorker = Callable[..., WorkerProcess]
SHARED = pytest.mark.stores("sqlite", "postgresql", "redis")  # the memory store cannot be shared with a process


def _status(cli: Cli, job_id: str) -> str:
    status: str = cli.json("jobs", "show", job_id)["job"]["status"]
    return status


@SHARED
def test_enqueue_then_worker_runs_it_and_show_prints_the_attempts(cli: Cli, worker_process: StartWorker) -> None:
    ok_id = cli.ok("enqueue", "echo", '{"hello": "world"}').stdout.strip()
    # enqueued through the app so the task's own max_attempts=1 applies
    bad_id = cli.ok("enqueue", "boom", '{"n": 1}', app=SAMPLE_APP).stdout.strip()
    worker = worker_process(cli.url, "--concurrency", "2", "--poll-interval", "0.2")

    wait_for(lambda: _status(cli, ok_id) == "completed", 60, "the echo job to complete")
    wait_for(lambda: _status(cli, bad_id) == "failed", 60, "the boom job to fail")

    shown = cli.json("jobs", "show", ok_id)
    assert shown["job"]["result"] == {"hello": "world"}
    (attempt,) = shown["attempts"]
    assert attempt["status_code"] == 200 and attempt["outcome"] == "completed" and attempt["try_number"] == 1

    failed = cli.json("jobs", "show", bad_id)
    (attempt,) = failed["attempts"]
    assert attempt["status_code"] == 500 and attempt["outcome"] == "failed"
    assert "boom" in attempt["error"] and "RuntimeError" in attempt["traceback"]
    text = cli.ok("jobs", "show", bad_id).stdout
    assert "Traceback of try #1" in text and "RuntimeError: boom" in text

    live = cli.json("workers")["items"]
    assert len(live) == 1 and live[0]["concurrency"] == 2
    assert cli.json("stats")["success_rate"] == 0.5

    # a dead letter requeued from the CLI runs again (and fails again: max_attempts=1)
    assert cli.json("jobs", "requeue", bad_id)["status"] == "pending"
    wait_for(lambda: len(cli.json("jobs", "show", bad_id)["attempts"]) == 2, 60, "the requeued job to run")

    assert worker.stop() == 0, worker.stderr
    assert "Traceback" not in worker.stderr
    wait_for(lambda: cli.json("workers")["items"] == [], 30, "the worker to unregister")


@SHARED
def test_sigterm_lets_the_running_job_finish(cli: Cli, worker_process: StartWorker) -> None:
    worker = worker_process(cli.url, "--grace-period", "30", "--poll-interval", "0.2")
    job_id = cli.ok("enqueue", "slow", '{"seconds": 2}').stdout.strip()
    wait_for(lambda: _status(cli, job_id) == "processing", 60, "the slow job to start")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.stderr
    assert _status(cli, job_id) == "completed"
    assert cli.json("jobs", "show", job_id)["attempts"][0]["status_code"] == 200


@SHARED
def test_sigterm_after_the_grace_period_hands_the_job_back(cli: Cli, worker_process: StartWorker) -> None:
    worker = worker_process(cli.url, "--grace-period", "0.2", "--poll-interval", "0.2")
    job_id = cli.ok("enqueue", "slow", '{"seconds": 60}').stdout.strip()
    wait_for(lambda: _status(cli, job_id) == "processing", 60, "the slow job to start")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.stderr
    job = cli.json("jobs", "show", job_id)
    assert job["job"]["status"] == "pending"
    assert job["job"]["attempts"] == 0  # handed back without counting an attempt
    assert job["attempts"] == []


def test_demo_worker_prints_the_message(sqlite_cli: Cli, worker_process: StartWorker) -> None:
    cli = sqlite_cli
    worker = worker_process(cli.url, "--demo", "--poll-interval", "0.2", app=None)
    job_id = cli.ok("enqueue", "demo:delay_print", '{"message": "hello from the CLI"}').stdout.strip()
    cli.ok("enqueue", "demo:delay_print")
    wait_for(lambda: "hello from the CLI" in worker.stdout, 60, "the demo line")
    wait_for(lambda: "Job executed successfully" in worker.stdout, 60, "the default demo line")
    assert re.search(r"^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\] hello from the CLI$", worker.stdout, re.M)
    wait_for(lambda: _status(cli, job_id) == "completed", 30, "the demo job to complete")
    worker.signal(signal.SIGINT)
    assert worker.wait() == 0, worker.stderr


@SHARED
def test_worker_only_node_delivers_run_webhooks(cli: Cli, worker_process: StartWorker) -> None:
    """A `conveyor worker` process (no HTTP server anywhere) sends its namespaces' signed run webhooks."""
    import json

    from conveyor.server.notify import verify_webhook
    from tests.server.test_notify import Receiver

    receiver = Receiver()
    try:
        cli.ok(
            "namespaces",
            "create",
            "game",
            "--run-notification",
            "--webhook-url",
            receiver.url,
            "--webhook-secret",
            "s3cret",
            "--webhook-allow-private",  # the receiver is on 127.0.0.1
        )
        job_id = cli.ok("enqueue", "echo", '{"n": 1}', "--namespace", "game", "--user", "p1").stdout.strip()
        worker = worker_process(cli.url, "--poll-interval", "0.2")
        wait_for(lambda: bool(receiver.requests), 60, "the run webhook")
        headers, body = receiver.requests[0]
        assert verify_webhook("s3cret", headers["x-conveyor-signature"], body)
        event = json.loads(body)
        assert event["type"] == "run" and event["jobName"] == job_id
        assert worker.stop() == 0, worker.stderr
    finally:
        receiver.close()
