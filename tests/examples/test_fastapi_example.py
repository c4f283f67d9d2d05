"""examples/fastapi_app.py, run as a user would: under uvicorn, with its in-process worker, on every shared store;
and docs/fastapi.md shows that very file."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conveyor import Conveyor

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLE = ROOT / "examples" / "fastapi_app.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_docs_show_the_example_file() -> None:
    page = (ROOT / "docs" / "fastapi.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert EXAMPLE.read_text() in blocks


@pytest.mark.slow
@pytest.mark.stores("sqlite", "postgresql", "redis")
def test_the_fastapi_example_enqueues_and_runs_jobs_in_process(store_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "CONVEYOR_URL": store_url, "PYTHONPATH": str(ROOT)}
    log = open(tmp_path / "uvicorn.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.fastapi_app:api", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "uvicorn.log").read_text()
            try:
                created = httpx.post(f"{base}/thumbnails", json={"image": "cat.png", "width": 64}, timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.1)
        assert created.status_code == 202, created.text
        job_id = created.json()["job_id"]
        assert created.json()["status"] == "pending"

        deadline = time.monotonic() + 30
        while True:
            body = httpx.get(f"{base}/jobs/{job_id}", timeout=5).json()
            if body["status"] == "completed":
                break
            assert body["status"] in ("pending", "processing"), body
            assert time.monotonic() < deadline, f"the job did not complete: {body}"
            time.sleep(0.05)
        assert body["result"] == {"url": "cat.png?w=64", "attempt": 1}
        assert httpx.get(f"{base}/jobs/nope", timeout=5).status_code == 404
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        code = server.wait(60)
    output = (tmp_path / "uvicorn.log").read_text()
    # uvicorn shuts down on SIGTERM, then raises the signal again so the exit status tells it: -SIGTERM.
    assert code in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output and "Traceback" not in output, output
    with Conveyor(store_url) as app:
        assert app.list_workers() == []  # the lifespan stopped its worker, which deregistered
