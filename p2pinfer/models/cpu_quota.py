"""How many CPU cores this process may use: its cgroup's CPU quota and its CPU affinity.

Why: the compute calibration (models/calibrate.py) times its kernels in CPU seconds, which other
work on the host cannot distort, and scales that rate by the share of a core the kernel lets us
use. A quota is read from cgroup v1 (`cpu.cfs_quota_us / cpu.cfs_period_us`) or v2 (`cpu.max`),
the tightest along the path from our group to the root; no quota anywhere means unlimited.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath


def _v1_quota(group: Path, root: Path) -> float | None:
    q = group / "cpu.cfs_quota_us"
    quota, period = int(q.read_text()), int((group / "cpu.cfs_period_us").read_text())
    return quota / period if quota > 0 and period > 0 else None


def _v2_quota(group: Path, root: Path) -> float | None:
    fields = (group / "cpu.max").read_text().split()
    return int(fields[0]) / int(fields[1]) if fields and fields[0] != "max" and int(fields[1]) > 0 else None


def _tightest(mount: Path, rel: str, read) -> float | None:
    """The smallest quota (cores) on the path from `mount/rel` up to `mount`; None if none."""
    best: float | None = None
    path = PurePosixPath("/") / rel.lstrip("/")
    for part in [path, *path.parents]:
        group = mount / str(part).lstrip("/")
        try:
            quota = read(group, mount)
        except (OSError, ValueError, IndexError):
            continue
        if quota is not None:
            best = quota if best is None else min(best, quota)
    return best


def _mounts(mounts: Path) -> tuple[Path | None, Path | None]:
    """(cgroup v1 mount holding the `cpu` controller, cgroup v2 mount)."""
    v1 = v2 = None
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "cgroup" and "cpu" in parts[3].split(",") and v1 is None:
            v1 = Path(parts[1])
        elif len(parts) >= 3 and parts[2] == "cgroup2" and v2 is None:
            v2 = Path(parts[1])
    return v1, v2


def cgroup_cpu_quota(*, proc_cgroup: Path = Path("/proc/self/cgroup"), mounts: Path = Path("/proc/self/mounts")) -> float | None:
    """This process's CPU quota in cores (e.g. 0.2), or None when no cgroup limits it."""
    v1, v2 = _mounts(mounts)
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        hid, _, rest = line.partition(":")
        controllers, _, rel = rest.partition(":")
        if v1 is not None and "cpu" in controllers.split(","):
            quotas.append(_tightest(v1, rel, _v1_quota))
        elif hid == "0" and controllers == "" and v2 is not None:
            quotas.append(_tightest(v2, rel, _v2_quota))
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def usable_cores(threads: int) -> float:
    """Cores `threads` compute threads of this process can keep busy: at most one each, at most
    the CPUs we may run on, at most the cgroup quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return float(min(threads, cpus, quota if quota is not None else float("inf")))
