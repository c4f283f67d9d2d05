"""A user's app for the CLI tests, loaded with `--app tests.cli.sample_app:make_app`.

A factory (not a module-level app) so that every in-process CLI invocation gets a fresh app bound to its own
event loop, as every separate `conveyor` process would."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from conveyor import Conveyor, Retry


def make_app() -> Conveyor:
    app = Conveyor(os.environ.get("CONVEYOR_URL"))

    @app.task("echo")
    def echo(payload: Any) -> Any:
        return payload

    @app.task("boom", max_attempts=1)
    def boom(payload: Any) -> None:
        raise RuntimeError(f"boom: {payload}")

    @app.task("flaky", max_attempts=2)
    def flaky(payload: Any) -> None:
        raise Retry(0.05, reason="try again soon")

    @app.task("slow")
    async def slow(payload: Any) -> str:
        await asyncio.sleep(float(payload.get("seconds", 1)) if isinstance(payload, dict) else 1.0)
        return "slept"

    app.cron("*/5 * * * *", "echo", {"from": "cron"}, name="every-5-minutes")
    return app
