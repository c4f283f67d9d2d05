"""`conveyor stats | queues | workers | namespaces | migrate`: look after the queue as a whole."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import typer
from rich.table import Table

from conveyor.cli.common import EXIT_USAGE, console, escape, fail, load_app, run, warn
from conveyor.cli.output import (
    STATUS_STYLE,
    ago,
    human_seconds,
    jsonable,
    namespace_dict,
    parse_duration,
    print_json,
    print_list,
    stats_dict,
)
from conveyor.errors import NamespaceExists, ValidationError
from conveyor.model import (
    JSON,
    KEEP,
    Keep,
    Namespace,
    QueueFlow,
    QueueInfo,
    QueueSettings,
    RateBucket,
    RateLimit,
    Stats,
    WorkerInfo,
    utcnow,
)
from conveyor.store.urls import redact

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]

queues_app = typer.Typer(
    name="queues", help="List queues with their counts; pause and resume them; set their limits.", no_args_is_help=True
)
namespaces_app = typer.Typer(
    name="namespaces", help="Create, inspect, change and delete namespaces.", no_args_is_help=True
)

# ---- stats -------------------------------------------------------------------------------------------------------


def stats(
    ctx: typer.Context,
    namespace: Annotated[str | None, typer.Option("--namespace", "-n")] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-q")] = None,
    task: Annotated[str | None, typer.Option("--task", "-t")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Job counts by status and the success rate (completed / (completed + failed))."""
    app = load_app(ctx)

    async def body() -> Stats:
        async with app:
            return await app.astats(namespace, queue, task)

    result = run(body)
    if as_json:
        print_json(stats_dict(result))
        return
    scope = " ".join(f"{k}={v}" for k, v in (("namespace", namespace), ("queue", queue), ("task", task)) if v)
    table = Table(title=f"Jobs {scope}".strip(), title_justify="left")
    table.add_column("status")
    table.add_column("jobs", justify="right")
    for name in ("pending", "scheduled", "processing", "completed", "failed", "cancelled"):
        style = STATUS_STYLE.get(name, "")
        label = f"  ({name})" if name == "scheduled" else name
        table.add_row(f"[{style}]{label}[/]", str(getattr(result, name)))
    table.add_row("[bold]total[/]", f"[bold]{result.total}[/]", end_section=True)
    table.add_row("success rate", f"{result.success_rate * 100:.1f} %")
    console.print(table)


# ---- queues ------------------------------------------------------------------------------------------------------


def list_queues(
    ctx: typer.Context,
    namespace: Annotated[str | None, typer.Option("--namespace", "-n")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every queue that has jobs or settings, with counts by status."""
    app = load_app(ctx)

    async def body() -> list[QueueInfo]:
        async with app:
            return await app.alist_queues(namespace)

    queues = run(body)
    if as_json:
        print_list([jsonable(q) for q in queues])
        return
    if not queues:
        console.print("No queues yet (a queue appears with its first job).")
        return
    table = Table(title="Queues", title_justify="left")
    table.add_column("namespace", overflow="fold")
    table.add_column("queue", overflow="fold")
    table.add_column("state")
    columns = ("pending", "scheduled", "processing", "completed", "failed", "cancelled")
    for name in columns:
        table.add_column(name, justify="right", style=STATUS_STYLE.get(name, ""))
    table.add_column("limit", justify="right")
    table.add_column("rate", justify="right")
    table.add_column("per key", justify="right")
    for q in queues:
        table.add_row(
            escape(q.namespace),
            escape(q.name),
            "[red]paused[/]" if q.paused else "[green]active[/]",
            *(str(q.counts.get(name, 0)) for name in columns),
            "-" if q.concurrency is None else str(q.concurrency),
            "-" if q.rate_limit is None else escape(rate_text(q.rate_limit, q.rate_key)),
            "-" if q.key_concurrency is None else str(q.key_concurrency),
        )
    console.print(table)


def rate_text(rate: RateLimit | None, rate_key: str | None) -> str:
    """A rate limit as the CLI shows it: `10/60s (burst 2) per user_id`."""
    if rate is None:
        return "unlimited" if rate_key is None else f"unlimited (rate key {rate_key}, unused)"
    return str(rate) + ("" if rate_key is None else f" per {rate_key}")


def show_queue(
    ctx: typer.Context,
    queue: Annotated[str, typer.Argument(help="Queue name.")],
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "default",
    top: Annotated[int, typer.Option("--top", min=0, help="How many keys to list (busiest, most limited).")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """A queue's settings and what its limits are doing now: processing jobs (per key too), rate tokens left and
    the next token, jobs due now and the oldest one's wait."""
    app = load_app(ctx)

    async def body() -> QueueFlow:
        async with app:
            return await app.aqueue_flow(queue, namespace, top=top)

    flow = run(body)
    if as_json:
        print_json(jsonable(flow))
        return
    s = flow.settings
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("queue", escape(f"{s.namespace}/{s.name}"))
    grid.add_row("state", "[red]paused[/]" if s.paused else "[green]active[/]")
    grid.add_row("concurrency", "unlimited" if s.concurrency is None else str(s.concurrency))
    grid.add_row("per key", "unlimited" if s.key_concurrency is None else str(s.key_concurrency))
    grid.add_row("rate", escape(rate_text(s.rate_limit, s.rate_key)))
    grid.add_row("processing", str(flow.processing))
    if flow.busiest_keys:
        grid.add_row("busiest keys", escape(", ".join(f"{k}: {n}" for k, n in flow.busiest_keys)))
    if flow.rate is not None:
        grid.add_row("tokens", _bucket_text(flow.rate))
    if s.rate_key is not None and s.rate_limit is not None:
        grid.add_row("limited keys", str(flow.limited_keys))
        for b in flow.most_limited:
            grid.add_row(f"  {escape(b.key or '(no key)')}", _bucket_text(b))
    grid.add_row("due now", str(flow.due))
    grid.add_row("oldest due", "-" if flow.oldest_due_age is None else human_seconds(flow.oldest_due_age))
    console.print(grid)


def _bucket_text(b: RateBucket) -> str:
    if b.tokens > 0:
        return f"{b.tokens} left"
    return f"none left, next in {b.next_in:.3f} s"


def _limit(text: str | None, what: str) -> int | Keep | None:
    if text is None:
        return KEEP
    if text.strip().lower() in ("none", "off", "-"):
        return None
    try:
        return int(text)
    except ValueError:
        raise ValidationError(f"{what} must be a whole number, or 'none' to remove it (got {text!r})") from None


def set_queue(
    ctx: typer.Context,
    queue: Annotated[str, typer.Argument(help="Queue name.")],
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "default",
    concurrency: Annotated[
        str | None,
        typer.Option("--concurrency", "-c", help="Max processing jobs across all workers; 'none' removes the cap."),
    ] = None,
    rate: Annotated[
        str | None,
        typer.Option("--rate", "-r", help="Max claims per period: '100/s', '10/m', '3/10s'; 'none' removes it."),
    ] = None,
    burst: Annotated[
        int | None,
        typer.Option(
            "--burst", help="Claims that may start at once (default: N); alone, changes the stored rate's burst."
        ),
    ] = None,
    rate_key: Annotated[
        str | None,
        typer.Option(
            "--rate-key",
            help="Partition the rate limit, one bucket per value: user_id, group_key, concurrency_key or "
            "payload.<field>; 'none' for one bucket per queue.",
        ),
    ] = None,
    key_concurrency: Annotated[
        str | None,
        typer.Option(
            "--key-concurrency", "-k", help="Max processing jobs per concurrency key; 'none' removes the limit."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a queue's limits at runtime; what you do not name stays as it is (a pause keeps the limits too)."""
    if concurrency is None and rate is None and key_concurrency is None and rate_key is None and burst is None:
        fail("nothing to change: give --concurrency, --rate, --burst, --rate-key or --key-concurrency", code=EXIT_USAGE)
    cap = _limit(concurrency, "--concurrency")
    key_cap = _limit(key_concurrency, "--key-concurrency")
    rate_limit: str | Keep | None = KEEP
    if rate is not None:
        rate_limit = None if rate.strip().lower() in ("none", "off", "-") else rate
    if burst is not None and rate_limit is None:
        fail("--burst goes with --rate N/period (not with --rate none)", code=EXIT_USAGE)
    partition: str | Keep | None = KEEP
    if rate_key is not None:
        partition = None if rate_key.strip().lower() in ("none", "off", "-") else rate_key.strip()
    app = load_app(ctx)

    async def body() -> QueueSettings:
        async with app:
            return await app.aupdate_queue(
                queue,
                namespace,
                concurrency=cap,
                rate_limit=rate_limit,
                rate_burst=burst,
                key_concurrency=key_cap,
                rate_key=partition,
            )

    stored = run(body)
    if as_json:
        print_json(jsonable(stored))
        return
    console.print(
        f"Queue {escape(namespace)}/{escape(queue)}: "
        f"concurrency {'unlimited' if stored.concurrency is None else stored.concurrency}, "
        f"rate {escape(rate_text(stored.rate_limit, stored.rate_key))}, "
        f"per key {'unlimited' if stored.key_concurrency is None else stored.key_concurrency}"
        f"{', paused' if stored.paused else ''}."
    )


def _set_paused(ctx: typer.Context, queue: str, namespace: str, paused: bool) -> None:
    app = load_app(ctx)

    async def body() -> list[str]:
        async with app:
            notes: list[str] = []
            known_ns = {ns.name for ns in await app.alist_namespaces()}
            queues = await app.alist_queues(namespace)
            if namespace not in known_ns and not queues:
                notes.append(
                    f"namespace {namespace!r} does not exist (see `conveyor namespaces list`); "
                    f"the queue is {'paused' if paused else 'resumed'} there all the same"
                )
            elif queue not in {q.name for q in queues}:
                notes.append(
                    f"queue {queue!r} has no jobs and no settings in namespace {namespace!r} — a typo? "
                    f"It is {'paused' if paused else 'resumed'} all the same, for jobs that come later"
                )
            if paused:
                await app.apause_queue(queue, namespace)
            else:
                await app.aresume_queue(queue, namespace)
            return notes

    for note in run(body):
        warn(note)
    console.print(f"Queue {namespace}/{queue} {'paused: workers stop claiming from it' if paused else 'resumed'}.")


def pause_queue(
    ctx: typer.Context,
    queue: Annotated[str, typer.Argument(help="Queue name.")],
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "default",
) -> None:
    """Pause a queue: workers stop claiming from it (running jobs finish; Run still works)."""
    _set_paused(ctx, queue, namespace, True)


def resume_queue(
    ctx: typer.Context,
    queue: Annotated[str, typer.Argument(help="Queue name.")],
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "default",
) -> None:
    """Resume a paused queue."""
    _set_paused(ctx, queue, namespace, False)


# ---- workers -----------------------------------------------------------------------------------------------------


def workers(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Live workers with their heartbeats and running jobs (dead ones expire by themselves)."""
    app = load_app(ctx)

    async def body() -> list[WorkerInfo]:
        async with app:
            return await app.alist_workers()

    found = run(body)
    if as_json:
        print_list([jsonable(w) for w in found])
        return
    if not found:
        console.print("No live workers.")
        return
    now = utcnow()
    table = Table(title=f"{len(found)} live worker(s)", title_justify="left")
    table.add_column("id", overflow="fold")
    table.add_column("host / pid", overflow="fold")
    table.add_column("queues", overflow="fold")
    table.add_column("tasks", overflow="fold")
    table.add_column("busy", justify="right")
    table.add_column("started", no_wrap=True)
    table.add_column("heartbeat", no_wrap=True)
    table.add_column("running jobs", overflow="fold")
    table.add_column("leads", overflow="fold")
    for w in found:
        table.add_row(
            escape(w.id),
            escape(f"{w.hostname} / {w.pid}"),
            escape(", ".join(w.queues)),
            escape(", ".join(w.tasks) or "-"),
            f"{len(w.running)}/{w.concurrency}",
            ago(w.started_at, now),
            ago(w.heartbeat_at, now),
            escape(", ".join(w.running) or "-"),
            escape(", ".join(w.leader_of) or "-"),
        )
    console.print(table)
    if not any(w.leader_of for w in found):
        console.print("No worker leads the maintenance roles right now (an election takes at most one lease).")


# ---- namespaces --------------------------------------------------------------------------------------------------


def _retention(text: str | None, option: str) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        fail(f"{option}: {exc}", EXIT_USAGE)


def _namespace_table(namespaces: list[Namespace]) -> Table:
    table = Table(title="Namespaces", title_justify="left")
    table.add_column("name", overflow="fold")
    table.add_column("auto run")
    table.add_column("max attempts", justify="right")
    table.add_column("keep completed", justify="right")
    table.add_column("keep failed", justify="right")
    table.add_column("notifications")
    table.add_column("description", overflow="fold")
    for ns in namespaces:
        notes = [n for n, on in (("push", ns.push_notification), ("run", ns.run_notification)) if on]
        if ns.webhook_url:
            notes.append("webhook")
        table.add_row(
            escape(ns.name),
            "[green]on[/]" if ns.auto_run else "[yellow]off[/]",
            str(ns.max_attempts),
            human_seconds(ns.completed_retention),
            human_seconds(ns.failed_retention),
            ", ".join(notes) or "-",
            escape(ns.description or ""),
        )
    return table


def list_namespaces(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """All namespaces with their settings (`default` always exists)."""
    app = load_app(ctx)

    async def body() -> list[Namespace]:
        async with app:
            return await app.alist_namespaces()

    found = run(body)
    if as_json:
        print_list([namespace_dict(ns) for ns in found])
        return
    console.print(_namespace_table(found))


def _setting_text(value: JSON) -> str:
    """A setting as a person reads it: yes/no, '-' for unset, numbers and text as they are."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None or value == {}:
        return "-"
    return str(value)


def show_namespace(ctx: typer.Context, name: Annotated[str, typer.Argument()], as_json: JsonOpt = False) -> None:
    """One namespace's settings."""
    app = load_app(ctx)

    async def body() -> Namespace:
        async with app:
            return await app.aget_namespace(name)

    ns = run(body)
    if as_json:
        print_json(namespace_dict(ns))
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in namespace_dict(ns).items():
        if key in ("completed_retention", "failed_retention") and isinstance(value, int | float):
            value = human_seconds(float(value))
        grid.add_row(key, escape(_setting_text(value)))
    console.print(grid)


AutoRunOpt = Annotated[
    bool | None, typer.Option("--auto-run/--no-auto-run", help="Whether background workers run its jobs.")
]
MaxAttemptsOpt = Annotated[int | None, typer.Option("--max-attempts", help="Default max attempts (1-100).")]
KeepCompletedOpt = Annotated[
    str | None, typer.Option("--completed-retention", help="Keep completed jobs this long (e.g. 7d, 12h).")
]
KeepFailedOpt = Annotated[
    str | None, typer.Option("--failed-retention", help="Keep failed/cancelled jobs this long (e.g. 30d).")
]
DescriptionOpt = Annotated[str | None, typer.Option("--description")]
PushOpt = Annotated[bool | None, typer.Option("--push-notification/--no-push-notification")]
RunNoteOpt = Annotated[bool | None, typer.Option("--run-notification/--no-run-notification")]
WebhookOpt = Annotated[str | None, typer.Option("--webhook-url", help="POST notifications here ('' to remove).")]
SecretOpt = Annotated[str | None, typer.Option("--webhook-secret", help="HMAC secret for the webhook body.")]
AllowPrivateOpt = Annotated[
    bool | None,
    typer.Option(
        "--webhook-allow-private/--no-webhook-allow-private",
        help="Allow a webhook URL on a private, loopback or link-local address (default: refused).",
    ),
]


def _settings(
    auto_run: bool | None,
    max_attempts: int | None,
    completed_retention: str | None,
    failed_retention: str | None,
    description: str | None,
    push_notification: bool | None,
    run_notification: bool | None,
    webhook_url: str | None,
    webhook_secret: str | None,
    webhook_allow_private: bool | None = None,
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "auto_run": auto_run,
        "max_attempts": max_attempts,
        "completed_retention": _retention(completed_retention, "--completed-retention"),
        "failed_retention": _retention(failed_retention, "--failed-retention"),
        "description": description,
        "push_notification": push_notification,
        "run_notification": run_notification,
        "webhook_url": (webhook_url or None) if webhook_url is not None else None,
        "webhook_secret": webhook_secret,
        "webhook_allow_private": webhook_allow_private,
    }
    given = {k: v for k, v in values.items() if v is not None}
    if webhook_url == "":
        given["webhook_url"] = None
    if max_attempts is not None and not 1 <= max_attempts <= 100:
        fail(f"--max-attempts must be from 1 to 100, got {max_attempts}", EXIT_USAGE)
    return given


def create_namespace(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="1-128 characters of letters, digits, '-', '_' or '.'.")],
    auto_run: AutoRunOpt = None,
    max_attempts: MaxAttemptsOpt = None,
    completed_retention: KeepCompletedOpt = None,
    failed_retention: KeepFailedOpt = None,
    description: DescriptionOpt = None,
    push_notification: PushOpt = None,
    run_notification: RunNoteOpt = None,
    webhook_url: WebhookOpt = None,
    webhook_secret: SecretOpt = None,
    webhook_allow_private: AllowPrivateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a namespace (fails if it exists; use `update` to change one)."""
    settings = _settings(
        auto_run,
        max_attempts,
        completed_retention,
        failed_retention,
        description,
        push_notification,
        run_notification,
        webhook_url,
        webhook_secret,
        webhook_allow_private,
    )
    app = load_app(ctx)

    async def body() -> Namespace:
        async with app:
            try:
                return await app.acreate_namespace(Namespace(name=name, **settings))
            except NamespaceExists:
                how = "always exists" if name == "default" else "already exists"
                raise ValidationError(
                    f"namespace {name!r} {how}; change it with `conveyor namespaces update`"
                ) from None

    ns = run(body)
    if as_json:
        print_json(namespace_dict(ns))
        return
    console.print(f"Created namespace {ns.name!r} (auto run {'on' if ns.auto_run else 'off'}).", markup=False)


def update_namespace(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument()],
    auto_run: AutoRunOpt = None,
    max_attempts: MaxAttemptsOpt = None,
    completed_retention: KeepCompletedOpt = None,
    failed_retention: KeepFailedOpt = None,
    description: DescriptionOpt = None,
    push_notification: PushOpt = None,
    run_notification: RunNoteOpt = None,
    webhook_url: WebhookOpt = None,
    webhook_secret: SecretOpt = None,
    webhook_allow_private: AllowPrivateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change some settings of a namespace; the others keep their values."""
    settings = _settings(
        auto_run,
        max_attempts,
        completed_retention,
        failed_retention,
        description,
        push_notification,
        run_notification,
        webhook_url,
        webhook_secret,
        webhook_allow_private,
    )
    if not settings:
        fail("nothing to change: give at least one setting (see --help)", EXIT_USAGE)
    app = load_app(ctx)

    async def body() -> Namespace:
        async with app:
            return await app.aupdate_namespace(name, lambda current: dataclasses.replace(current, **settings))

    ns = run(body)
    if as_json:
        print_json(namespace_dict(ns))
        return
    console.print(f"Updated namespace {ns.name!r}: {', '.join(sorted(settings))}.", markup=False)


def delete_namespace(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    """Delete a namespace with its settings and every job of it (`default` cannot be deleted)."""
    app = load_app(ctx)

    async def body() -> bool:
        async with app:
            await app.aget_namespace(name)  # NotFound → exit 3
            return await app.adelete_namespace(name)

    run(body)
    console.print(f"Deleted namespace {name!r}.", markup=False)


# ---- migrate -----------------------------------------------------------------------------------------------------


def migrate(ctx: typer.Context) -> None:
    """Apply pending schema migrations (safe while other processes run; they also run on start)."""
    app = load_app(ctx)

    async def body() -> list[str]:
        from conveyor.server import tokens

        try:
            applied = await app.store.migrate()  # the same contract on every store (store/base.py "Migrations")
            if await tokens.migrate_legacy(app.store):
                applied.append("auth settings: the plain admin token hashed (server:auth)")
            return applied
        finally:
            await app.store.close()

    applied = run(body)
    target = redact(app.url)
    if applied:
        console.print(f"Applied {len(applied)} migration(s) to {target}: {', '.join(applied)}", markup=False)
    else:
        console.print(f"{target} is up to date.", markup=False)


queues_app.command("list")(list_queues)
queues_app.command("show")(show_queue)
queues_app.command("pause")(pause_queue)
queues_app.command("set")(set_queue)
queues_app.command("resume")(resume_queue)
namespaces_app.command("list")(list_namespaces)
namespaces_app.command("create")(create_namespace)
namespaces_app.command("show")(show_namespace)
namespaces_app.command("update")(update_namespace)
namespaces_app.command("delete")(delete_namespace)


def register(app: typer.Typer) -> None:
    app.command("stats")(stats)
    app.add_typer(queues_app)
    app.command("workers")(workers)
    app.add_typer(namespaces_app)
    app.command("migrate")(migrate)
