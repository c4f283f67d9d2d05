"""`app.run_worker()` from plain sync code after the app was already used synchronously (its calls then run on a
private portal loop in another thread, and so does the worker): SIGTERM still shuts the worker down gracefully,
because the main thread forwards the signal. A real process, a real signal, a real SQLite file."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from conveyor import Conveyor, JobStatus
from tests.conformance.worker_support import PYTHON, REPO

SCRIPT = """
import logging, sys, time
from pathlib import Path
from conveyor import Conveyor

logging.basicConfig(level=logging.INFO)

app = Conveyor(sys.argv[1])
started = Path(sys.argv[2])

@app.task("slow")
def slow(payload):
    started.write_text("started")
    time.sleep(1.5)
    return "finished"

app.enqueue("slow")  # sync use first: the app now lives on its portal loop
app.run_worker(grace_period=20, poll_interval=0.1)
print("worker returned", flush=True)
"""


def _wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_sigterm_stops_a_sync_run_worker_gracefully(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db"
    started = tmp_path / "started"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")])}
    proc = subprocess.Popen(
        [PYTHON, "-c", SCRIPT, url, str(started)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        _wait_for(started)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    assert b"worker returned" in out
    assert b"stopping" in err  # the worker's graceful-shutdown log line
    app = Conveyor(url)
    try:
        (job,) = app.list_jobs().items
        assert job.status is JobStatus.COMPLETED and job.result == "finished"  # finished within the grace period
        assert app.list_workers() == []  # unregistered on the way out
    finally:
        app.close()


def test_the_previous_handlers_come_back_after_run_worker(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db"
    code = (
        "import signal, sys, threading\n"
        "from conveyor import Conveyor\n"
        "app = Conveyor(sys.argv[1])\n"
        "app.enqueue('nothing')\n"
        "def mine(*a): pass\n"
        "signal.signal(signal.SIGTERM, mine)\n"
        "from conveyor.worker import Worker\n"
        "def interrupt():\n"
        "    import time\n"
        "    probe = Conveyor(sys.argv[1])\n"
        "    while not probe.list_workers():  # the worker has started (its handlers are installed)\n"
        "        time.sleep(0.05)\n"
        "    probe.close()\n"
        "    signal.raise_signal(signal.SIGINT)\n"
        "threading.Thread(target=interrupt, daemon=True).start()\n"
        "app.run_worker(grace_period=1, poll_interval=0.1)\n"
        "assert signal.getsignal(signal.SIGTERM) is mine\n"
        "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler\n"
        "print('restored')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")])}
    done = subprocess.run([PYTHON, "-c", code, url], cwd=REPO, env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert b"restored" in done.stdout
