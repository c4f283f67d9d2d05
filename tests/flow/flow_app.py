"""The app the flow-control process tests' workers load: `conveyor --app tests.flow.flow_app:make_app worker …`
with CONVEYOR_URL naming the store. `flow:noop` returns at once; `flow:sleep` sleeps payload["s"] seconds."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from conveyor import Conveyor


def make_app() -> Conveyor:
    app = Conveyor(os.environ.get("CONVEYOR_URL"))

    @app.task("flow:noop")
    async def noop(payload: Any) -> None:
        return None

    @app.task("flow:sleep")
    async def sleep(payload: dict[str, Any]) -> None:
        await asyncio.sleep(float(payload.get("s", 0.0)))

    return app
