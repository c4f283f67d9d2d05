"""Worker "hosts" built from Linux network namespaces, and real network partitions between them and the store.

Each host is a network namespace joined to the machine (the store side) by its own veth pair:

    root namespace (store side)               namespace cvf-<lab>-<host>
    cvf<lab><n>  10.231.X.1/24  <── veth ──>  eth0  10.231.X.2/24

Servers run in the root namespace and listen on the store-side addresses; worker processes run inside the host
namespaces (`ip netns exec`) and reach the store at their host's `store_ip`, through the veth, exactly as a worker
on another machine reaches a database over a network.

`cut(host)` installs an nftables table *inside the host's namespace* that drops every packet in and out (except
loopback): from both sides the other simply stops answering, which is what a partition looks like — no RST, no
ICMP, connections hang until TCP gives up or the network heals. `heal(host)` deletes the table; connections that
did not time out carry on. The rules live in the host's namespace only: the machine's own firewall is untouched.

Needs root, iproute2 and nftables. `preflight()` says clearly what is missing; callers fail (never skip) on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from tests.faults.lab import NETNS_PREFIX, ROOT, Lab, run_quiet

CUT_TABLE = "conveyor_partition"
_NFT_CUT = f"""
table inet {CUT_TABLE} {{
    chain input {{ type filter hook input priority -100; policy drop; iifname "lo" accept; }}
    chain output {{ type filter hook output priority -100; policy drop; oifname "lo" accept; }}
}}
"""


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be built here; the message says what is missing and how to get it."""


def preflight() -> None:
    """Raise NetnsUnavailable with a clear message unless namespaces, veths and nftables all work here."""
    hint = (
        "the partition test builds worker hosts from network namespaces: it needs root (CAP_NET_ADMIN), iproute2 "
        "and nftables (apt-get install iproute2 nftables; scripts/services.sh installs them)"
    )
    if os.geteuid() != 0:
        raise NetnsUnavailable(f"not running as root — {hint}")
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            raise NetnsUnavailable(f"`{tool}` is not installed — {hint}")
    probe = f"{NETNS_PREFIX}probe{os.getpid()}"
    try:
        run_quiet(["ip", "netns", "add", probe])
        run_quiet(["ip", "netns", "exec", probe, "nft", "list", "tables"])
    except RuntimeError as exc:
        raise NetnsUnavailable(f"cannot create a network namespace or use nftables in it ({exc}) — {hint}") from None
    finally:
        subprocess.run(["ip", "netns", "delete", probe], capture_output=True)


@dataclass(frozen=True)
class Host:
    name: str
    netns: str
    ifname: str  # the veth's end on the store side (root namespace)
    store_ip: str  # the store side's address as this host sees it
    host_ip: str

    def argv(self, command: Sequence[str]) -> list[str]:
        """Run `command` on this host. `ip netns exec` execs the command, so the Popen pid is the command's."""
        return ["ip", "netns", "exec", self.netns, *command]


class NetLab:
    """Hosts on one lab; everything is deleted with the lab (or by the next run if this process dies)."""

    def __init__(self, lab: Lab) -> None:
        preflight()
        self.lab = lab
        self.hosts: dict[str, Host] = {}
        self.cut_hosts: set[str] = set()

    def add_host(self, name: str) -> Host:
        if not re.fullmatch(r"[a-z0-9]{1,8}", name):
            raise ValueError(f"host name must be 1-8 lowercase letters or digits, got {name!r}")
        n = len(self.hosts) + 1
        netns = f"{NETNS_PREFIX}{self.lab.id}-{name}"
        ifname = f"cvf{self.lab.id}{n}"
        peer = f"{ifname}p"
        # Choosing a subnet and taking it must not race with another lab doing the same (pytest-xdist workers).
        with _net_lock():
            subnet = _free_subnet()
            store_ip, host_ip = f"{subnet}.1", f"{subnet}.2"
            self.lab.record("netns", netns)  # deleting the namespace deletes the veth pair with it
            run_quiet(["ip", "netns", "add", netns])
            run_quiet(["ip", "link", "add", ifname, "type", "veth", "peer", "name", peer, "netns", netns])
            run_quiet(["ip", "addr", "add", f"{store_ip}/24", "dev", ifname])
        run_quiet(["ip", "link", "set", ifname, "up"])
        run_quiet(["ip", "-n", netns, "link", "set", peer, "name", "eth0"])
        run_quiet(["ip", "-n", netns, "addr", "add", f"{host_ip}/24", "dev", "eth0"])
        run_quiet(["ip", "-n", netns, "link", "set", "eth0", "up"])
        run_quiet(["ip", "-n", netns, "link", "set", "lo", "up"])
        host = Host(name, netns, ifname, store_ip, host_ip)
        self.hosts[name] = host
        return host

    def cut(self, host: Host) -> None:
        """Partition the host: every packet to or from it is dropped from now on."""
        subprocess.run(host.argv(["nft", "-f", "-"]), input=_NFT_CUT, text=True, check=True, capture_output=True)
        self.cut_hosts.add(host.name)

    def heal(self, host: Host) -> None:
        run_quiet(host.argv(["nft", "delete", "table", "inet", CUT_TABLE]))
        self.cut_hosts.discard(host.name)


@contextlib.contextmanager
def _net_lock():  # type: ignore[no-untyped-def]
    ROOT.mkdir(parents=True, exist_ok=True)
    fd = os.open(ROOT / ".net.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _free_subnet() -> str:
    """A 10.231.X /24 that no interface of this machine uses (labs' store-side addresses live here too)."""
    seen = run_quiet(["ip", "-4", "-o", "addr"]).stdout + run_quiet(["ip", "-4", "route"]).stdout
    used = set(re.findall(r"\b10\.231\.(\d+)\.", seen))
    candidates = [str(x) for x in range(1, 255) if str(x) not in used]
    if not candidates:
        raise NetnsUnavailable("no free 10.231.X.0/24 subnet for a test host (leftover interfaces?)")
    return f"10.231.{random.choice(candidates)}"
