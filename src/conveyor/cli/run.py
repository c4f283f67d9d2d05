"""`conveyor worker | serve | bench`: the long-running commands."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from typing import Annotated, Any

import typer

from conveyor.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    console,
    fail,
    get_state,
    handle_errors,
    load_app,
    run,
    setup_logging,
)
from conveyor.store.urls import redact
from conveyor.worker import Worker

LogLevelOpt = Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")]


def queue_option(values: list[str]) -> tuple[str, ...] | dict[str, int]:
    """`-q` values: plain names (a list), or every one NAME,WEIGHT (weights); a mix is refused."""
    weights: dict[str, int] = {}
    names: list[str] = []
    for value in values:
        name, sep, weight = value.partition(",")
        if not sep:
            names.append(value)
            continue
        if not weight.strip().isdigit() or int(weight) < 1:
            fail(
                f"-q {value!r}: the weight after the comma must be a whole number ≥ 1 (e.g. -q critical,6)", EXIT_USAGE
            )
        weights[name.strip()] = int(weight)
    if weights and names:
        fail(f"-q: give every queue a weight or none ({', '.join(names)} has none)", EXIT_USAGE)
    return weights if weights else tuple(names)


def worker(
    ctx: typer.Context,
    queue: Annotated[
        list[str] | None,
        typer.Option(
            "--queue",
            "-q",
            help="Queue to serve; repeat for several (default: default). NAME,WEIGHT weights it: "
            "-q critical,6 -q default,3 -q low,1 claims from each in proportion to its weight.",
        ),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict", help="Claim from the -q queues in the given order: a lower one only when the higher are empty."
        ),
    ] = False,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Jobs run at once.")] = 10,
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Serve only these namespaces (default: all with auto_run on)."),
    ] = None,
    grace_period: Annotated[
        float, typer.Option("--grace-period", min=0, help="Seconds running jobs get to finish on SIGTERM.")
    ] = 30.0,
    lease: Annotated[
        float | None, typer.Option("--lease", min=1, help="Lease in seconds, extended by heartbeats (default 30).")
    ] = None,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", min=0.01, help="Seconds between polls for work from other processes.")
    ] = 1.0,
    worker_id: Annotated[str | None, typer.Option("--id", help="Worker id (default host:pid:random).")] = None,
    maintenance: Annotated[
        bool, typer.Option("--maintenance/--no-maintenance", help="Also run the rescuer, pruner and scheduler.")
    ] = True,
    demo: Annotated[bool, typer.Option("--demo", help="Register the demo task demo:delay_print.")] = False,
    isolation: Annotated[
        str,
        typer.Option(
            "--isolation",
            help="Where plain (sync) handlers run unless their task says: 'thread' (the thread pool) or 'process' "
            "(child processes killed on timeout or cancel: hard timeouts).",
        ),
    ] = "thread",
    log_level: LogLevelOpt = "INFO",
) -> None:
    """Run a worker until SIGTERM/SIGINT: running jobs get --grace-period to finish, the rest are handed back."""
    if isolation not in ("thread", "process"):
        fail(f"--isolation must be 'thread' or 'process', got {isolation!r}", EXIT_USAGE)
    setup_logging(get_state(ctx).log_format, log_level)
    app = load_app(ctx, demo=demo)
    if not app.tasks:
        fail(
            "no tasks to run: load your app with --app module:attr (or CONVEYOR_APP), or pass --demo",
            EXIT_USAGE,
        )
    from datetime import timedelta

    options: dict[str, Any] = {
        "queues": queue_option(queue or ["default"]),
        "strict": strict,
        "namespaces": tuple(namespace) if namespace else None,
        "concurrency": concurrency,
        "poll_interval": poll_interval,
        "grace_period": grace_period,
        "lease": timedelta(seconds=lease) if lease is not None else None,
        "worker_id": worker_id,
        "maintenance": maintenance,
        "install_signal_handlers": True,
        "isolation": isolation,
    }
    log = logging.getLogger("conveyor.cli")

    async def body() -> None:
        # No `async with app` here: the worker opens the store itself and keeps retrying while it is down
        # (a warning in the log, no crash), as the template's JobQueue server did with Redis.
        # The worker delivers its namespaces' webhooks itself (conveyor.webhooks), like every worker.
        try:
            w = Worker(app, **options)
            running = asyncio.ensure_future(w.run())
            try:
                if await w.wait_started():
                    log.info(
                        "serving %s on %s with tasks: %s",
                        ", ".join(options["queues"]),
                        redact(app.url),
                        ", ".join(sorted(app.tasks)),
                    )
                await running
            finally:
                if not running.done():
                    w.stop(force=True)
                    await running
        finally:
            await app.aclose()

    run(body)


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="TCP port.")] = 8080,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="API only: run no workers in this process.")] = False,
    demo: Annotated[bool, typer.Option("--demo", help="Register demo:delay_print and the demo endpoint.")] = False,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Worker slots.")] = 10,
    queue: Annotated[
        list[str] | None, typer.Option("--queue", "-q", help="Queue the workers serve; repeat for several.")
    ] = None,
    grace_period: Annotated[
        float, typer.Option("--grace-period", min=0, help="Seconds running jobs get to finish on SIGTERM.")
    ] = 30.0,
    gs2_region: Annotated[
        str | None,
        typer.Option("--gs2-region", envvar="CONVEYOR_GS2_REGION", help="Region in GS2 GRNs [default: ap-northeast-1]"),
    ] = None,
    gs2_owner_id: Annotated[
        str | None,
        typer.Option("--gs2-owner-id", envvar="CONVEYOR_GS2_OWNER_ID", help="Owner id in GS2 GRNs [default: conveyor]"),
    ] = None,
    max_body_bytes: Annotated[
        int,
        typer.Option(
            "--max-body-bytes",
            min=1,
            envvar="CONVEYOR_MAX_BODY_BYTES",
            help="Largest request body (chunked or not); larger ones get 413.",
        ),
    ] = 16 * 1024 * 1024,
    max_header_bytes: Annotated[
        int,
        typer.Option(
            "--max-header-bytes",
            min=1024,
            envvar="CONVEYOR_MAX_HEADER_BYTES",
            help="Largest request line plus headers; larger ones get 431.",
        ),
    ] = 64 * 1024,
    header_timeout: Annotated[
        float,
        typer.Option(
            "--header-timeout",
            min=0.1,
            envvar="CONVEYOR_HEADER_TIMEOUT",
            help="Seconds a client has to send a request's headers (then 408 and close).",
        ),
    ] = 10.0,
    request_timeout: Annotated[
        float,
        typer.Option(
            "--request-timeout",
            min=0.1,
            envvar="CONVEYOR_REQUEST_TIMEOUT",
            help="Seconds a client has to send a request's body after its headers (then the connection closes).",
        ),
    ] = 60.0,
    metrics_token: Annotated[
        str | None,
        typer.Option(
            "--metrics-token",
            envvar="CONVEYOR_METRICS_TOKEN",
            help="Token /metrics needs (Authorization: Bearer); without one /metrics is public. Prefer the "
            "environment variable: options show in the process list.",
            show_default=False,
        ),
    ] = None,
    log_level: LogLevelOpt = "INFO",
) -> None:
    """Serve the HTTP API (with workers and maintenance unless --no-worker) until SIGTERM."""
    try:
        server = importlib.import_module("conveyor.server")
    except ModuleNotFoundError as exc:
        if exc.name in ("conveyor.server", "fastapi", "uvicorn"):
            fail(f"the HTTP server is not available in this installation ({exc.name} is missing)", EXIT_FAILED)
        raise
    serve_fn = getattr(server, "serve", None)
    if not callable(serve_fn):
        fail("the HTTP server is not available yet: conveyor.server has no serve()", EXIT_FAILED)
    setup_logging(get_state(ctx).log_format, log_level)
    app = load_app(ctx, demo=demo)
    candidates: dict[str, Any] = {
        "app": app,
        "host": host,
        "port": port,
        "worker": not no_worker,
        "workers": not no_worker,
        "no_worker": no_worker,
        "demo": demo,
        "concurrency": concurrency,
        "queues": tuple(queue) if queue else None,
        "grace_period": grace_period,
        "log_level": log_level.lower(),
        "gs2_region": gs2_region,
        "gs2_owner_id": gs2_owner_id,
        "max_body_bytes": max_body_bytes,
        "max_header_bytes": max_header_bytes,
        "header_timeout": header_timeout,
        "request_timeout": request_timeout,
        "metrics_token": metrics_token,
        "own_logging": True,
    }
    accepted = inspect.signature(serve_fn).parameters
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    kwargs = {k: v for k, v in candidates.items() if takes_kwargs or k in accepted}
    with handle_errors():
        result = serve_fn(**kwargs)
        if inspect.isawaitable(result):

            async def wait() -> None:
                await result

            asyncio.run(wait())


def bench(
    ctx: typer.Context,
    store: Annotated[
        str | None,
        typer.Option("--store", help="Store to measure (default: a temporary SQLite file). Overrides the global one."),
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-n", min=1, help="Jobs per enqueue phase.")] = 10_000,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Jobs per enqueue_many call.")] = 1000,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Worker slots.")] = 10,
    rate: Annotated[float, typer.Option("--rate", min=1, help="Jobs/s for the latency phase.")] = 200.0,
    duration: Annotated[float, typer.Option("--duration", min=0.1, help="Seconds of the latency phase.")] = 5.0,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Jobs run through before measuring.")] = 1000,
    sync_task: Annotated[
        bool, typer.Option("--sync-task", help="Use a plain (thread-pool) no-op handler instead of async.")
    ] = False,
    http: Annotated[
        str | None,
        typer.Option("--http", help="HTTP mode: a server base URL, or 'auto' to start `conveyor serve` itself."),
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", envvar="CONVEYOR_TOKEN", help="Admin token for --http URL.")
    ] = None,
    connections: Annotated[int, typer.Option("--connections", min=1, help="HTTP mode: concurrent connections.")] = 8,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the benchmark's store instead of removing it.")] = False,
    queue_rate: Annotated[
        str | None,
        typer.Option("--queue-rate", help="Rate-limit the measured queue (e.g. 1000000/s: the cost of a limit)."),
    ] = None,
    queue_concurrency: Annotated[
        int | None, typer.Option("--queue-concurrency", min=0, help="Cap the measured queue's processing jobs.")
    ] = None,
    queue_rate_key: Annotated[
        str | None,
        typer.Option("--queue-rate-key", help="With --queue-rate: one bucket per key (e.g. concurrency_key)."),
    ] = None,
    key_concurrency: Annotated[
        int | None, typer.Option("--key-concurrency", min=0, help="Limit the measured queue's jobs per key.")
    ] = None,
    keys: Annotated[
        int,
        typer.Option("--keys", min=0, help="Give the measured jobs concurrency_key k0..k<N-1> and payload {k: i}."),
    ] = 0,
    drain_only: Annotated[
        bool, typer.Option("--drain-only", help="Only the batch enqueue and the drain (no single enqueue, latency).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable results.")] = False,
) -> None:
    """Measure enqueue (single and batch), drain and enqueue-to-start latency on a fresh, isolated store."""
    from conveyor import bench as benchmark

    state = get_state(ctx)
    config = benchmark.BenchConfig(
        url=store or state.store_url,
        jobs=jobs,
        batch_size=batch_size,
        concurrency=concurrency,
        rate=rate,
        duration=duration,
        warmup=warmup,
        sync_task=sync_task,
        http=http,
        token=token,
        connections=connections,
        keep=keep,
        queue_rate=queue_rate,
        queue_concurrency=queue_concurrency,
        queue_rate_key=queue_rate_key,
        key_concurrency=key_concurrency,
        keys=keys,
        drain_only=drain_only,
    )
    with handle_errors():
        report = benchmark.run_bench(config, show_progress=not as_json)
    if as_json:
        from conveyor.cli.output import print_json

        print_json(report)
    else:
        benchmark.print_report(report, console)


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
    app.command("serve")(serve)
    app.command("bench")(bench)
