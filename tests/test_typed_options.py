"""The options of `enqueue`, `enqueue_many`, `task`, `cron` and `run_worker` are typed (explicit keyword arguments or
`Unpack[TypedDict]`, no `**options: Any`): a misspelled option is a mypy error in the caller's code, and a clear
TypeError naming it at run time."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conveyor import Conveyor
from conveyor.tasks import ENQUEUE_OPTIONS, EnqueueOptions

SNIPPET = """
from conveyor import Conveyor

app = Conveyor("memory://typed-options")


@app.task("fine", max_attempts=3, queue="q")
def fine(payload: object) -> None: ...


@app.task("bad", max_attempt=3)  # line 10
def bad(payload: object) -> None: ...


app.enqueue("fine", {"a": 1}, queue="q", priority=1, delay=5.0, unique_key="k")
app.enqueue("fine", {"a": 1}, quee="q")  # line 15
app.enqueue("fine", priority="high")  # line 16
app.cron("@hourly", "fine", {"a": 1}, name="n", queue="q")
app.cron("@hourly", "fine", delay=5)  # line 18
app.run_worker(concurrency=2, queues=["q"])
app.run_worker(concurency=2)  # line 20


async def main() -> None:
    await app.aenqueue("fine", None, namespce="x")  # line 24
    await app.arun_worker(queues=["q"], grace_period=1.0)
"""


@pytest.mark.slow
def test_a_misspelled_option_is_a_type_error(tmp_path: Path) -> None:
    source = tmp_path / "caller.py"
    source.write_text(textwrap.dedent(SNIPPET).lstrip("\n"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--config-file",
            "/dev/null",
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors: dict[int, str] = {}
    for line in result.stdout.splitlines():
        if "caller.py:" in line and ": error:" in line:
            number = int(line.split("caller.py:")[1].split(":")[0])
            errors[number] = errors.get(number, "") + line + "\n"
    assert sorted(errors) == [10, 15, 16, 18, 20, 24], result.stdout
    assert '"max_attempt"' in errors[10]
    assert '"quee"' in errors[15]
    assert '"priority"' in errors[16]
    assert '"delay"' in errors[18]
    assert '"concurency"' in errors[20]
    assert '"namespce"' in errors[24]


def test_a_misspelled_option_is_a_type_error_at_run_time() -> None:
    app = Conveyor("memory://typed-options-runtime")
    with pytest.raises(TypeError, match=r"unknown option 'quee'.*queue"):
        app.enqueue("t", None, quee="q")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"unknown option 'delai'"):
        app.cron("@hourly", "t", delai=5)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="concurency"):
        app.run_worker(concurency=2)  # type: ignore[call-arg]
    assert app.list_jobs().total == 0  # nothing was stored by the refused calls
    app.close()


def test_the_typed_options_are_the_ones_a_job_is_built_from() -> None:
    """Every option of `EnqueueOptions` is a keyword of the job builder, so the type and the code cannot drift."""
    import inspect

    from conveyor.model import NewJob

    assert set(EnqueueOptions.__annotations__) == ENQUEUE_OPTIONS
    assert set(inspect.signature(NewJob.build).parameters) >= ENQUEUE_OPTIONS
