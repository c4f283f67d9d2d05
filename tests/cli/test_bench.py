"""`conveyor bench` with a tiny N: the JSON report is complete and consistent (no timing assertions)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

import pytest

from conveyor.bench import isolate
from tests.cli.conftest import Cli

TINY = ["-n", "40", "--batch-size", "15", "--warmup", "10", "--rate", "50", "--duration", "0.4", "--json"]


def _report(cli: Cli, *args: str) -> dict[str, object]:
    result = cli("bench", *args)
    assert result.exit_code == 0, result.output
    report: dict[str, object] = json.loads(result.stdout)
    return report


def test_bench_json_on_a_temporary_sqlite_file(tmp_path: Path) -> None:
    report = _report(Cli("sqlite:///unused.db"), "--store", f"sqlite:///{tmp_path}/given.db", *TINY)
    assert report["store"]["kind"] == "sqlite"  # type: ignore[index]
    assert report["enqueue_single"]["jobs"] == 40  # type: ignore[index]
    assert report["enqueue_batch"]["batch_size"] == 15  # type: ignore[index]
    drain = report["drain"]
    assert isinstance(drain, dict) and drain["jobs"] == 80 and drain["jobs_per_s"] > 0
    latency = report["latency"]
    assert isinstance(latency, dict) and latency["jobs"] == 20
    assert 0 <= latency["p50_ms"] <= latency["p90_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    remote = report["latency_remote"]  # the same, enqueued by another process (SQLite: polling wakes the worker)
    assert isinstance(remote, dict) and remote["jobs"] == 20 and remote["warmup_jobs"] == 50
    assert 0 <= remote["p50_ms"] <= remote["p90_ms"] <= remote["p99_ms"] <= remote["max_ms"]
    final = report["final_stats"]
    assert isinstance(final, dict) and final["completed"] == final["expected_completed"] == 10 + 80 + 20 + 50 + 20
    assert final["failed"] == final["pending"] == 0
    machine = report["machine"]
    assert isinstance(machine, dict) and machine["cores"] >= 1
    # the given file was never touched and the benchmark's own was removed
    assert not (tmp_path / "given.db").exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.stores("postgresql", "redis", "memory")
def test_bench_json_on_each_store(cli: Cli) -> None:
    report = _report(cli, "--store", cli.url, *TINY)
    final = report["final_stats"]
    assert isinstance(final, dict) and final["completed"] == final["expected_completed"]
    # another process cannot reach a memory store, so that phase only runs on the others
    assert ("latency_remote" in report) == (not cli.url.startswith("memory:"))


def test_bench_table(tmp_path: Path) -> None:
    result = Cli(f"sqlite:///{tmp_path}/x.db")("bench", *TINY[:-1])
    assert result.exit_code == 0, result.output
    assert "drain" in result.stdout and "p50" in result.stdout and "cores" in result.stdout


def test_isolation_never_reuses_the_given_store() -> None:
    pg = isolate("postgresql://postgres@127.0.0.1:5432/test?schema=mine&connect_timeout=3")
    assert "schema=conveyor_bench_" in pg.url and "schema=mine" not in pg.url and "connect_timeout=3" in pg.url
    rd = isolate("redis://127.0.0.1:6379/0?prefix=mine")
    assert "prefix=conveyor_bench_" in rd.url and "prefix=mine" not in rd.url
    tmp = isolate(None)
    try:
        assert tmp.url.startswith("sqlite:////") and tmp.url.endswith("/bench.db")
    finally:
        asyncio.run(tmp.cleanup())


@pytest.mark.skipif(importlib.util.find_spec("conveyor.server") is None, reason="the HTTP server is not installed")
def test_bench_http_auto(tmp_path: Path) -> None:
    report = _report(
        Cli(f"sqlite:///{tmp_path}/x.db"), "--http", "auto", "-n", "30", "--warmup", "5", "--connections", "3", "--json"
    )
    http = report["http"]
    assert isinstance(http, dict)
    assert http["requests"] == 30 and http["ok"] == 30 and http["errors"] == 0 and http["requests_per_s"] > 0
    assert list(tmp_path.iterdir()) == []


def test_sigterm_mid_run_still_removes_the_benchmark_store(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from tests.cli.conftest import REPO, wait_for

    process = subprocess.Popen(
        [sys.executable, "-m", "conveyor.cli", "bench", "--store", f"sqlite:///{tmp_path}/x.db", "-n", "1000000"],
        cwd=REPO,
        env={**os.environ, "COLUMNS": "120"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: list(tmp_path.glob("conveyor-bench-*/bench.db")), 60, "the benchmark's database")
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1
    assert b"interrupted" in err and b"Traceback" not in err
    assert list(tmp_path.iterdir()) == []
