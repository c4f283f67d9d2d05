"""The tasks `conveyor serve --app tests.server.gs2_scenario_app:app` runs for the GS2 scenario tests."""

from __future__ import annotations

import os
from typing import Any

from conveyor import Conveyor

app = Conveyor(os.environ["CONVEYOR_URL"])
FLAKY_FAILS = {"n": 0}


@app.task("grant")
def grant(payload: dict[str, Any]) -> dict[str, Any]:
    return {"granted": payload.get("item"), "n": payload.get("n", 1)}


@app.task("flaky", max_attempts=3)
def flaky(payload: dict[str, Any]) -> str:
    """Fails its first try, succeeds the second (the Run loop must run it again at once)."""
    FLAKY_FAILS["n"] += 1
    if FLAKY_FAILS["n"] % 2 == 1:
        raise RuntimeError("the reward service is down")
    return "ok"


@app.task("broken")
def broken(payload: Any) -> None:
    raise RuntimeError("always fails")
