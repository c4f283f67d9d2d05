"""Cron schedules over HTTP (`/api/v1/schedules…`, admin only): the schedules declared in code (read-only) and
those made at runtime, kept in the store — list, read, create, update, pause, resume, delete, trigger now, and each
schedule's history. Everything goes through `app.schedules` (conveyor/schedules.py); docs/cron.md."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from conveyor.model import JSON, ScheduleRun
from conveyor.schedules import UNSET, ScheduleInfo
from conveyor.server.common import ERROR_RESPONSES, job_json, rfc3339
from conveyor.server.deps import ServerContext, get_context
from conveyor.server.schemas import JobOut, OkAnswer

router = APIRouter(prefix="/api/v1", tags=["schedules"], responses=ERROR_RESPONSES)

Backfill = Literal["none", "latest", "all"]


class ScheduleOut(BaseModel):
    name: str
    spec: str
    timezone: str = Field(description="IANA zone the spec is read in")
    task: str
    payload: Any = None
    namespace: str
    queue: str | None = None
    options: dict[str, Any] = Field(default_factory=dict, description="priority, max_attempts, …")
    backfill: Backfill
    backfill_window: float = Field(description="seconds")
    paused: bool
    source: Literal["code", "runtime"] = Field(description="code: declared with app.cron, read-only here")
    created_at: str | None = None
    updated_at: str | None = None
    last_run_at: str | None = Field(None, description="the newest occurrence that created a job")
    next_run_at: str | None = Field(None, description="null while paused")


class ScheduleList(BaseModel):
    items: list[ScheduleOut]


class ScheduleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    spec: str = Field(min_length=1, max_length=200, description="'30 2 * * *', '@daily', '@every 10m'")
    task: str = Field(min_length=1)
    payload: JSON = None
    timezone: str | None = Field(None, description="IANA zone, e.g. Europe/Berlin; UTC when omitted")
    namespace: str | None = None
    queue: str | None = None
    priority: int | None = Field(None, ge=-(2**31), le=2**31 - 1)
    max_attempts: int | None = Field(None, ge=1, le=1000)
    backfill: Backfill = "none"
    backfill_window: float | None = Field(None, ge=0, le=366 * 86400, description="seconds; 24 h when omitted")
    paused: bool = False


class SchedulePatch(BaseModel):
    """The fields to change; omitted ones keep their value (`queue: null` clears the queue, `payload: null` is a
    null payload)."""

    model_config = ConfigDict(extra="forbid")

    spec: str | None = Field(None, min_length=1, max_length=200)
    timezone: str | None = None
    task: str | None = Field(None, min_length=1)
    payload: JSON = None
    namespace: str | None = None
    queue: str | None = None
    priority: int | None = Field(None, ge=-(2**31), le=2**31 - 1)
    max_attempts: int | None = Field(None, ge=1, le=1000)
    backfill: Backfill | None = None
    backfill_window: float | None = Field(None, ge=0, le=366 * 86400)
    paused: bool | None = None


class ScheduleRunOut(BaseModel):
    occurrence: str
    job_id: str | None = None
    job: JobOut | None = Field(None, description="the job, while the store keeps it")
    manual: bool = False
    note: str | None = None
    recorded_at: str


class ScheduleRunList(BaseModel):
    items: list[ScheduleRunOut]


def schedule_json(info: ScheduleInfo) -> dict[str, Any]:
    out = info.to_dict()
    s = info.schedule
    out.update(
        created_at=rfc3339(s.created_at),
        updated_at=rfc3339(s.updated_at),
        last_run_at=rfc3339(info.last_run_at),
        next_run_at=rfc3339(info.next_run_at),
    )
    return out


@router.get("/schedules", response_model=ScheduleList, summary="Cron schedules")
async def list_schedules(ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    """Every schedule, by name: those declared in the server's app (`source: code`) and those made at runtime
    (`source: runtime`), each with its last and next run."""
    return JSONResponse({"items": [schedule_json(i) for i in await ctx.app.schedules.alist()]})


@router.post("/schedules", response_model=ScheduleOut, status_code=201, summary="Create a schedule")
async def create_schedule(body: ScheduleCreate, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    """Make a schedule at runtime, kept in the store; 409 when the name is taken (also by a code schedule)."""
    info = await ctx.app.schedules.acreate(
        body.name,
        body.spec,
        body.task,
        body.payload,
        timezone=body.timezone,
        backfill=body.backfill,
        backfill_window=None if body.backfill_window is None else timedelta(seconds=body.backfill_window),
        paused=body.paused,
        namespace=body.namespace,
        queue=body.queue,
        priority=body.priority,
        max_attempts=body.max_attempts,
    )
    return JSONResponse(schedule_json(info), status_code=201)


@router.get("/schedules/{name}", response_model=ScheduleOut, summary="A schedule")
async def get_schedule(name: str, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    return JSONResponse(schedule_json(await ctx.app.schedules.adescribe(name)))


@router.patch("/schedules/{name}", response_model=ScheduleOut, summary="Change a schedule")
async def update_schedule(name: str, body: SchedulePatch, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    """Change a runtime schedule (409 for one declared in code). A change of spec or timezone, or a resume, counts
    occurrences from now: nothing before it is back-filled."""
    given = body.model_fields_set
    info = await ctx.app.schedules.aupdate(
        name,
        spec=body.spec,
        timezone=body.timezone,
        task=body.task,
        payload=body.payload if "payload" in given else UNSET,
        namespace=body.namespace,
        queue=body.queue if "queue" in given else UNSET,
        priority=body.priority if "priority" in given else UNSET,
        max_attempts=body.max_attempts if "max_attempts" in given else UNSET,
        backfill=body.backfill,
        backfill_window=None if body.backfill_window is None else timedelta(seconds=body.backfill_window),
        paused=body.paused,
    )
    return JSONResponse(schedule_json(info))


@router.post("/schedules/{name}/pause", response_model=ScheduleOut, summary="Pause a schedule")
async def pause_schedule(name: str, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    """No occurrence is enqueued until it is resumed; those in between are not back-filled."""
    return JSONResponse(schedule_json(await ctx.app.schedules.apause(name)))


@router.post("/schedules/{name}/resume", response_model=ScheduleOut, summary="Resume a schedule")
async def resume_schedule(name: str, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    return JSONResponse(schedule_json(await ctx.app.schedules.aresume(name)))


@router.delete("/schedules/{name}", response_model=OkAnswer, summary="Delete a schedule")
async def delete_schedule(name: str, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    """Delete a runtime schedule with its history (its jobs stay); 409 for one declared in code."""
    await ctx.app.schedules.adelete(name)
    return JSONResponse({"ok": True})


@router.post("/schedules/{name}/trigger", response_model=JobOut, status_code=201, summary="Run a schedule now")
async def trigger_schedule(name: str, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
    """Enqueue one job of the schedule now, recorded in its history as a manual run; the regular occurrences stay
    as they were (code and runtime schedules, paused or not)."""
    return JSONResponse(job_json(await ctx.app.schedules.atrigger(name)), status_code=201)


@router.get("/schedules/{name}/runs", response_model=ScheduleRunList, summary="A schedule's history")
async def schedule_runs(
    name: str, ctx: ServerContext = Depends(get_context), limit: int = Query(20, ge=1, le=200)
) -> JSONResponse:
    """The occurrences the schedule handled and its manual runs, newest first: each with its job (while the store
    keeps it) or why there is none (`note`)."""
    items = []
    for run in await ctx.app.schedules.aruns(name, limit):
        items.append(await _run_json(ctx, run))
    return JSONResponse({"items": items})


async def _run_json(ctx: ServerContext, run: ScheduleRun) -> dict[str, Any]:
    job = None if run.job_id is None else await ctx.app.aget_job(run.job_id)
    return {
        "occurrence": rfc3339(run.occurrence),
        "job_id": run.job_id,
        "job": None if job is None else job_json(job),
        "manual": run.manual,
        "note": run.note,
        "recorded_at": rfc3339(run.recorded_at),
    }
