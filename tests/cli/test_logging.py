"""Log output (issue 15, item 2): the worker says what became of every failed try — a retry at INFO, a dead letter
at WARNING, with the job's id, task and try — and `--log-format json` (or CONVEYOR_LOG_FORMAT=json) makes every
line of every command one JSON object, uvicorn's included; `app.run_worker()` in a plain script shows its start
line as the CLI does. Real processes on a real SQLite file: the point is what an operator's log collector sees."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from conveyor.logs import check_format, check_level, configure, make_handler
from tests.cli.conftest import REPO, SAMPLE_APP, Cli, WorkerProcess, wait_for


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON log line: {line!r}\nall of stderr:\n{text}") from None
    return parsed


def test_json_formatter_writes_extra_fields_and_the_exception() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("conveyor.test-json-formatter")
    logger.propagate = False
    handler = make_handler("json", stream)
    logger.addHandler(handler)
    try:
        try:
            raise ValueError("bad thing")
        except ValueError:
            logger.error("job %s broke", "j1", exc_info=True, extra={"job_id": "j1", "try": 2, "when": object()})
    finally:
        logger.removeHandler(handler)
    (entry,) = _json_lines(stream.getvalue())
    assert entry["level"] == "ERROR" and entry["logger"] == "conveyor.test-json-formatter"
    assert entry["message"] == "job j1 broke" and entry["job_id"] == "j1" and entry["try"] == 2
    assert entry["ts"].endswith("Z") and "ValueError: bad thing" in entry["exc_info"]
    assert isinstance(entry["when"], str)  # not JSON-able: written with str(), never a crash in the logger


def test_bad_format_and_level_are_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="text, json"):
        check_format("xml")
    with pytest.raises(ValueError, match="DEBUG, INFO"):
        check_level("LOUD")
    assert check_format(" JSON ") == "json" and check_level("warning") == logging.WARNING


def test_cli_refuses_an_unknown_log_format(sqlite_cli: Cli) -> None:
    result = sqlite_cli("--log-format", "xml", "jobs", "list")
    assert result.exit_code == 2
    assert "--log-format" in result.output and "text, json" in result.output


def test_configure_routes_uvicorn_loggers_through_the_one_handler() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure("INFO", make_handler("json", stream))
        logging.getLogger("uvicorn.error").info("Uvicorn running on http://127.0.0.1:1")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    (entry,) = _json_lines(stream.getvalue())
    assert entry["logger"] == "uvicorn.error" and entry["message"].startswith("Uvicorn running")


def test_worker_logs_retries_and_dead_letters_as_json(
    sqlite_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flaky = sqlite_cli.ok("enqueue", "flaky", "{}", app=SAMPLE_APP).stdout.strip()
    boom = sqlite_cli.ok("enqueue", "boom", '{"n": 7}', app=SAMPLE_APP).stdout.strip()
    monkeypatch.setenv("CONVEYOR_LOG_FORMAT", "json")
    worker = WorkerProcess(sqlite_cli.url, tmp_path, "--concurrency", "2", "--no-maintenance")
    try:

        def settled() -> bool:
            jobs = {j["id"]: j["status"] for j in sqlite_cli.json("jobs", "list", "--status", "failed")["items"]}
            return jobs.get(flaky) == "failed" and jobs.get(boom) == "failed"

        wait_for(settled, 60, "both jobs dead-lettered")
        wait_for(lambda: worker.stderr.count('"outcome"') >= 3, 30, "the three failure lines")
    finally:
        assert worker.stop() == 0
    entries = _json_lines(worker.stderr)
    started = [e for e in entries if e["message"].startswith("worker ") and " started" in e["message"]]
    assert started, worker.stderr
    by_job = [(e["job_id"], e["try"], e["level"], e["outcome"]) for e in entries if "outcome" in e]
    assert (flaky, 1, "INFO", "retry") in by_job, worker.stderr
    assert (flaky, 2, "WARNING", "failed") in by_job, worker.stderr
    assert (boom, 1, "WARNING", "failed") in by_job, worker.stderr
    dead = next(e for e in entries if e.get("job_id") == boom)
    assert dead["task"] == "boom" and dead["max_attempts"] == 1 and "boom: {'n': 7}" in dead["error"]
    assert "dead letters" in dead["message"] and boom in dead["message"]
    retry = next(e for e in entries if e.get("job_id") == flaky and e["try"] == 1)
    assert retry["retry_at"] and "try again soon" in retry["message"]


def test_worker_text_lines_name_the_job_try_and_error(sqlite_cli: Cli, tmp_path: Path) -> None:
    boom = sqlite_cli.ok("enqueue", "boom", '{"n": 1}', app=SAMPLE_APP).stdout.strip()
    worker = WorkerProcess(sqlite_cli.url, tmp_path, "--no-maintenance")
    try:
        wait_for(lambda: "dead letters" in worker.stderr, 60, "the dead-letter line")
    finally:
        worker.stop()
    line = next(line for line in worker.stderr.splitlines() if "dead letters" in line)
    assert "WARNING" in line and f"job {boom} (boom) try 1/1 failed for good" in line
    assert "RuntimeError: boom" in line


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_json_logs_include_uvicorns_lines(tmp_path: Path) -> None:
    port = _free_port()
    err = tmp_path / "serve.err"
    env = {**os.environ, "CONVEYOR_URL": f"sqlite:///{tmp_path / 'serve.db'}", "CONVEYOR_ADMIN_TOKEN": "t" * 32}
    env.pop("CONVEYOR_APP", None)
    with err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor.cli", "--log-format", "json", "serve", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        wait_for(lambda: "Application startup complete" in err.read_text(), 60, "uvicorn's startup line")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    entries = _json_lines(err.read_text())
    loggers = {e["logger"] for e in entries}
    assert "uvicorn.error" in loggers, entries
    assert any(e["logger"].startswith("conveyor") for e in entries), entries


def test_run_worker_in_a_plain_script_shows_its_start_line(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, signal, threading
            from conveyor import Conveyor
            app = Conveyor("sqlite:///{tmp_path / "script.db"}")

            @app.task("noop")
            def noop(payload):
                return None

            threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
            app.run_worker(maintenance=False)
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "INFO conveyor.worker: worker " in done.stderr and " started: queues=default tasks=noop" in done.stderr
