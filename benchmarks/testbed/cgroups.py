"""cgroup v1 `cpu` groups of one testbed run: `<cpu root>/p2pt-<rid>/<member>/`.

The quota is cpu.cfs_quota_us over cpu.cfs_period_us; it caps all threads of all processes in
the group together, which is what a device with a fraction of a core looks like to a node that
uses several threads. Processes enter the group by writing their own pid to `cgroup.procs`
before exec (see testbed.SPAWN_WRAPPER), so every thread they ever start is inside.
"""

from __future__ import annotations

from pathlib import Path

from .resources import cgroup_dir


def create_group(cpu_root: Path, rid: str, member: str, *, period_us: int, quota_us: int | None) -> Path:
    """Make the member's group (and the run's parent group) and set its quota."""
    parent = cgroup_dir(cpu_root, rid)
    parent.mkdir(exist_ok=True)
    group = parent / member
    group.mkdir()
    (group / "cpu.cfs_period_us").write_text(str(period_us))
    (group / "cpu.cfs_quota_us").write_text(str(-1 if quota_us is None else quota_us))
    return group


def read_limits(group: Path) -> tuple[int, int]:
    """(period_us, quota_us) as the kernel holds them; quota -1 means unlimited."""
    return int((group / "cpu.cfs_period_us").read_text()), int((group / "cpu.cfs_quota_us").read_text())


def read_stat(group: Path) -> dict[str, int]:
    """cpu.stat: nr_periods, nr_throttled, throttled_time (ns): proof the quota bit."""
    out: dict[str, int] = {}
    for line in (group / "cpu.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def group_of_thread(tid: int, cpu_root: Path) -> Path | None:
    """The cpu-hierarchy group a thread is in, from /proc/<tid>/cgroup."""
    try:
        lines = Path(f"/proc/{tid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return cpu_root / rel.lstrip("/")
    return None


def threads_outside(pid: int, group: Path, cpu_root: Path) -> list[int]:
    """Threads of `pid` that are not in `group` (empty means the whole process is capped)."""
    try:
        tids = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return []
    return [t for t in tids if (g := group_of_thread(t, cpu_root)) is not None and g != group]
