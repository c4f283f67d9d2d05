"""What the layer contract (pyproject.toml [tool.importlinter]) cannot see: imports made lazily, inside functions.
The CLI reaches the server's modules only in the commands that need them, so `conveyor worker` (and a worker started
from Python, the benchmark and the testing helpers) never loads the web stack."""

from __future__ import annotations

import subprocess
import sys

WEB_STACK = ("fastapi", "starlette", "pydantic", "uvicorn", "conveyor.server")


def test_worker_paths_load_no_web_stack() -> None:
    code = (
        "import sys\n"
        "import conveyor, conveyor.cli, conveyor.cli.run, conveyor.bench, conveyor.testing, conveyor.worker\n"
        "from conveyor import Conveyor, Worker\n"
        "app = Conveyor('memory://layers')\n"
        "Worker(app, install_signal_handlers=False)\n"
        f"print(sorted(m for m in {WEB_STACK!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
