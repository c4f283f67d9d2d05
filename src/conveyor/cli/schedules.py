"""`conveyor schedules list | show | create | update | pause | resume | delete | trigger | runs`: cron schedules, those
the loaded app declares in code (--app; read-only here) and those made at runtime, kept in the store (docs/cron.md).
`conveyor schedules` alone lists them, as it always did."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from conveyor.cli.common import EXIT_USAGE, console, escape, fail, get_state, load_app, run
from conveyor.cli.output import ago, job_dict, parse_duration, print_json, print_list, when
from conveyor.model import JSON, Job, ScheduleRun, utcnow
from conveyor.schedules import UNSET, ScheduleInfo

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]
Name = Annotated[str, typer.Argument(help="The schedule's name.")]
Backfill = Literal["none", "latest", "all"]

schedules_app = typer.Typer(
    name="schedules",
    help="Cron schedules: list (code and runtime); create, change, pause, resume, delete, trigger runtime ones.",
    invoke_without_command=True,
)


def _payload(text: str | None) -> JSON:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        fail(f"--payload must be JSON (e.g. '{{\"days\": 7}}'): {exc}", EXIT_USAGE)


def _backfill(text: str | None) -> Backfill | None:
    if text is None:
        return None
    if text not in ("none", "latest", "all"):
        fail(f"--backfill must be none, latest or all, got {text!r}", EXIT_USAGE)
    value: Backfill = text  # type: ignore[assignment]
    return value


def _window(text: str | None) -> timedelta | None:
    return None if text is None else timedelta(seconds=parse_duration(text))


def schedule_dict(info: ScheduleInfo) -> dict[str, Any]:
    return info.to_dict()


def _table(items: list[ScheduleInfo]) -> Table:
    now = utcnow()
    table = Table(title="Cron schedules", title_justify="left")
    table.add_column("name", overflow="fold")
    table.add_column("spec", no_wrap=True)
    table.add_column("zone", overflow="fold")
    table.add_column("task", overflow="fold")
    table.add_column("source", no_wrap=True)
    table.add_column("last run", no_wrap=True)
    table.add_column("next run (UTC)", no_wrap=True)
    table.add_column("payload / options", overflow="fold")
    for info in items:
        s = info.schedule
        nxt = "paused" if info.next_run_at is None else f"{when(info.next_run_at)} ({ago(info.next_run_at, now)})"
        extra = json.dumps(s.payload, default=str)
        if s.options:
            extra += " " + json.dumps(s.options, default=str)
        table.add_row(
            escape(s.name),
            escape(s.spec),
            escape(s.timezone),
            escape(s.task),
            s.source,
            "-" if info.last_run_at is None else when(info.last_run_at),
            nxt,
            escape(extra),
        )
    return table


def _print(info: ScheduleInfo, as_json: bool, verb: str) -> None:
    if as_json:
        print_json(schedule_dict(info))
        return
    state = "paused" if info.paused else f"next run {when(info.next_run_at)}"
    console.print(
        f"{verb} schedule {info.name!r} ({info.schedule.spec} {info.schedule.timezone}; {state}).", markup=False
    )


@schedules_app.callback()
def main(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Without a sub-command: list the schedules."""
    if ctx.invoked_subcommand is None:
        list_schedules(ctx, as_json)


@schedules_app.command("list")
def list_schedules(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every schedule: declared in the loaded app (--app, source code) and made at runtime (source runtime)."""
    app = load_app(ctx)

    async def body() -> list[ScheduleInfo]:
        async with app:
            return await app.schedules.alist()

    items = run(body)
    if as_json:
        print_list([schedule_dict(i) for i in items])
        return
    if not items:
        hint = "" if get_state(ctx).app_spec else " (load your app with --app module:attr for its code schedules)"
        console.print(f"No cron schedules{hint}.")
        return
    console.print(_table(items))


@schedules_app.command("show")
def show_schedule(ctx: typer.Context, name: Name, as_json: JsonOpt = False) -> None:
    """One schedule with its last and next run."""
    app = load_app(ctx)

    async def body() -> ScheduleInfo:
        async with app:
            return await app.schedules.adescribe(name)

    info = run(body)
    if as_json:
        print_json(schedule_dict(info))
        return
    console.print(_table([info]))


@schedules_app.command("create")
def create_schedule(
    ctx: typer.Context,
    name: Name,
    spec: Annotated[str, typer.Argument(help="'30 2 * * *', '@daily' or '@every 10m'.")],
    task: Annotated[str, typer.Argument(help="The task each occurrence enqueues.")],
    payload: Annotated[str | None, typer.Option("--payload", "-p", help="JSON payload of its jobs.")] = None,
    timezone: Annotated[str | None, typer.Option("--timezone", "--tz", help="IANA zone (default UTC).")] = None,
    namespace: Annotated[str | None, typer.Option("--namespace", "-n")] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-q")] = None,
    priority: Annotated[int | None, typer.Option("--priority")] = None,
    max_attempts: Annotated[int | None, typer.Option("--max-attempts")] = None,
    backfill: Annotated[str, typer.Option("--backfill", help="none, latest or all (missed occurrences).")] = "none",
    backfill_window: Annotated[str | None, typer.Option("--backfill-window", help="e.g. 6h (default 24h).")] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Make a schedule at runtime, kept in the store (its name may not be a code schedule's)."""
    app = load_app(ctx)
    value = _payload(payload)
    policy = _backfill(backfill) or "none"

    async def body() -> ScheduleInfo:
        async with app:
            return await app.schedules.acreate(
                name,
                spec,
                task,
                value,
                timezone=timezone,
                backfill=policy,
                backfill_window=_window(backfill_window),
                paused=paused,
                namespace=namespace,
                queue=queue,
                priority=priority,
                max_attempts=max_attempts,
            )

    _print(run(body), as_json, "Created")


@schedules_app.command("update")
def update_schedule(
    ctx: typer.Context,
    name: Name,
    spec: Annotated[str | None, typer.Option("--spec", help="A new cron spec.")] = None,
    task: Annotated[str | None, typer.Option("--task")] = None,
    payload: Annotated[
        str | None, typer.Option("--payload", "-p", help="A new JSON payload ('null' for none).")
    ] = None,
    timezone: Annotated[str | None, typer.Option("--timezone", "--tz")] = None,
    namespace: Annotated[str | None, typer.Option("--namespace", "-n")] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="A queue ('' for the task's default).")] = None,
    priority: Annotated[int | None, typer.Option("--priority")] = None,
    max_attempts: Annotated[int | None, typer.Option("--max-attempts")] = None,
    backfill: Annotated[str | None, typer.Option("--backfill", help="none, latest or all.")] = None,
    backfill_window: Annotated[str | None, typer.Option("--backfill-window", help="e.g. 6h.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a runtime schedule; only the options given change."""
    app = load_app(ctx)
    new_payload: JSON = UNSET if payload is None else _payload(payload)
    new_queue: str | Any | None = UNSET if queue is None else (queue or None)

    async def body() -> ScheduleInfo:
        async with app:
            return await app.schedules.aupdate(
                name,
                spec=spec,
                task=task,
                payload=new_payload,
                timezone=timezone,
                namespace=namespace,
                queue=new_queue,
                priority=UNSET if priority is None else priority,
                max_attempts=UNSET if max_attempts is None else max_attempts,
                backfill=_backfill(backfill),
                backfill_window=_window(backfill_window),
            )

    _print(run(body), as_json, "Updated")


@schedules_app.command("pause")
def pause_schedule(ctx: typer.Context, name: Name, as_json: JsonOpt = False) -> None:
    """Stop enqueueing a runtime schedule's occurrences (those until the resume are not back-filled)."""
    app = load_app(ctx)

    async def body() -> ScheduleInfo:
        async with app:
            return await app.schedules.apause(name)

    _print(run(body), as_json, "Paused")


@schedules_app.command("resume")
def resume_schedule(ctx: typer.Context, name: Name, as_json: JsonOpt = False) -> None:
    """Resume a paused runtime schedule from now."""
    app = load_app(ctx)

    async def body() -> ScheduleInfo:
        async with app:
            return await app.schedules.aresume(name)

    _print(run(body), as_json, "Resumed")


@schedules_app.command("delete")
def delete_schedule(ctx: typer.Context, name: Name) -> None:
    """Delete a runtime schedule and its history (its jobs stay)."""
    app = load_app(ctx)

    async def body() -> None:
        async with app:
            await app.schedules.adelete(name)

    run(body)
    console.print(f"Deleted schedule {name!r}.", markup=False)


@schedules_app.command("trigger")
def trigger_schedule(ctx: typer.Context, name: Name, as_json: JsonOpt = False) -> None:
    """Enqueue one job of the schedule now (code or runtime), recorded in its history as a manual run."""
    app = load_app(ctx)

    async def body() -> Job:
        async with app:
            return await app.schedules.atrigger(name)

    job = run(body)
    if as_json:
        print_json(job_dict(job))
        return
    console.print(f"Triggered {name!r}: job {job.id} ({job.task}).", markup=False)


@schedules_app.command("runs")
def schedule_runs(
    ctx: typer.Context,
    name: Name,
    limit: Annotated[int, typer.Option("--limit", min=1, max=200)] = 20,
    as_json: JsonOpt = False,
) -> None:
    """A schedule's history, newest first: each occurrence's job (or why there is none) and the manual runs."""
    app = load_app(ctx)

    async def body() -> list[ScheduleRun]:
        async with app:
            return await app.schedules.aruns(name, limit)

    runs = run(body)
    if as_json:
        print_list(
            [
                {
                    "occurrence": r.occurrence.isoformat(),
                    "job_id": r.job_id,
                    "manual": r.manual,
                    "note": r.note,
                    "recorded_at": r.recorded_at.isoformat(),
                }
                for r in runs
            ]
        )
        return
    if not runs:
        console.print(f"No runs of {name!r} yet.", markup=False)
        return
    table = Table(title=f"Runs of {escape(name)}", title_justify="left")
    table.add_column("occurrence (UTC)", no_wrap=True)
    table.add_column("job", overflow="fold")
    table.add_column("kind", no_wrap=True)
    table.add_column("note", overflow="fold")
    for r in runs:
        table.add_row(when(r.occurrence), r.job_id or "-", "manual" if r.manual else "cron", escape(r.note or ""))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(schedules_app)
