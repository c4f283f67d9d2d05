"""Worker processes for fault runs: the real `conveyor worker` command with the recording app (fault_app.py),
optionally inside a network-namespace host, logging to a file of its own."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tests.faults.fault_app import TASK
from tests.faults.lab import Lab

REPO = Path(__file__).resolve().parents[2]
_VENV_BIN = REPO / ".venv" / "bin"
PYTHON = str(_VENV_BIN / "python") if (_VENV_BIN / "python").exists() else sys.executable
APP = "tests.faults.fault_app:make_app"

__all__ = ["APP", "TASK", "WorkerProcess"]


class WorkerProcess:
    """One `conveyor worker` process. `worker_id` is passed with --id, so attempts and logs name it."""

    def __init__(
        self,
        lab: Lab,
        url: str,
        worker_id: str,
        *,
        lease: float,
        concurrency: int = 10,
        prefix: Sequence[str] = (),
        extra: Sequence[str] = (),
        store_options: dict[str, object] | None = None,
    ) -> None:
        self.lab = lab
        self.url = url
        self.worker_id = worker_id
        self.log_path = lab.dir / "logs" / f"{worker_id}.log"
        self.log_path.parent.mkdir(exist_ok=True)
        argv = [PYTHON, "-m", "conveyor.cli", "--app", APP, "worker", "--lease", str(lease), "--id", worker_id,
                "--concurrency", str(concurrency), "--log-level", "INFO", *extra]  # fmt: skip
        env = {
            **os.environ,
            "CONVEYOR_URL": url,
            "FAULTLAB_DIR": str(lab.dir / "side"),
            "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
            "PYTHONUNBUFFERED": "1",
            "FAULTLAB_STORE_OPTIONS": json.dumps(store_options or {}),
        }
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*prefix, *argv], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        lab.record_process(self.pid, worker_id)
        self.started_at = time.time()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> float:
        """SIGKILL; returns the time.time() of the signal."""
        at = time.time()
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        return at

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (graceful: running jobs finish, pending completions are flushed), SIGKILL after `timeout`."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return self.proc.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def refused(self) -> list[str]:
        """Job ids whose report this worker sent and the store refused (the worker logs a warning for each; the
        older wording is matched too, for runs of the harness on older code)."""
        return re.findall(r"job ([0-9a-f-]{36})\b[^\n]*?(?:outcome not applied|stale claim refused)", self.log())

    def started(self) -> bool:
        return "started: queues=" in self.log()
