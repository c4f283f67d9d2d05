"""`serve`: one process with the HTTP API on uvicorn and, unless `workers=False`, a Worker with its maintenance
services (rescuer, pruner, scheduler) in the same event loop — the go-webdb-template's API server and JobQueue
server in one. SIGTERM/SIGINT shut down gracefully: stop accepting requests, end event streams, let running jobs
finish within the grace period (then hand them back), close the store, exit 0.
"""

from __future__ import annotations

import importlib
import logging
import signal
import socket
import threading
from collections.abc import Generator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any

import uvicorn

from conveyor.app import Conveyor
from conveyor.errors import AddressInUse
from conveyor.server.deps import ServerContext
from conveyor.server.factory import DEFAULT_MAX_BODY_BYTES, create_app
from conveyor.server.protocol import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_REQUEST_TIMEOUT,
    ConnectionLimits,
    guarded_protocol,
)

log = logging.getLogger("conveyor.server")


class ConveyorServer(uvicorn.Server):
    """uvicorn's server, except that SSE streams end as soon as shutdown begins (otherwise uvicorn waits for
    them), and that a signal that caused a clean shutdown is not re-raised afterwards (exit status 0)."""

    def __init__(self, config: uvicorn.Config, ctx: ServerContext) -> None:
        super().__init__(config)
        self._ctx = ctx

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        log.info("received %s: shutting down gracefully", signal.Signals(sig).name)
        self.handle_exit(sig, frame)
        self._captured_signals.clear()

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        self._ctx.shutdown.set()
        await super().shutdown(sockets=sockets)


def load_app(spec: str) -> Conveyor:
    """`module:attribute` → the user's Conveyor app (with its tasks registered)."""
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    app = getattr(module, attr or "app")
    if not isinstance(app, Conveyor):
        raise TypeError(f"{spec} is a {type(app).__name__}, not a Conveyor app")
    return app


def build_server(
    url: str | None = None,
    *,
    app: Conveyor | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: bool = True,
    demo: bool = False,
    concurrency: int = 10,
    queues: Sequence[str] | None = None,
    log_level: str = "info",
    app_spec: str | None = None,
    admin_token: str | None = None,
    grace_period: float = 30.0,
    worker_options: dict[str, Any] | None = None,
    access_log: bool = False,
    gs2_region: str | None = None,
    gs2_owner_id: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    limits: ConnectionLimits | None = None,
    metrics_token: str | None = None,
    own_logging: bool = False,
) -> uvicorn.Server:
    """The configured uvicorn server (not started): `await server.serve()` or `server.run()`. `own_logging`: the
    caller configured logging (the CLI's --log-format), so uvicorn installs no handlers or format of its own and
    its lines come out in the caller's format."""
    if app is None:
        app = load_app(app_spec) if app_spec else Conveyor(url)
    options: dict[str, Any] = {"concurrency": concurrency, "grace_period": grace_period}
    if queues:
        options["queues"] = list(queues)
    options.update(worker_options or {})
    api = create_app(
        app,
        admin_token=admin_token,
        demo=demo,
        run_worker=workers,
        worker_options=options,
        gs2_region=gs2_region,
        gs2_owner_id=gs2_owner_id,
        max_body_bytes=max_body_bytes,
        metrics_token=metrics_token,
    )
    config = uvicorn.Config(
        api,
        host=host,
        port=port,
        log_level=log_level.lower(),
        log_config=None if own_logging else uvicorn.config.LOGGING_CONFIG,
        access_log=access_log,
        lifespan="on",
        timeout_graceful_shutdown=int(max(grace_period, 1.0)) + 5,
        loop="auto",  # uvloop when installed
        http=guarded_protocol(limits or ConnectionLimits()),  # header size and read timeouts (protocol.py)
    )
    return ConveyorServer(config, api.state.conveyor)


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound now (as uvicorn would bind it: SO_REUSEADDR, the host's address family), so
    that `serve` can refuse a busy port before it prints or opens anything — and nobody can take the port between
    a check and uvicorn's own bind."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    except socket.gaierror as exc:
        raise AddressInUse(host, port, f"unknown host: {exc.strerror}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise AddressInUse(host, port, exc.strerror or str(exc)) from None
    sock.set_inheritable(True)
    return sock


def serve(
    url: str | None = None,
    *,
    app: Conveyor | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: bool = True,
    demo: bool = False,
    concurrency: int = 10,
    queues: Sequence[str] | None = None,
    log_level: str = "info",
    app_spec: str | None = None,
    admin_token: str | None = None,
    grace_period: float = 30.0,
    gs2_region: str | None = None,
    gs2_owner_id: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    metrics_token: str | None = None,
    own_logging: bool = False,
) -> None:
    """Serve until SIGTERM/SIGINT (blocking). `url` picks the store (default sqlite:///conveyor.db) unless `app`
    or `app_spec` ("module:attribute") gives the app whose tasks the workers run."""
    server = build_server(
        url,
        app=app,
        host=host,
        port=port,
        workers=workers,
        demo=demo,
        concurrency=concurrency,
        queues=queues,
        log_level=log_level,
        app_spec=app_spec,
        admin_token=admin_token,
        grace_period=grace_period,
        gs2_region=gs2_region,
        gs2_owner_id=gs2_owner_id,
        max_body_bytes=max_body_bytes,
        limits=ConnectionLimits(max_header_bytes, header_timeout, request_timeout),
        metrics_token=metrics_token,
        own_logging=own_logging,
    )
    listening = bind_socket(host, port)  # before the banner: a busy port fails first, with one clear error
    port = listening.getsockname()[1]
    where = f"http://{host}:{port}"
    print(
        f"Conveyor API on {where} (admin UI: {where}/ui/, OpenAPI: {where}/openapi.json, docs: {where}/docs)"
        + ("" if workers else " — API only, no workers"),
        flush=True,
    )
    # Server.run: uvicorn picks the loop (uvloop when installed); asyncio.run(server.serve()) would bypass that.
    server.run(sockets=[listening])
