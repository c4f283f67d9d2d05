"""A lab: one directory that holds everything a fault run creates (servers' data, network namespaces, logs), so
that all of it is removed afterwards — also when the run failed, and also when an earlier run was killed before it
could clean up.

Why a directory with a lock instead of try/finally alone: a pytest run killed with SIGKILL (a CI timeout, a
developer's ^C twice) leaves private PostgreSQL and Redis servers running and network namespaces in the kernel.
Each lab holds an exclusive `flock` on `<dir>/lock` for as long as its process lives and writes every resource it
creates to `<dir>/resources` *before* creating it. The next lab to start takes the lock of every lab directory it
finds; a lock it can take belongs to a dead run, whose resources it then removes (`reap_leftovers`).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(os.environ.get("CONVEYOR_FAULTS_DIR", "/tmp/conveyor-faults"))
NETNS_PREFIX = "cvf-"  # every network namespace a lab creates is named cvf-<lab id>-<host>
_BUILDING = ".building-"


def pg_bin(name: str) -> str:
    """A PostgreSQL server binary (initdb, pg_ctl): Debian keeps them out of PATH."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    path = found[-1] if found else shutil.which(name)
    if path is None:
        raise RuntimeError(f"PostgreSQL server binary {name!r} not found: install postgresql (scripts/services.sh)")
    return path


def run_quiet(cmd: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a command, raising with its output when it fails (so a failed `ip` or `pg_ctl` says why)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
    return proc


class Lab:
    """One fault run's directory, locked while this process lives. `close()` removes everything it recorded."""

    def __init__(self) -> None:
        reap_leftovers()
        ROOT.mkdir(parents=True, exist_ok=True)
        os.chmod(ROOT, 0o755)  # the postgres OS user must reach its data directory below
        self.id = secrets.token_hex(3)
        self.dir = ROOT / self.id
        # The directory appears under its name with its lock already held (built aside, then renamed): a lab
        # starting elsewhere at this moment must never find it unlocked and take it for a dead run's.
        building = ROOT / f"{_BUILDING}{self.id}"
        building.mkdir(mode=0o755)
        self._lock = os.open(building / "lock", os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        building.rename(self.dir)
        self._cleanups: list[Callable[[], None]] = []
        self.closed = False

    def record(self, kind: str, value: str) -> None:
        """Write a resource down before creating it, so a later run can remove it if this one dies."""
        with open(self.dir / "resources", "a") as f:
            f.write(f"{kind} {value}\n")

    def record_process(self, pid: int, *markers: str) -> None:
        """A process this lab started (a server, a worker), killed by a later run if this one dies first."""
        self.record("process", f"{pid} " + "\t".join(markers))

    def on_close(self, cleanup: Callable[[], None]) -> None:
        """Run `cleanup` at close, most recent first. Cleanups must tolerate half-created resources."""
        self._cleanups.append(cleanup)

    def close(self) -> list[str]:
        """Undo everything (errors are collected, not raised, so one failure does not leave the rest behind)."""
        if self.closed:
            return []
        self.closed = True
        errors: list[str] = []
        for cleanup in reversed(self._cleanups):
            try:
                cleanup()
            except Exception as exc:
                errors.append(f"{cleanup}: {exc}")
        errors.extend(_remove_resources(self.dir))
        os.close(self._lock)
        shutil.rmtree(self.dir, ignore_errors=True)
        return errors

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reap_leftovers() -> list[str]:
    """Remove what dead runs left behind: lab directories whose lock is free, and namespaces of labs that are gone.
    Returns a line per thing removed (for logs)."""
    removed: list[str] = []
    if ROOT.is_dir():
        for lab_dir in sorted(p for p in ROOT.iterdir() if p.is_dir()):
            if lab_dir.name.startswith(_BUILDING):  # being built: removed only if its builder died long ago
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - lab_dir.stat().st_mtime > 60:
                        shutil.rmtree(lab_dir, ignore_errors=True)
                continue
            lock_path = lab_dir / "lock"
            try:
                fd = os.open(lock_path, os.O_RDWR)
            except FileNotFoundError:
                fd = None  # not a lab directory made by this code: nothing can own it
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue  # its owner is alive
            try:
                _remove_resources(lab_dir)
                shutil.rmtree(lab_dir, ignore_errors=True)
                removed.append(f"lab {lab_dir}")
            finally:
                if fd is not None:
                    os.close(fd)
    if shutil.which("ip"):
        # Namespaces first, labs second: a lab's directory exists before its namespaces, so every namespace listed
        # here whose lab is alive has its directory in `live`.
        listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        live = {p.name for p in ROOT.iterdir()} if ROOT.is_dir() else set()
        for line in listing.stdout.splitlines():
            name = line.split()[0] if line.split() else ""
            owner = name.removeprefix(NETNS_PREFIX).split("-")[0]
            if owner.startswith("probe"):  # netns.preflight's probe: its process's own to delete
                if owner[5:].isdigit() and _alive(int(owner[5:])):
                    continue
            elif owner in live:
                continue
            if name.startswith(NETNS_PREFIX):
                subprocess.run(["ip", "netns", "delete", name], capture_output=True)
                removed.append(f"netns {name}")
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_resources(lab_dir: Path) -> list[str]:
    """Stop the servers and delete the namespaces listed in a lab's resources file, newest first."""
    errors: list[str] = []
    try:
        lines = (lab_dir / "resources").read_text().splitlines()
    except FileNotFoundError:
        return errors
    for line in reversed(lines):
        kind, _, value = line.partition(" ")
        try:
            if kind == "postgres" and os.path.exists(os.path.join(value, "postmaster.pid")):
                cmd = [pg_bin("pg_ctl"), "stop", "-D", value, "-m", "immediate", "-w", "-t", "30"]
                if os.geteuid() == 0:
                    cmd = ["runuser", "-u", "postgres", "--", *cmd]
                subprocess.run(cmd, capture_output=True, timeout=60)
            elif kind == "process":
                pid, _, markers = value.partition(" ")
                _kill_if_ours(int(pid), markers.split("\t"))
            elif kind == "netns":
                subprocess.run(["ip", "netns", "delete", value], capture_output=True, timeout=30)
        except Exception as exc:
            errors.append(f"{line}: {exc}")
    return errors


def _kill_if_ours(pid: int, markers: list[str]) -> None:
    """SIGKILL a process a lab started, if it is still that process (pids get reused): every marker recorded with
    it must be a word of its command line (or a path ending in it)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return
    words = cmdline.split()
    if all(any(w == m or w.endswith("/" + m) for w in words) for m in markers):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
