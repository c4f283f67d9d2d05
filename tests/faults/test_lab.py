"""The fault lab cleans up after itself, and after runs that were killed before they could."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.faults.lab import Lab, reap_leftovers
from tests.faults.netns import NetLab
from tests.faults.workers import REPO

pytestmark = pytest.mark.slow

_BUILD = """
import sys, time
from tests.faults.lab import Lab
from tests.faults.netns import NetLab
from tests.faults.servers import PrivatePostgres, PrivateRedis
lab = Lab()
host = NetLab(lab).add_host("h1")
pg = PrivatePostgres(lab, listen=[host.store_ip]); pg.start()
redis = PrivateRedis(lab, bind=[host.store_ip]); redis.start()
print(lab.dir, host.netns, redis.proc.pid, pg.datadir, flush=True)
time.sleep(600)
"""


def _netns() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of a killed child is not alive for our purposes
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_killed_run_leaves_nothing_behind_after_the_next_one_starts() -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}"}
    proc = subprocess.Popen([sys.executable, "-c", _BUILD], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line, "the lab did not come up"
        lab_dir, netns, redis_pid, datadir = Path(line[0]), line[1], int(line[2]), Path(line[3])
        postmaster = int((datadir / "postmaster.pid").read_text().split()[0])
        assert netns in _netns() and _alive(redis_pid) and _alive(postmaster)
    finally:
        proc.send_signal(signal.SIGKILL)  # no cleanup ran: the namespace and both servers are left behind
        proc.wait(10)
    assert netns in _netns() and _alive(redis_pid) and _alive(postmaster)

    with Lab():  # the next run's lab reaps what the dead one left
        deadline = time.monotonic() + 10
        while _alive(redis_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert netns not in _netns()
        assert not _alive(redis_pid)
        assert not _alive(postmaster)
        assert not lab_dir.exists()
    assert reap_leftovers() == []


def test_a_live_lab_is_left_alone_and_closes_cleanly() -> None:
    lab = Lab()
    try:
        host = NetLab(lab).add_host("h1")
        assert reap_leftovers() == []  # another run starting now must not touch a lab whose owner lives
        assert host.netns in _netns()
    finally:
        assert lab.close() == []
    assert host.netns not in _netns()
    assert not lab.dir.exists()


_CHURN = """
from tests.faults.lab import Lab
for _ in range(30):
    with Lab() as lab:
        lab.record("note", "x")
        assert (lab.dir / "resources").exists(), "another lab's start removed this live lab"
"""


def test_labs_starting_at_once_never_take_each_other_for_dead_runs() -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}"}
    procs = [
        subprocess.Popen([sys.executable, "-c", _CHURN], cwd=REPO, env=env, stderr=subprocess.PIPE) for _ in range(6)
    ]
    failures = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(failures)
