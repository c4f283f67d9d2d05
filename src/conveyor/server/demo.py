"""The go-webdb-template demo endpoint (SPEC §6): `POST /api/dm-jobqueue/register`.

Served only with `demo=True`. Registering a job is an enqueue, so it takes the admin token: user tokens never
enqueue (`conveyor.server.access`). The handler and its defaults live in `conveyor.demo`, shared with
`conveyor worker --demo`.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from conveyor.demo import DEMO_TASK, demo_enqueue_options
from conveyor.errors import StoreUnavailable
from conveyor.server.common import ERROR_RESPONSES, reject_nul
from conveyor.server.deps import ServerContext, get_context
from conveyor.server.schemas import DemoRegisterAnswer, DemoRegisterBody

router = APIRouter(tags=["jobqueue-demo"])


@router.post(
    "/api/dm-jobqueue/register",
    response_model=DemoRegisterAnswer,
    status_code=201,
    responses=ERROR_RESPONSES,
    summary="Register the demo job (register-demo-job)",
)
async def register_demo_job(
    body: DemoRegisterBody | None = None,
    ctx: ServerContext = Depends(get_context),
) -> JSONResponse:
    """Schedule `demo:delay_print` with `message` (default "Job executed successfully") after `delay_seconds`
    (≤ 0 or absent → 180) with `max_retry` retries (≤ 0 or absent → 10). The server prints
    `[YYYY-MM-DD HH:MM:SS] <message>` when it runs."""
    body = body or DemoRegisterBody(message=None, delay_seconds=None, max_retry=None)
    reject_nul(body.message, "message")
    options = demo_enqueue_options(body.message, body.delay_seconds, body.max_retry)
    try:
        job = await ctx.app.aenqueue(DEMO_TASK, **options)
    except StoreUnavailable as exc:
        prefix = "job queue service is unavailable"  # the Go template's 503 text; Redis's message already has it
        if exc.message.startswith(prefix):
            raise
        raise StoreUnavailable(f"{prefix}: {exc.message}") from None
    return JSONResponse({"job_id": job.id, "status": "registered"}, status_code=201)
