"""The CLI in an 80-column terminal and the small things a new user trips over (issue 15, item 5): `jobs list`
fits 80 columns with whole ids (`--wide` for every column), flags show no `<bool>`, namespaces show yes/no, a
refused delete names `--force`, unknown namespaces and queues are warned about, a busy port fails before the
banner with its own exit code, and a wrong PostgreSQL port fails at once with one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner, Result

from conveyor.cli import app as cli_app
from conveyor.cli.jobs import job_columns
from tests.cli.conftest import REPO, Cli


def at_80(url: str, *args: str) -> Result:
    env: dict[str, str | None] = {"CONVEYOR_URL": url, "CONVEYOR_APP": None, "COLUMNS": "80"}
    return CliRunner().invoke(cli_app, list(args), env=env, catch_exceptions=False)


def test_columns_are_chosen_by_priority() -> None:
    assert job_columns(80) == ["id", "task", "status", "tries", "created"]
    assert job_columns(40) == ["id"]
    assert job_columns(500) == ["id", "task", "status", "tries", "ns/queue", "user", "run at (UTC)", "created"]
    assert job_columns(40, wide=True) == job_columns(500)


def test_jobs_list_fits_80_columns_with_whole_ids(sqlite_cli: Cli) -> None:
    ids = [
        sqlite_cli.ok("enqueue", "a-task-with-a-rather-long-name", "{}", "--namespace", "default").stdout.strip()
        for _ in range(3)
    ]
    result = at_80(sqlite_cli.url, "jobs", "list")
    assert result.exit_code == 0, result.output
    table = [line for line in result.stdout.splitlines() if not line.startswith("Next page")]
    assert all(len(line) <= 80 for line in table), "\n".join(f"{len(line)}: {line}" for line in table)
    for job_id in ids:
        assert job_id in result.stdout
    header = next(line for line in table if " id " in f" {line} ")
    for column in ("status", "tries", "created"):
        assert column in header
    assert "pending" in result.stdout

    wide = at_80(sqlite_cli.url, "jobs", "list", "--wide")
    assert wide.exit_code == 0
    assert "a-task-with-a-rather-long-name" in wide.stdout and "default/default" in wide.stdout
    assert "run at (UTC)" in wide.stdout


def test_help_shows_no_bool_beside_flags() -> None:
    env = {**os.environ, "COLUMNS": "80"}
    for args, flag in (
        (["--help"], "--version"),
        (["jobs", "list", "--help"], "--json"),
        (["worker", "--help"], "--demo"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "conveyor.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, check=True
        )
        assert flag in done.stdout and "<bool>" not in done.stdout, done.stdout
        assert "<int" in done.stdout or "<str>" in done.stdout  # options that take a value still say what it is


def test_namespaces_show_prints_yes_and_no(sqlite_cli: Cli) -> None:
    out = sqlite_cli.ok("namespaces", "show", "default").stdout
    assert "auto_run" in out and "yes" in out
    assert "True" not in out and "False" not in out


def test_a_refused_delete_names_force(sqlite_cli: Cli) -> None:
    job_id = sqlite_cli.ok("enqueue", "x", "{}").stdout.strip()
    sqlite_cli.ok("jobs", "cancel", job_id)
    refused = sqlite_cli("jobs", "delete", job_id)
    assert refused.exit_code == 1 and "--force" in refused.stderr
    assert "Deleted" in sqlite_cli.ok("jobs", "delete", job_id, "--force").stdout


def test_unknown_namespace_and_queue_are_warned_about(sqlite_cli: Cli) -> None:
    enqueued = sqlite_cli.ok("enqueue", "x", "{}", "--namespace", "gmae")
    assert "namespace 'gmae' does not exist" in enqueued.stderr
    paused = sqlite_cli.ok("queues", "pause", "emials")
    assert "queue 'emials' has no jobs and no settings" in paused.stderr
    elsewhere = sqlite_cli.ok("queues", "pause", "q", "--namespace", "nope")
    assert "namespace 'nope' does not exist" in elsewhere.stderr
    known = sqlite_cli.ok("enqueue", "x", "{}", "--queue", "emails")
    assert "does not exist" not in known.stderr
    assert "no jobs and no settings" not in sqlite_cli.ok("queues", "pause", "emails").stderr


def test_a_busy_port_fails_before_the_banner_with_exit_5(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "CONVEYOR_URL": f"sqlite:///{tmp_path / 'busy.db'}"}
        env.pop("CONVEYOR_APP", None)
        done = subprocess.run(
            [sys.executable, "-m", "conveyor.cli", "serve", "--port", str(port)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 5, done.stderr
    assert done.stdout == "", "nothing (no banner, no admin token) is printed before the port is ours"
    assert done.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port} (Address already in use); is another server running there? "
        "Stop it, or pick another port with --port"
    ]
    assert not (tmp_path / "busy.db").exists(), "the store is not even opened"


def test_a_wrong_postgresql_port_fails_at_once_with_one_line() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.monotonic()
    result = at_80(f"postgresql://postgres@127.0.0.1:{port}/test", "jobs", "list")
    elapsed = time.monotonic() - start
    assert result.exit_code == 4
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: PostgreSQL is unavailable"), result.stderr
    assert "Connection refused" in lines[0]
    assert elapsed < 2.0, f"took {elapsed:.2f} s"
