"""Conveyor inside a FastAPI app: the API enqueues, a worker in the same process runs the jobs.

    CONVEYOR_URL=sqlite:///conveyor.db uvicorn examples.fastapi_app:api

docs/fastapi.md walks through it; tests/examples/test_fastapi_example.py runs it under uvicorn on every store.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from conveyor import Conveyor, JobContext, Worker

queue = Conveyor(os.environ.get("CONVEYOR_URL", "sqlite:///conveyor.db"))


@queue.task("thumbnail", max_attempts=5, timeout=60)
async def thumbnail(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    await asyncio.sleep(0.05)  # the real work: fetch the image, resize it, upload it
    return {"url": f"{payload['image']}?w={payload['width']}", "attempt": ctx.attempt}


@asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    async with queue:  # opens the store on uvicorn's event loop, closes it on shutdown
        worker = Worker(queue, concurrency=4, install_signal_handlers=False)  # uvicorn handles the signals
        running = asyncio.create_task(worker.run())
        await worker.wait_started()
        try:
            yield
        finally:
            worker.stop()  # graceful: running jobs get the grace period, the rest are handed back
            await running


api = FastAPI(lifespan=lifespan)


class ThumbnailRequest(BaseModel):
    image: str
    width: int = 256


@api.post("/thumbnails", status_code=202)
async def request_thumbnail(request: ThumbnailRequest) -> dict[str, str]:
    job = await queue.aenqueue("thumbnail", request.model_dump())
    return {"job_id": job.id, "status": job.status}


@api.get("/jobs/{job_id}")
async def job_status(job_id: str) -> dict[str, Any]:
    job = await queue.aget_job(job_id)
    if job is None:
        raise HTTPException(status_code=404, detail=f"no job {job_id}")
    return {"job_id": job.id, "status": job.status, "result": job.result, "error": job.last_error}
