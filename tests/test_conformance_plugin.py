"""The shipped conformance suite, run as a third party runs it: `pytest --pyargs conveyor.conformance
--conveyor-store=…` in a directory of its own (no tests/, no pyproject of this repository), in a subprocess.
A sound store passes; a store subclass that breaks one promise fails, naming the test it broke."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(900)  # a whole suite in a subprocess, on a loaded CI machine

_STORES = '''
from conveyor.conformance import StoreHarness
from conveyor.store.memory import MemoryStore


class Forgetful(MemoryStore):
    """Breaks one promise: kv_get never finds what kv_set stored."""

    async def kv_get(self, key: str) -> str | None:
        return None


def sound() -> StoreHarness:
    return StoreHarness(name="sound", store_class=MemoryStore, base_url="memory://")


broken = StoreHarness(name="broken", store_class=Forgetful, base_url="memory://")
'''


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "thirdparty_stores.py").write_text(_STORES)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_TEST_STORES", "PYTEST_"))}
    env["PYTHONPATH"] = str(tmp_path)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--pyargs", "conveyor.conformance", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=880,
    )


def test_the_whole_suite_passes_on_the_memory_store_through_the_public_entry(tmp_path: Path) -> None:
    done = _run(tmp_path, "--conveyor-store=memory")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


def test_a_third_party_harness_passes_and_a_broken_store_fails(tmp_path: Path) -> None:
    done = _run(
        tmp_path,
        "--conveyor-store=thirdparty_stores:sound",
        "--conveyor-store=thirdparty_stores:broken",
        "-k",
        "test_store_kv",
    )
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
    assert failed and all("[broken]" in line for line in failed), done.stdout[-3000:]
    assert "[sound]" not in "\n".join(failed)
    assert " passed" in done.stdout


def test_without_a_store_the_suite_says_how_to_name_one(tmp_path: Path) -> None:
    done = _run(tmp_path)
    assert done.returncode != 0
    assert "--conveyor-store" in done.stdout + done.stderr


def test_a_wrong_store_spec_is_refused_with_what_is_accepted(tmp_path: Path) -> None:
    done = _run(tmp_path, "--conveyor-store=thirdparty_stores:missing")
    assert done.returncode != 0
    assert "cannot load it" in done.stdout + done.stderr
