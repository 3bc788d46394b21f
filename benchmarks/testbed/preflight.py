"""Can this machine run the real testbed? Say precisely why not, so callers can fall back.

Needs: root with CAP_NET_ADMIN and CAP_SYS_ADMIN (namespaces, veth, tc), the `ip` and `tc`
tools, and a mounted cgroup v1 `cpu` controller (cfs quota). Every probe of the machine can be
overridden by a keyword so the decision logic is testable on any machine.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import TestbedConfigError, TestbedUnavailable
from .profile import Cluster

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


@dataclass(frozen=True)
class Environment:
    """Absolute paths of what the testbed drives."""

    ip: str
    tc: str
    cpu_root: Path


def effective_caps() -> int:
    """This process's effective capability mask from /proc (0 when unreadable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def find_cpu_root(mounts_text: str) -> Path | None:
    """The mount point of the cgroup v1 hierarchy that holds the `cpu` controller."""
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "cgroup" and "cpu" in parts[3].split(","):
            return Path(parts[1])
    return None


def _privilege_problem(euid: int, caps: int) -> str | None:
    if euid != 0:
        return f"not running as root (euid {euid}); network namespaces, tc and cgroups need root"
    missing = [n for n, bit in (("CAP_NET_ADMIN", CAP_NET_ADMIN), ("CAP_SYS_ADMIN", CAP_SYS_ADMIN)) if not caps >> bit & 1]
    if missing:
        return f"running as root but without {', '.join(missing)} (capabilities dropped, e.g. an unprivileged container)"
    return None


def check_environment(*, euid: int | None = None, caps: int | None = None, path: str | None = None,
                      mounts_text: str | None = None) -> Environment:
    """Return the tools to use, or raise `TestbedUnavailable` listing every missing piece."""
    euid = os.geteuid() if euid is None else euid
    caps = effective_caps() if caps is None else caps
    search = os.environ.get("PATH", "") + ":" + SBIN if path is None else path
    if mounts_text is None:
        mounts_text = Path("/proc/mounts").read_text()
    problems = [p for p in [_privilege_problem(euid, caps)] if p]
    tools = {name: shutil.which(name, path=search) for name in ("ip", "tc")}
    problems += [f"`{n}` (iproute2) not found on PATH or in {SBIN}" for n, where in tools.items() if where is None]
    cpu_root = find_cpu_root(mounts_text)
    if cpu_root is None:
        kind = " (only cgroup2 is mounted)" if " cgroup2 " in mounts_text else ""
        problems.append(f"no cgroup v1 `cpu` controller mounted{kind}; the CPU quotas use cpu.cfs_quota_us")
    elif not (cpu_root / "cpu.cfs_quota_us").exists():
        problems.append(f"{cpu_root} has no cpu.cfs_quota_us (kernel without CFS bandwidth control)")
    if problems:
        raise TestbedUnavailable(problems)
    assert cpu_root is not None
    return Environment(ip=str(tools["ip"]), tc=str(tools["tc"]), cpu_root=cpu_root)


def host_routes(ip: str) -> list[ipaddress.IPv4Network]:
    """IPv4 destinations routed or addressed on the host (all tables, default route excluded)."""
    nets: list[ipaddress.IPv4Network] = []
    for argv in ([ip, "-4", "-o", "route", "show", "table", "all"], [ip, "-4", "-o", "addr", "show"]):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            words = line.split()
            cands = [words[words.index("inet") + 1]] if "inet" in words else words[:2]
            for w in cands:
                try:
                    nets.append(ipaddress.IPv4Network(w, strict=False))
                except ValueError:
                    continue
    return [n for n in nets if n.prefixlen > 0]


def check_subnet(cluster: Cluster, routes: list[ipaddress.IPv4Network]) -> None:
    """Refuse a testbed subnet that overlaps anything the host already routes or owns."""
    for net in routes:
        if net.overlaps(cluster.subnet):
            raise TestbedConfigError(
                f"{cluster.source}: subnet {cluster.subnet} overlaps the host's {net}; pick another private subnet in the cluster file")
