"""`conveyor enqueue` and `conveyor jobs list|show|requeue|cancel|delete`: put work in and look after it."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from conveyor.app import unserved_warning
from conveyor.cli.common import EXIT_USAGE, console, err_console, escape, fail, load_app, run, warn
from conveyor.cli.output import (
    ago,
    attempt_dict,
    duration,
    job_dict,
    print_json,
    styled_status,
    when,
)
from conveyor.errors import InvalidTransition, JobNotFound, NamespaceNotFound, ValidationError
from conveyor.logsafe import printable
from conveyor.model import (
    JSON,
    MAX_INT_PARAMETER,
    Attempt,
    Job,
    JobFilter,
    JobSort,
    JobStatus,
    Page,
    decode_cursor,
    encode_cursor,
    loads_json,
)

jobs_app = typer.Typer(
    name="jobs", help="List, inspect, requeue, cancel and delete jobs.", no_args_is_help=True, add_completion=False
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]


def parse_payload(text: str | None) -> JSON:
    """The PAYLOAD_JSON argument: inline JSON, `@file.json`, or `-` for stdin. Bad JSON is a usage error (2)."""
    if text is None:
        return None
    source = "PAYLOAD_JSON"
    if text == "-":
        text, source = sys.stdin.read(), "stdin"
    elif text.startswith("@"):
        path = Path(text[1:])
        try:
            text, source = path.read_text(encoding="utf-8"), str(path)
        except OSError as exc:
            fail(f"cannot read payload file {str(path)!r}: {exc.strerror or exc}", EXIT_USAGE)
    try:
        json.loads(text)  # for the position of a syntax error
    except json.JSONDecodeError as exc:
        fail(
            f"{source} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            'quote it for your shell, e.g. \'{"to": "a@b.c"}\'',
            EXIT_USAGE,
        )
    try:  # strictly: no NaN/Infinity, no lone surrogates or NUL, which no store can keep
        return loads_json(text, "payload")
    except ValidationError as exc:
        fail(f"{source}: {exc.message}", EXIT_USAGE)


def parse_run_at(text: str | None) -> datetime | None:
    """ISO 8601; a time without a zone is taken as UTC (what the store keeps and what `jobs list` shows)."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"--run-at {text!r} is not an ISO 8601 time, e.g. 2026-01-31T09:30:00Z", EXIT_USAGE)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def enqueue(
    ctx: typer.Context,
    task: Annotated[str, typer.Argument(help="The task name, e.g. send_email.")],
    payload: Annotated[
        str | None, typer.Argument(metavar="[PAYLOAD_JSON]", help="JSON payload; '@file.json' reads a file, '-' stdin.")
    ] = None,
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace.")] = "default",
    queue: Annotated[
        str | None, typer.Option("--queue", "-q", help="Queue (default: the task's, else 'default').")
    ] = None,
    priority: Annotated[int | None, typer.Option("--priority", "-p", help="Lower runs first (default 0).")] = None,
    delay: Annotated[float | None, typer.Option("--delay", "-d", help="Run after this many seconds.")] = None,
    run_at: Annotated[str | None, typer.Option("--run-at", help="Run at this ISO 8601 time (UTC if no zone).")] = None,
    max_attempts: Annotated[int | None, typer.Option("--max-attempts", help="1-100 (default 3).")] = None,
    user: Annotated[str | None, typer.Option("--user", "-u", help="Owner: the user's jobs run one at a time.")] = None,
    group: Annotated[str | None, typer.Option("--group", "-g", help="Group key: its jobs run one at a time.")] = None,
    unique_key: Annotated[
        str | None, typer.Option("--unique-key", help="Store nothing if an active job has this key.")
    ] = None,
    concurrency_key: Annotated[
        str | None,
        typer.Option("--concurrency-key", help="Its queue's key_concurrency limits the jobs of this key at once."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Enqueue one job and print its id."""
    value = parse_payload(payload)
    when_at = parse_run_at(run_at)
    if delay is not None and when_at is not None:
        fail("give either --delay or --run-at, not both", EXIT_USAGE)
    app = load_app(ctx)
    options: dict[str, Any] = {"namespace": namespace}
    for key, option in (
        ("queue", queue),
        ("priority", priority),
        ("delay", delay),
        ("run_at", when_at),
        ("max_attempts", max_attempts),
        ("user_id", user),
        ("group_key", group),
        ("unique_key", unique_key),
        ("concurrency_key", concurrency_key),
    ):
        if option is not None:
            options[key] = option

    async def body() -> tuple[Job, list[str]]:
        async with app:
            job = await app.aenqueue(task, value, **options)
            notes = [unserved_warning(name) for name in await app.aunserved_tasks([job.task])]
            try:
                await app.aget_namespace(job.namespace)
            except NamespaceNotFound:
                notes.append(
                    f"namespace {job.namespace!r} does not exist: the job was stored and runs with a namespace's "
                    f"default settings; a typo? `conveyor namespaces list` shows those that exist, "
                    f"`conveyor namespaces create {job.namespace}` makes it"
                )
            return job, notes

    job, notes = run(body)
    for note in notes:
        warn(note)
    if as_json:
        print_json(job_dict(job))
        return
    console.print(job.id, markup=False, soft_wrap=True)
    if job.duplicate:
        err_console.print(f"note: an active job with unique key {unique_key!r} exists; nothing new was stored")


def list_jobs(
    ctx: typer.Context,
    namespace: Annotated[str | None, typer.Option("--namespace", "-n")] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-q")] = None,
    task: Annotated[str | None, typer.Option("--task", "-t")] = None,
    status: Annotated[JobStatus | None, typer.Option("--status", "-s", case_sensitive=False)] = None,
    user: Annotated[str | None, typer.Option("--user", "-u")] = None,
    limit: Annotated[int, typer.Option("--limit", "-l", min=1, max=1000)] = 20,
    offset: Annotated[int, typer.Option("--offset", min=0, max=MAX_INT_PARAMETER)] = 0,
    cursor: Annotated[
        str | None,
        typer.Option(
            "--cursor",
            help="Continue after the page that printed this cursor (jobs run or added meanwhile "
            "never make a page skip or repeat one).",
        ),
    ] = None,
    sort: Annotated[
        JobSort, typer.Option("--sort", help="Order; ties by id; '-' is descending.")
    ] = JobSort.CREATED_DESC,
    search: Annotated[
        str | None, typer.Option("--search", help="Text in the payload (case-insensitive).", show_default=False)
    ] = None,
    wide: Annotated[
        bool, typer.Option("--wide", "-w", help="Every column, whatever the terminal's width.", show_default=False)
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """List jobs, newest first, with filters and paging."""
    app = load_app(ctx)

    async def body() -> Page[Job]:
        after = None if cursor is None else decode_cursor(cursor, sort, field="--cursor")
        async with app:
            flt = JobFilter(namespace=namespace, queue=queue, task=task, status=status, user_id=user, q=search or None)
            return await app.alist_jobs(flt, limit=limit, offset=offset, after=after, sort=sort)

    page = run(body)
    items, total = list(page.items), page.total
    next_cursor = None if page.next is None else encode_cursor(page.next)
    if as_json:
        print_json(
            {
                "items": [job_dict(j) for j in items],
                "total": total,
                "limit": limit,
                "offset": offset,
                "next_cursor": next_cursor,
            }
        )
        return
    if not items:
        console.print(f"No jobs{' on this page' if total else ''} (total {total}).")
        return
    table = jobs_table(items, f"{len(items)} of {total} jobs", wide=wide, width=console.width)
    if wide:  # every column at its natural width; the terminal wraps what does not fit
        natural = console.measure(table, options=console.options.update(width=10_000)).maximum
        Console(
            file=sys.stdout,
            width=max(console.width, natural),
            highlight=False,
            color_system=console.color_system,  # type: ignore[arg-type]
            force_terminal=console.is_terminal,
        ).print(table)
    else:
        console.print(table)
    if next_cursor is not None:
        console.print(f"Next page: --cursor {next_cursor}", markup=False, soft_wrap=True)


_JOB_COLUMNS: tuple[tuple[str, int], ...] = (
    # (header, the width it needs), most important first: what fits the terminal is shown, in this order's
    # priority; the rest need --wide. The id is never cut (it is what every other command takes).
    ("id", 36),
    ("status", 10),
    ("task", 10),
    ("tries", 5),
    ("created", 8),
    ("ns/queue", 14),
    ("run at (UTC)", 19),
    ("user", 8),
)
_ORDER = ("id", "task", "status", "tries", "ns/queue", "user", "run at (UTC)", "created")


def job_columns(width: int, *, wide: bool = False) -> list[str]:
    """The columns of `jobs list` that fit `width` (all with `wide`), in display order."""
    return list(_fit(width, wide=wide))


def _fit(width: int, *, wide: bool) -> dict[str, int | None]:
    """Column → the widest it may be (None: its natural width), chosen by priority to fit `width`; the width left
    over may be taken by the task name, namespace/queue and user (cut with an ellipsis beyond it)."""
    if wide:
        return dict.fromkeys(_ORDER)
    chosen: dict[str, int | None] = {}
    used = 0
    for header, need in _JOB_COLUMNS:
        cost = need + 2  # a space of padding on each side
        if chosen and used + cost > width:
            continue
        chosen[header] = need
        used += cost
    spare = max(0, width - used)  # the free width: any flexible column may grow into it (Rich shares it out)
    for header in ("task", "ns/queue", "user"):
        if header in chosen:
            chosen[header] = (chosen[header] or 0) + spare
    return {header: chosen[header] for header in _ORDER if header in chosen}


def jobs_table(items: list[Job], title: str, *, wide: bool, width: int) -> Table:
    """`jobs list`'s table: no vertical rules, columns chosen by priority to fit the terminal (--wide: all)."""
    columns = _fit(width, wide=wide)
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, expand=False)
    for header, widest in columns.items():
        if header == "id":
            table.add_column(header, no_wrap=True, min_width=36)
        elif header in ("task", "ns/queue", "user"):
            table.add_column(header, overflow="fold" if wide else "ellipsis", no_wrap=not wide, max_width=widest)
        elif header == "tries":
            table.add_column(header, justify="right", no_wrap=True)
        else:
            table.add_column(header, no_wrap=True)
    for job in items:
        cells = {
            "id": job.id,
            "task": escape(job.task),
            "status": styled_status(job),
            "tries": f"{job.attempts}/{job.max_attempts}",
            "ns/queue": escape(f"{job.namespace}/{job.queue}"),
            "user": escape(job.user_id or job.group_key or "-"),
            "run at (UTC)": when(job.run_at),
            "created": ago(job.created),
        }
        table.add_row(*(cells[header] for header in columns))
    return table


def show_job(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID", help="The job id.")],
    as_json: JsonOpt = False,
) -> None:
    """Show a job and every attempt, with errors and tracebacks."""
    app = load_app(ctx)

    async def body() -> tuple[Job, list[Attempt]]:
        async with app:
            job = await app.aget_job(job_id)
            if job is None:
                raise JobNotFound(job_id)
            return job, await app.aattempts(job_id)

    job, attempts = run(body)
    if as_json:
        print_json({"job": job_dict(job), "attempts": [attempt_dict(a) for a in attempts]})
        return
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column(overflow="fold")
    rows: list[tuple[str, str]] = [
        ("id", job.id),
        ("task", escape(job.task)),
        ("status", styled_status(job) + (" [red](cancel requested)[/]" if job.cancel_requested else "")),
        ("namespace / queue", escape(f"{job.namespace} / {job.queue}")),
        ("priority", str(job.priority)),
        ("attempts", f"{job.attempts} of {job.max_attempts} (try #{job.try_number})"),
        ("run at", f"{when(job.run_at)} UTC ({ago(job.run_at)})"),
        ("created / updated", f"{when(job.created)} / {when(job.updated)}"),
    ]
    for label, value in (("user", job.user_id), ("group", job.group_key), ("unique key", job.unique_key)):
        if value is not None:
            rows.append((label, escape(value)))
    if job.started_at or job.finished_at:
        rows.append(("started / finished", f"{when(job.started_at)} / {when(job.finished_at)}"))
    if job.worker_id:
        rows.append(("worker", escape(f"{job.worker_id} (lease until {when(job.lease_expires_at)})")))
    rows.append(("payload", escape(json.dumps(job.payload, ensure_ascii=False))))
    if job.result is not None:
        rows.append(("result", escape(json.dumps(job.result, ensure_ascii=False, default=str))))
    if job.last_error:
        rows.append(("last error", f"[red]{escape(job.last_error)}[/]"))
    for label, value in rows:
        info.add_row(label, value)
    console.print(Panel(info, title=f"Job {job.id}", title_align="left", expand=False))

    if not attempts:
        console.print("No attempts yet.")
        return
    table = Table(title=f"{len(attempts)} attempt(s)", title_justify="left")
    table.add_column("try", justify="right")
    table.add_column("outcome")
    table.add_column("code", justify="right")
    table.add_column("started (UTC)", no_wrap=True)
    table.add_column("duration", justify="right")
    table.add_column("worker", overflow="fold")
    table.add_column("error / result", overflow="fold")
    for attempt in attempts:
        style = "green" if attempt.succeeded else "red"
        detail = attempt.error if attempt.error else json.dumps(attempt.result, ensure_ascii=False, default=str)
        table.add_row(
            str(attempt.try_number),
            f"[{style}]{attempt.outcome.value}[/]",
            str(attempt.status_code),
            when(attempt.started_at),
            duration(attempt.duration),
            escape(attempt.worker_id or "-"),
            escape(detail),
        )
    console.print(table)
    for attempt in attempts:
        if attempt.traceback:
            console.print(f"[bold]Traceback of try #{attempt.try_number}:[/]")
            lines = attempt.traceback.rstrip().split("\n")  # a traceback has its lines; nothing else may break them
            console.print(Text("\n".join(printable(line) for line in lines)), soft_wrap=True)


def _change(ctx: typer.Context, job_id: str, action: str, as_json: bool, *, force: bool = False) -> None:
    app = load_app(ctx)

    async def body() -> Job:
        async with app:
            if action == "requeue":
                return await app.arequeue(job_id)
            if action == "cancel":
                return await app.acancel(job_id)
            if action == "run-now":
                return await app.arun_now(job_id)
            try:
                return await app.adelete(job_id, force=force)
            except InvalidTransition as exc:
                raise InvalidTransition(f"{exc.message}; add --force to delete it whatever its status") from None

    job = run(body)
    if as_json:
        print_json(job_dict(job))
        return
    if action == "delete":
        console.print(f"Deleted job {job.id} (was {job.status.value}).")
    elif action == "cancel" and job.status is JobStatus.PROCESSING:
        console.print(f"Cancel requested for running job {job.id}; its worker stops it.")
    else:
        console.print(f"Job {job.id} is now {job.status.value}.")


def requeue_job(
    ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonOpt = False
) -> None:
    """Requeue a failed (or cancelled) job: attempts reset, runs now."""
    _change(ctx, job_id, "requeue", as_json)


def cancel_job(
    ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonOpt = False
) -> None:
    """Cancel a pending job, or ask a running one to stop."""
    _change(ctx, job_id, "cancel", as_json)


def run_job_now(
    ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonOpt = False
) -> None:
    """Make a scheduled (pending) job due now."""
    _change(ctx, job_id, "run-now", as_json)


def delete_job(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    force: Annotated[bool, typer.Option("--force", "-f", help="Delete whatever its status.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete a pending or failed job with its attempts (--force: any status)."""
    _change(ctx, job_id, "delete", as_json, force=force)


jobs_app.command("list")(list_jobs)
jobs_app.command("show")(show_job)
jobs_app.command("requeue")(requeue_job)
jobs_app.command("cancel")(cancel_job)
jobs_app.command("run-now")(run_job_now)
jobs_app.command("delete")(delete_job)


def register(app: typer.Typer) -> None:
    app.command("enqueue")(enqueue)
    app.add_typer(jobs_app)
