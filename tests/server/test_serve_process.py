"""`conveyor serve` as a real process: the demo of SPEC §6 (register with a Bearer token, the server prints the
message line after the delay), the admin token generated on first start and printed once, graceful SIGTERM, and
a store that is down answering 503 without killing the server."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import StartServer, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServeProcess:
    def __init__(
        self, store_url: str, *args: str, env: dict[str, str] | None = None, global_args: tuple[str, ...] = ()
    ) -> None:
        self.store_url = store_url
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        full_env = {k: v for k, v in os.environ.items() if k != "CONVEYOR_ADMIN_TOKEN"}
        full_env.update(env or {})
        full_env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "conveyor.cli",
                "--store",
                store_url,
                *global_args,
                "serve",
                "--port",
                str(self.port),
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=full_env,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            wait_for(self._healthy, timeout=60, interval=0.1)
        except BaseException:  # never leave a server running that no test will stop
            self.proc.kill()
            self.proc.wait()
            raise

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError("server exited:\n" + "\n".join(self.lines))
        try:
            return httpx.get(self.base_url + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self._reader.join(timeout=5)


@pytest.fixture
def processes() -> Iterator[list[ServeProcess]]:
    procs: list[ServeProcess] = []
    yield procs
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()


def test_demo_register_prints_after_delay(tmp_path: Path, processes: list[ServeProcess]) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    server = ServeProcess(url, "--demo")
    processes.append(server)
    match = wait_for(lambda: re.search(r"^\s+(cva_\S+)$", server.output, re.MULTILINE), timeout=10)
    token = match.group(1)

    r = httpx.post(server.base_url + "/api/dm-jobqueue/register", json={"message": "hello from the demo"})
    assert r.status_code == 401
    headers = {"Authorization": f"Bearer {token}"}
    r = httpx.post(
        server.base_url + "/api/dm-jobqueue/register",
        json={"message": "hello from the demo", "delay_seconds": 1},
        headers=headers,
    )
    assert r.status_code == 201
    body = r.json()
    assert body["status"] == "registered" and set(body) == {"job_id", "status"}
    # defaults: delay 180 s and 10 retries when absent or ≤ 0
    r = httpx.post(
        server.base_url + "/api/dm-jobqueue/register", json={"delay_seconds": 0, "max_retry": -1}, headers=headers
    )
    job = httpx.get(f"{server.base_url}/api/v1/jobs/{r.json()['job_id']}", headers=headers).json()
    assert job["task"] == "demo:delay_print" and job["payload"] == {"message": "Job executed successfully"}
    assert job["max_attempts"] == 11 and job["scheduled"] is True
    assert httpx.post(server.base_url + "/api/dm-jobqueue/register", headers=headers).status_code == 201

    line = wait_for(
        lambda: [ln for ln in server.lines if ln.endswith("] hello from the demo")], timeout=30, interval=0.1
    )[0]
    assert re.match(r"^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\] hello from the demo$", line)

    t0 = time.monotonic()
    assert server.stop() == 0, server.output
    assert time.monotonic() - t0 < 30

    # the token was kept in the store: a second start accepts it and does not print it again
    again = ServeProcess(url, "--demo", "--no-worker")
    processes.append(again)
    assert httpx.get(again.base_url + "/api/v1/me", headers=headers).json()["kind"] == "admin"
    assert token not in again.output
    assert again.stop() == 0


def test_store_down_answers_503(tmp_path: Path, processes: list[ServeProcess]) -> None:
    """A Redis store nobody listens on: the server starts, answers 503 with the store's message, and lives."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    server = ServeProcess.__new__(ServeProcess)
    # /health is 503 while the store is down, so start without waiting for it
    server.port = free_port()
    server.base_url = f"http://127.0.0.1:{server.port}"
    env = {k: v for k, v in os.environ.items()}
    env.update({"CONVEYOR_ADMIN_TOKEN": "tok", "PYTHONUNBUFFERED": "1"})
    server.proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor.cli", "--store", dead, "serve", "--port", str(server.port), "--no-worker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    server.lines = []
    server._reader = threading.Thread(target=server._read, daemon=True)
    server._reader.start()
    processes.append(server)

    def answered() -> httpx.Response | None:
        if server.proc.poll() is not None:
            raise AssertionError("server exited:\n" + server.output)
        try:
            return httpx.get(server.base_url + "/health", timeout=5)
        except httpx.HTTPError:
            return None

    health = wait_for(answered, timeout=60, interval=0.2)
    assert health.status_code == 503
    r = httpx.post(
        server.base_url + "/api/jobs/enqueue", json={"topic": "t"}, headers={"Authorization": "Bearer tok"}, timeout=30
    )
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "store_unavailable" and r.json()["message"]
    # a user token cannot be checked without the store's secret: 503 too, never 401 or 500
    r = httpx.get(server.base_url + "/api/v1/me", headers={"Authorization": "Bearer cvu1.a.b"}, timeout=30)
    assert r.status_code == 503, r.text
    assert server.proc.poll() is None
    assert server.stop() == 0, server.output


def test_cli_token_is_accepted_by_the_server(start_server: StartServer, sqlite_url: str) -> None:
    live = start_server(sqlite_url, admin_token=None)  # secrets come from the store, as in production
    out = subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "--store", sqlite_url, "token", "issue", "alice", "--namespace", "game"],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k not in ("CONVEYOR_ADMIN_TOKEN", "CONVEYOR_TOKEN_SECRET")},
    )
    token = out.stdout.strip()
    me = live.client(token).get("/api/v1/me").json()
    assert me["user_id"] == "alice" and me["namespace"] == "game"
    admin = subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "--store", sqlite_url, "token", "create", "from-cli"],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "CONVEYOR_ADMIN_TOKEN"},
    ).stdout.strip()
    assert live.client(admin).get("/api/v1/me").json()["kind"] == "admin"


APP_MODULE = """
import asyncio
from conveyor import Conveyor

app = Conveyor("{url}")


@app.task("nap")
async def nap(payload):
    await asyncio.sleep(payload["seconds"])
    return "rested"
"""


def test_sigterm_lets_running_jobs_finish(tmp_path: Path, processes: list[ServeProcess]) -> None:
    url = f"sqlite:///{tmp_path / 'graceful.db'}"
    (tmp_path / "napapp.py").write_text(APP_MODULE.format(url=url))
    env = {"CONVEYOR_ADMIN_TOKEN": "tok", "PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    server = ServeProcess(url, env=env, global_args=("--app", "napapp:app"))
    processes.append(server)
    headers = {"Authorization": "Bearer tok"}
    job = httpx.post(
        server.base_url + "/api/v1/jobs", json={"task": "nap", "payload": {"seconds": 2}}, headers=headers
    ).json()
    wait_for(
        lambda: (
            httpx.get(f"{server.base_url}/api/v1/jobs/{job['id']}", headers=headers).json()["status"] == "processing"
        )
    )
    assert server.stop() == 0, server.output

    from conveyor import Conveyor

    with Conveyor(url) as app:
        done = app.get_job(job["id"])
        assert done is not None and done.status.value == "completed" and done.result == "rested"
