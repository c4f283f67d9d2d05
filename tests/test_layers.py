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


def test_no_import_cycle_between_any_two_modules() -> None:
    """import-linter's `acyclic_siblings` contract sees cycles between siblings; this sees every cycle, between any
    modules of the package at any depth (lazy and TYPE_CHECKING imports included: an import is an import)."""
    import grimp

    graph = grimp.build_graph("conveyor", exclude_type_checking_imports=False, cache_dir=None)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(root: str) -> None:  # Tarjan's strongly connected components, iteratively
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    assert cycles == [], f"import cycles: {cycles}"
