"""Private PostgreSQL and Redis servers that a fault run may crash, restart and cut off at will.

The machine's shared servers (5432, 6379) are never touched: each private server gets a free port, its own data
directory inside a `Lab`, and listens on the addresses it is given (the store side of the network-namespace hosts,
or 127.0.0.1). Both are registered with the lab before they start, so they are stopped even if the run is killed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence

from tests.faults.lab import Lab, pg_bin, run_quiet


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class PrivatePostgres:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl, run as the `postgres` OS user when we are root).

    `crash_restart()` is `pg_ctl restart -m immediate`: the server stops without a checkpoint and without flushing
    anything (as a crash or `kill -9` of the postmaster would), then starts with crash recovery from its WAL.
    `fsync` off by default: it changes nothing about what a *server* crash loses (the kernel still holds every
    write), only what a machine crash would, and it keeps the tests fast."""

    def __init__(
        self,
        lab: Lab,
        *,
        listen: Sequence[str] = ("127.0.0.1",),
        fsync: bool = False,
        settings: dict[str, str] | None = None,
        name: str = "pg",
    ) -> None:
        self.lab = lab
        self.listen = list(listen)
        self.port = free_port(self.listen[0])
        self.dir = lab.dir / name
        self.datadir = self.dir / "data"
        self.settings = {"fsync": "on" if fsync else "off", **(settings or {})}

    def url(self, host: str | None = None, database: str = "postgres") -> str:
        return f"postgresql://postgres@{host or self.listen[0]}:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 120.0) -> None:
        cmd = list(args)
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        run_quiet(cmd, timeout=timeout)

    def _options(self) -> str:
        opts = [f"-p {self.port}", f"-k {self.dir}", f"-c listen_addresses={','.join(self.listen)}"]
        opts += [f"-c {k}={v}" for k, v in self.settings.items()]
        return " ".join(opts)

    def start(self) -> None:
        if not self.datadir.exists():
            self.dir.mkdir(mode=0o700, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(self.dir, "postgres", "postgres")
            self.lab.record("postgres", str(self.datadir))
            self.lab.on_close(self.stop)
            self._run(pg_bin("initdb"), "-D", str(self.datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8")
            # initdb trusts loopback only; the worker hosts connect over their veth links (test-only cluster)
            with open(self.datadir / "pg_hba.conf", "a") as hba:
                hba.write("host all all 0.0.0.0/0 trust\n")
            for _ in range(4):  # a port found free can be taken by another test's server before ours binds it
                try:
                    self._ctl("start")
                    return
                except RuntimeError:
                    if "postmaster.pid" in os.listdir(self.datadir):
                        raise
                    self.port = free_port(self.listen[0])
        self._ctl("start")

    def _ctl(self, action: str, *extra: str) -> None:
        self._run(pg_bin("pg_ctl"), action, "-D", str(self.datadir), "-w", "-t", "90", "-o", self._options(),
                  "-l", str(self.dir / "log"), *extra)  # fmt: skip

    def crash_restart(self) -> None:
        """Crash the server (immediate shutdown: no checkpoint, unflushed WAL is gone) and start it again."""
        self._ctl("restart", "-m", "immediate")

    def crash(self) -> None:
        self._ctl("stop", "-m", "immediate")

    def stop(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            try:
                self._ctl("stop", "-m", "fast")
            except RuntimeError:
                self._ctl("stop", "-m", "immediate")


class PrivateRedis:
    """A private redis-server. `appendfsync=None` runs without the append-only file (and without snapshots), the
    other values turn AOF on with that fsync policy. `kill()` is kill -9; `start()` again on the same port and
    directory loads what the AOF holds."""

    def __init__(
        self,
        lab: Lab,
        *,
        bind: Sequence[str] = ("127.0.0.1",),
        appendfsync: str | None = "always",
        name: str = "redis",
    ) -> None:
        if appendfsync not in (None, "always", "everysec", "no"):
            raise ValueError(f"appendfsync must be always, everysec, no or None (no AOF), got {appendfsync!r}")
        self.lab = lab
        self.bind = list(bind)
        self.port = free_port(self.bind[0])
        self.dir = lab.dir / name
        self.dir.mkdir(exist_ok=True)
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None
        lab.on_close(self.stop)

    def url(self, host: str | None = None, db: int = 0) -> str:
        return f"redis://{host or self.bind[0]}:{self.port}/{db}"

    def start(self, timeout: float = 20.0) -> None:
        """Start the server; on its first start, on another free port if this one was taken meanwhile (a port
        found free can be taken by another test's server before ours binds it). A restart keeps its port."""
        for _ in range(5):
            if self._start(timeout):
                self.started_once = True
                return
            if self.started_once:
                raise RuntimeError(f"private redis-server could not bind its port {self.port} again on restart")
            self.port = free_port(self.bind[0])
        raise RuntimeError(f"private redis-server found no free port (see {self.dir}/log)")

    started_once = False

    def _start(self, timeout: float) -> bool:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed: apt-get install redis-server (scripts/services.sh)")
        persistence = (
            ["--appendonly", "yes", "--appendfsync", self.appendfsync]
            if self.appendfsync is not None
            else ["--appendonly", "no"]
        )
        # protected mode off: the test hosts reach it over their veth links, and it has no password
        argv = [exe, "--port", str(self.port), "--bind", *self.bind, "--dir", str(self.dir), "--save", "",
                *persistence, "--maxmemory-policy", "noeviction", "--logfile", str(self.dir / "log"),
                "--protected-mode", "no"]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.lab.record_process(self.proc.pid, "redis-server", f"{self.bind[0]}:{self.port}")
        import redis

        client = redis.Redis(host=self.bind[0], port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    # Ours, not another test's server that holds the port: compare the process id.
                    if client.info("server").get("process_id") == self.proc.pid:
                        return True
                except (redis.ConnectionError, redis.BusyLoadingError):
                    pass
                if self.proc.poll() is not None:
                    return False  # it could not bind (the log says why)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"private redis-server on port {self.port} did not start (see {self.dir}/log)")
                time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """kill -9: no shutdown, no final save; only what Redis already wrote to its AOF survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def crash_restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
