"""A real Conveyor server on a free port (uvicorn in a thread), driven over HTTP with httpx.

`start_server(url, ...)` builds a Conveyor app with a few test tasks, serves it, and returns a `LiveServer` with an
admin client; the server is stopped (gracefully, through uvicorn's shutdown and the app's lifespan) after the test.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from conveyor import Conveyor, Fail
from conveyor.server import create_app
from conveyor.server.deps import ServerContext
from conveyor.server.runner import ConveyorServer

ADMIN_TOKEN = "test-admin-token"


@dataclass
class LiveServer:
    base_url: str
    app: Conveyor
    api: FastAPI
    server: uvicorn.Server
    thread: threading.Thread
    admin: httpx.Client
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def ctx(self) -> ServerContext:
        ctx: ServerContext = self.api.state.conveyor
        return ctx

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        client = httpx.Client(base_url=self.base_url, headers=headers, timeout=30)
        self.clients.append(client)
        return client

    def user_token(self, user_id: str, namespace: str | None = None, ttl: float = 3600) -> str:
        body: dict[str, Any] = {"user_id": user_id, "ttl": ttl}
        if namespace is not None:
            body["namespace"] = namespace
        r = self.admin.post("/api/v1/tokens", json=body)
        assert r.status_code == 201, r.text
        token: str = r.json()["token"]
        return token

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        self.server.should_exit = True
        self.thread.join(timeout=60)
        if self.thread.is_alive():
            import sys
            import traceback

            frames = sys._current_frames()
            stack = "".join(traceback.format_stack(frames[self.thread.ident])) if self.thread.ident in frames else ""
            tasks = ""
            loop = getattr(self.app, "_home", None)
            if loop is not None:
                tasks = "\n".join(repr(t) for t in asyncio.all_tasks(loop))
            raise AssertionError(f"server did not stop\n{stack}\n{tasks}")


def make_app(url: str) -> Conveyor:
    """An app with the tasks the server tests use."""
    app = Conveyor(url)

    @app.task("echo")
    async def echo(payload: Any) -> Any:
        return payload

    @app.task("fail", max_attempts=1)
    async def fail(payload: Any) -> Any:
        raise Fail("refused by test", status_code=400)

    @app.task("slow")
    async def slow(payload: Any) -> Any:
        await asyncio.sleep(float((payload or {}).get("seconds", 1.0)))
        return "slept"

    return app


def serve_in_thread(api: FastAPI, app: Conveyor) -> LiveServer:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(api, log_level="warning", lifespan="on", timeout_graceful_shutdown=10)
    server = ConveyorServer(config, api.state.conveyor)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
    live = LiveServer(base, app, api, server, thread, admin)
    live.clients.append(admin)
    return live


StartServer = Callable[..., LiveServer]


@pytest.fixture
def start_server(request: pytest.FixtureRequest) -> Iterator[StartServer]:
    # Set the store up before this fixture so that it is torn down after it: servers (and their workers) must
    # stop before the store's data is removed, or a running worker sees its jobs vanish mid-test.
    if "store_url" in request.fixturenames:
        request.getfixturevalue("store_url")
    servers: list[LiveServer] = []

    def start(
        url: str,
        *,
        run_worker: bool = False,
        demo: bool = False,
        admin_token: str | None = ADMIN_TOKEN,
        worker_options: dict[str, Any] | None = None,
        app: Conveyor | None = None,
        **options: Any,
    ) -> LiveServer:
        conveyor_app = app or make_app(url)
        wopts = {"poll_interval": 0.1, "concurrency": 4, "grace_period": 2.0, **(worker_options or {})}
        api = create_app(
            conveyor_app,
            admin_token=admin_token,
            demo=demo,
            run_worker=run_worker,
            worker_options=wopts,
            print_admin_token=False,
            **options,
        )
        live = serve_in_thread(api, conveyor_app)
        servers.append(live)
        return live

    yield start
    for live in servers:
        live.stop()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'server.db'}"


@pytest.fixture
def server(start_server: StartServer, sqlite_url: str) -> LiveServer:
    """A SQLite-backed server without workers (jobs stay where the test puts them)."""
    return start_server(sqlite_url)


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
