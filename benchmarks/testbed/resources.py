"""Names of everything the testbed creates, how to find it again, and how to remove it.

Every kernel object carries the prefix `p2pt-<rid>-` (rid: 4 hex digits, one per testbed run):
namespaces `p2pt-<rid>-<member>`, host-side veths `p2pt-<rid>-h<i>`, the bridge `p2pt-<rid>-br`,
the cgroup directory `<cpu root>/p2pt-<rid>/`. A state file `/run/p2pt-testbed/<rid>.json`
names the owning process, so `cleanup` removes only runs whose owner is dead (or all, if asked)
and never anything without that prefix. Teardown and cleanup share `remove_run`, which works
from what exists in the kernel, not from bookkeeping, so a half-built run is removed too.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "p2pt-"
STATE_DIR = Path("/run/p2pt-testbed")
_RID = re.compile(r"^p2pt-([0-9a-f]{4})(?:-|$)")


def netns_name(rid: str, member: str) -> str:
    return f"{PREFIX}{rid}-{member}"


def host_if(rid: str, index: int) -> str:
    return f"{PREFIX}{rid}-h{index}"


def peer_if(rid: str, index: int) -> str:
    return f"{PREFIX}{rid}-n{index}"


def bridge_name(rid: str) -> str:
    return f"{PREFIX}{rid}-br"


def cgroup_dir(cpu_root: Path, rid: str) -> Path:
    return cpu_root / f"{PREFIX}{rid}"


def rid_of(name: str) -> str | None:
    m = _RID.match(name)
    return m.group(1) if m else None


@dataclass
class Found:
    """The testbed objects of one run that exist right now."""

    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    cgroups: list[Path] = field(default_factory=list)
    state: Path | None = None

    def empty(self) -> bool:
        return not (self.netns or self.links or self.cgroups or self.state)

    def names(self) -> list[str]:
        return [*self.netns, *self.links, *map(str, self.cgroups), *([str(self.state)] if self.state else [])]


def _lines(argv: list[str]) -> list[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=15).stdout.splitlines()


def discover(ip: str, cpu_root: Path) -> dict[str, Found]:
    """Every `p2pt-` object on this host, grouped by run id."""
    runs: dict[str, Found] = {}
    for line in _lines([ip, "netns", "list"]):
        name = line.split()[0] if line.split() else ""
        if rid := rid_of(name):
            runs.setdefault(rid, Found()).netns.append(name)
    for line in _lines([ip, "-o", "link", "show"]):
        parts = line.split(":", 2)
        name = parts[1].strip().split("@")[0] if len(parts) > 2 else ""
        if rid := rid_of(name):
            runs.setdefault(rid, Found()).links.append(name)
    if cpu_root.is_dir():
        for d in cpu_root.iterdir():
            if d.is_dir() and (rid := rid_of(d.name)):
                runs.setdefault(rid, Found()).cgroups.append(d)
    if STATE_DIR.is_dir():
        for f in STATE_DIR.glob("*.json"):
            if rid := rid_of(PREFIX + f.stem):
                runs.setdefault(rid, Found()).state = f
    return runs


def process_start(pid: int) -> int | None:
    """Kernel start time of a process (guards against pid reuse), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def write_state(rid: str, info: dict[str, object]) -> Path:
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)
    path = STATE_DIR / f"{rid}.json"
    pid = os.getpid()
    path.write_text(json.dumps({"rid": rid, "owner_pid": pid, "owner_start": process_start(pid), **info}))
    return path


def owner_alive(state: Path | None) -> bool:
    """True if the process that created a run still runs (a run without state is orphaned)."""
    if state is None:
        return False
    try:
        data = json.loads(state.read_text())
        return process_start(int(data["owner_pid"])) == data["owner_start"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def cgroup_pids(root: Path) -> list[int]:
    pids: list[int] = []
    for procs in root.rglob("cgroup.procs") if root.is_dir() else []:
        try:
            pids += [int(p) for p in procs.read_text().split()]
        except OSError:
            continue
    return pids


def _kill_all(ip: str, found: Found, deadline: float) -> None:
    """SIGKILL every process left in the run's namespaces or cgroups, until none remain."""
    while time.monotonic() < deadline:
        pids = {int(p) for ns in found.netns for p in _lines([ip, "netns", "pids", ns]) if p.strip().isdigit()}
        pids |= {p for d in found.cgroups for p in cgroup_pids(d)}
        if not _kill(pids):
            return
        time.sleep(0.05)


def _kill(pids: set[int]) -> bool:
    """SIGKILL `pids` (never ourselves); whether there was anyone to kill."""
    pids = pids - {os.getpid()}
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return bool(pids)


def _rmdir_tree(root: Path, deadline: float) -> None:
    """rmdir a cgroup and its children, deepest first (rmdir fails while tasks remain). A process
    found in one by then is killed too: one forked as an interrupt landed in the owner's Popen
    joins its cgroup after the sweep in `_kill_all` (the owner never learned its pid)."""
    dirs = sorted((d for d in root.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)) + [root]
    for d in dirs:
        while d.exists():
            try:
                d.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                _kill(set(cgroup_pids(d)))
                time.sleep(0.05)


def remove_run(ip: str, found: Found, *, timeout: float = 10.0) -> None:
    """Remove one run's processes, namespaces, links, cgroups and state file."""
    deadline = time.monotonic() + timeout
    _kill_all(ip, found, deadline)
    for ns in found.netns:
        subprocess.run([ip, "netns", "del", ns], capture_output=True, timeout=15)
    for link in sorted(found.links, key=lambda n: n.endswith("-br")):  # veths before the bridge
        subprocess.run([ip, "link", "del", link], capture_output=True, timeout=15)
    for d in found.cgroups:
        _rmdir_tree(d, deadline)
    if found.state is not None:
        found.state.unlink(missing_ok=True)


def cleanup_runs(ip: str, cpu_root: Path, *, all_runs: bool = False) -> tuple[dict[str, list[str]], list[str]]:
    """Remove runs whose owner is dead (every run with `all_runs`); returns (removed, live rids)."""
    removed: dict[str, list[str]] = {}
    live: list[str] = []
    for rid, found in sorted(discover(ip, cpu_root).items()):
        if not all_runs and owner_alive(found.state):
            live.append(rid)
            continue
        remove_run(ip, found)
        removed[rid] = found.names()
    return removed, live
