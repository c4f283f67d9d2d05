"""Fixtures for the CLI tests: drive the real `conveyor` command against real stores.

`cli` runs the command in-process with Typer's CliRunner (fast, parametrised over every selected store through
`store_kind`); `WorkerProcess` runs `conveyor worker` as a real subprocess for signal and end-to-end tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from conveyor.cli import app as cli_app
from tests.conftest import backend

REPO = Path(__file__).resolve().parents[2]
SAMPLE_APP = "tests.cli.sample_app:make_app"


class Cli:
    """`conveyor …` against one store URL, in-process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.runner = CliRunner()

    def __call__(self, *args: str, app: str | None = None, input: str | None = None) -> Result:
        env: dict[str, str | None] = {"CONVEYOR_URL": self.url, "CONVEYOR_APP": app, "COLUMNS": "200"}
        return self.runner.invoke(cli_app, list(args), env=env, input=input, catch_exceptions=False)

    def ok(self, *args: str, app: str | None = None, input: str | None = None) -> Result:
        result = self(*args, app=app, input=input)
        assert result.exit_code == 0, f"conveyor {' '.join(args)} → {result.exit_code}\n{result.output}"
        return result

    def json(self, *args: str, app: str | None = None) -> Any:
        return json.loads(self.ok(*args, "--json", app=app).stdout)


def _fresh(kind: str, tmp_path: Path) -> tuple[str, Callable[[], None]]:
    module = backend(kind)
    url: str = module.fresh_url(tmp_path)
    return url, lambda: asyncio.run(module.cleanup(url))


@pytest.fixture
def cli(store_kind: str, tmp_path: Path) -> Iterator[Cli]:
    """The CLI on a fresh store of every selected kind."""
    url, cleanup = _fresh(store_kind, tmp_path)
    try:
        yield Cli(url)
    finally:
        cleanup()


@pytest.fixture
def sqlite_cli(tmp_path: Path) -> Iterator[Cli]:
    """The CLI on a fresh SQLite file (for tests that need one store only)."""
    url, cleanup = _fresh("sqlite", tmp_path)
    try:
        yield Cli(url)
    finally:
        cleanup()


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll until `condition()` is truthy; no fixed sleeps (the machine is shared with other suites)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class WorkerProcess:
    """`python -m conveyor.cli worker …` as a real process, its output in files."""

    def __init__(self, url: str, tmp_path: Path, *args: str, app: str | None = SAMPLE_APP) -> None:
        self.stdout_path = tmp_path / f"worker-{id(self)}.out"
        self.stderr_path = tmp_path / f"worker-{id(self)}.err"
        env = {**os.environ, "CONVEYOR_URL": url, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
        env.pop("CONVEYOR_APP", None)
        if app:
            env["CONVEYOR_APP"] = app
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "conveyor.cli", "worker", *args], cwd=REPO, env=env, stdout=out, stderr=err
            )

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"worker did not exit within {timeout}s\nstderr:\n{self.stderr}") from None

    def stop(self) -> int:
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait()


@pytest.fixture
def worker_process(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes; any still running at the end of the test are killed."""
    started: list[WorkerProcess] = []

    def start(url: str, *args: str, app: str | None = SAMPLE_APP) -> WorkerProcess:
        proc = WorkerProcess(url, tmp_path, *args, app=app)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.process.poll() is None:
            proc.process.kill()
            proc.process.wait()
