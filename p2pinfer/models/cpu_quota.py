"""How many CPU cores this process may use: its cgroup's CPU quota and its CPU affinity.

Why: the compute calibration (models/calibrate.py) times its kernels in CPU seconds, which other
work on the host cannot distort, and scales that rate by the share of a core the kernel lets us
use. A quota is read from cgroup v1 (`cpu.cfs_quota_us / cpu.cfs_period_us`) or v2 (`cpu.max`),
the tightest along the path from our group to the root; none anywhere means unlimited. The
quota's period matters too (`cgroup_cpu_limit`): a quota of less than a core lets a thread that
was idle run a whole period's quota at full speed, which a lone request's latency shows.
A process in a private mount namespace may not see the cgroup file system (`ip netns exec`
remounts /sys): then the host's view is tried through /proc/1/root (readable when privileged),
and if our group is not the root and still no quota file can be read, `QuotaUnknown` is raised
so the caller can fall back to measuring its share.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Callable

PROC_CGROUP = Path("/proc/self/cgroup")
VIEWS = ((Path("/proc/self/mounts"), Path("/")), (Path("/proc/1/mounts"), Path("/proc/1/root")))


class QuotaUnknown(Exception):
    """We are in a non-root cgroup whose quota files cannot be read from here."""


Limit = tuple[int, int]  # (quota, period) in microseconds


def _v1_quota(group: Path) -> Limit | None:
    quota, period = int((group / "cpu.cfs_quota_us").read_text()), int((group / "cpu.cfs_period_us").read_text())
    return (quota, period) if quota > 0 and period > 0 else None


def _v2_quota(group: Path) -> Limit | None:
    fields = (group / "cpu.max").read_text().split()
    return (int(fields[0]), int(fields[1])) if fields[0] != "max" and int(fields[1]) > 0 else None


def _cores(limit: Limit) -> float:
    return limit[0] / limit[1]


def _tightest(mount: Path, rel: str, read: Callable[[Path], Limit | None]) -> tuple[Limit | None, bool]:
    """(tightest (quota, period) on the path from `mount/rel` up to `mount` or None, any file read)."""
    best: Limit | None = None
    seen = False
    path = PurePosixPath("/") / rel.lstrip("/")
    for part in [path, *path.parents]:
        try:
            quota = read(mount / str(part).lstrip("/"))
        except (OSError, ValueError, IndexError):
            continue
        seen = True
        if quota is not None:
            best = quota if best is None else min(best, quota, key=_cores)
    return best, seen


def _mounts(mounts: Path, root: Path) -> tuple[Path | None, Path | None]:
    """(cgroup v1 mount holding the `cpu` controller, cgroup v2 mount), as seen under `root`."""
    v1 = v2 = None
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "cgroup" and "cpu" in parts[3].split(",") and v1 is None:
            v1 = root / parts[1].lstrip("/")
        elif len(parts) >= 3 and parts[2] == "cgroup2" and v2 is None:
            v2 = root / parts[1].lstrip("/")
    return v1, v2


def _groups(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """(our v1 `cpu` group path, our v2 group path) from /proc/self/cgroup."""
    v1 = v2 = None
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        hid, _, rest = line.partition(":")
        controllers, _, rel = rest.partition(":")
        if "cpu" in controllers.split(","):
            v1 = rel
        elif hid == "0" and controllers == "":
            v2 = rel
    return v1, v2


def cgroup_cpu_quota(*, proc_cgroup: Path = PROC_CGROUP,
                     views: tuple[tuple[Path, Path], ...] = VIEWS) -> float | None:
    """This process's CPU quota in cores (e.g. 0.2), None when no cgroup limits it; QuotaUnknown
    when we sit in a non-root group whose quota no view of the file system shows."""
    limit = cgroup_cpu_limit(proc_cgroup=proc_cgroup, views=views)
    return None if limit is None else _cores(limit)


def cgroup_cpu_limit(*, proc_cgroup: Path = PROC_CGROUP,
                     views: tuple[tuple[Path, Path], ...] = VIEWS) -> Limit | None:
    """The tightest (quota, period) in microseconds limiting this process, None when none does;
    QuotaUnknown as `cgroup_cpu_quota`."""
    g1, g2 = _groups(proc_cgroup)
    for mounts, root in views:
        v1, v2 = _mounts(mounts, root)
        found: list[Limit] = []
        seen = False
        for mount, rel, read in ((v1, g1, _v1_quota), (v2, g2, _v2_quota)):
            if mount is not None and rel is not None:
                quota, any_read = _tightest(mount, rel, read)
                seen |= any_read
                found += [quota] if quota is not None else []
        if seen:
            return min(found, key=_cores) if found else None
    if any(rel not in (None, "/") for rel in (g1, g2)):
        raise QuotaUnknown(f"cgroup {g1 or g2} is not the root and no quota file of it is readable")
    return None


def usable_cores(threads: int) -> float:
    """Cores `threads` compute threads of this process can keep busy: at most one each, at most
    the CPUs we may run on, at most the cgroup quota (QuotaUnknown if that cannot be read)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return float(min(threads, cpus, quota if quota is not None else float("inf")))
