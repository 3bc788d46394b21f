"""Prove the caps are real: measure each node's links and CPU inside the running testbed.

Links: a TCP server in the node's namespace, a client in the requester's; both directions, the
rate taken where the bytes arrive. The expected rate of requester->node is min(requester up,
node down), the other way min(node up, requester down). TCP/IP headers cost ~4.4% of the cap
(1448 payload bytes per 1514-byte frame), so a pass is [1 - tol, 1.03] x cap. The probes run
outside the node's cgroup so its CPU quota cannot masquerade as a link cap.

CPU: a single-thread matmul in the node's cgroup vs the same probe uncapped on the host.
The host is shared, so an uncapped run may not get a whole core; its GFLOP per CPU-second is
the speed of one full core, and the check is capped GFLOP/s / full-core GFLOP/s = min(quota, 1)
within tol, and the capped CPU share never above quota x (1 + tol). On an idle host this is the
same as the raw ratio capped / uncapped GFLOP/s, which is reported too.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import TestbedError
from .testbed import Testbed

ROOT = Path(__file__).resolve().parents[2]
PROBE = [sys.executable, "-m", "benchmarks.testbed.probes"]
PORT = 5001
HEADER_OVERHEAD_OK = 1.03


@dataclass(frozen=True)
class LinkCheck:
    node: str
    direction: str
    cap_mbps: float | None
    measured_mbps: float
    ok: bool


@dataclass(frozen=True)
class CpuCheck:
    node: str
    quota: float | None
    capped_gflops: float
    capped_cpu_fraction: float
    full_core_gflops: float
    raw_uncapped_gflops: float
    ratio: float
    raw_ratio: float
    nr_throttled: int
    ok: bool


@dataclass(frozen=True)
class Report:
    cluster: str
    links: list[LinkCheck]
    cpus: list[CpuCheck]
    uncapped_cpu_fraction: float

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.links) and all(c.ok for c in self.cpus)

    def to_json(self) -> str:
        return json.dumps({"cluster": self.cluster, "ok": self.ok, "uncapped_cpu_fraction": self.uncapped_cpu_fraction,
                           "links": [asdict(c) for c in self.links], "cpus": [asdict(c) for c in self.cpus]}, indent=2)


def _min_cap(a: float | None, b: float | None) -> float | None:
    caps = [x for x in (a, b) if x is not None]
    return min(caps) if caps else None


def _wait_ready(proc: subprocess.Popen[bytes], timeout: float) -> None:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else b""
    if b'"ready"' not in line:
        raise TestbedError(f"probe server did not start within {timeout}s (got {line!r})")


def _link(tb: Testbed, node: str, direction: str, cap: float | None, seconds: float, tol: float) -> LinkCheck:
    nbytes = int((cap or 400) * 1e6 / 8 * seconds)
    out = tb.requester_exec([*PROBE, "fetch", "--host", tb.ip(node), "--port", str(PORT), "--direction", direction,
                             "--bytes", str(nbytes), "--timeout", str(seconds * 4 + 10)],
                            timeout=seconds * 6 + 20, cgroup=False, cwd=ROOT, check=True)
    mbps = float(json.loads(out.stdout)["mbps"])
    ok = cap is None or (1 - tol) * cap <= mbps <= HEADER_OVERHEAD_OK * cap
    label = f"requester->{node}" if direction == "recv" else f"{node}->requester"
    return LinkCheck(node, label, cap, mbps, ok)


def check_links(tb: Testbed, node: str, *, seconds: float, tol: float) -> list[LinkCheck]:
    """Both directions between the requester and one node, against the tighter of the two caps."""
    req, dev = tb.device("requester"), tb.device(node)
    server = tb.spawn(node, [*PROBE, "serve", "--host", tb.ip(node), "--port", str(PORT), "--count", "2",
                             "--timeout", str(seconds * 4 + 10)], cgroup=False, cwd=ROOT, stdout=subprocess.PIPE)
    try:
        _wait_ready(server, 30)
        return [_link(tb, node, "recv", _min_cap(req.up_mbps, dev.down_mbps), seconds, tol),
                _link(tb, node, "send", _min_cap(dev.up_mbps, req.down_mbps), seconds, tol)]
    finally:
        server.kill()
        server.wait(timeout=10)
        if server.stdout:
            server.stdout.close()


def cpu_probe_uncapped(seconds: float) -> dict[str, float]:
    out = subprocess.run([*PROBE, "cpu", "--seconds", str(seconds)], cwd=ROOT, capture_output=True, text=True,
                         timeout=seconds + 60, check=True)
    return json.loads(out.stdout)


def cpu_probe_capped(tb: Testbed, node: str, *, seconds: float) -> tuple[dict[str, float], int]:
    """The CPU probe inside the node's cgroup, and how many periods the kernel throttled it."""
    before = tb.cpu_stat(node).get("nr_throttled", 0)
    out = tb.exec(node, [*PROBE, "cpu", "--seconds", str(seconds)], timeout=seconds + 90, cwd=ROOT, check=True)
    return json.loads(out.stdout), tb.cpu_stat(node).get("nr_throttled", 0) - before


def cpu_check(node: str, quota: float | None, capped: dict[str, float], throttled: int,
              base: dict[str, float], tol: float) -> CpuCheck:
    """Judge one capped run against the full-core speed of the uncapped runs."""
    expected = min(quota or 1.0, 1.0)  # a single thread cannot use more than one core
    ratio = capped["gflops"] / base["gflops_per_cpu_s"]
    ok = abs(ratio / expected - 1) <= tol and capped["cpu_fraction"] <= expected * (1 + tol)
    return CpuCheck(node, quota, capped["gflops"], capped["cpu_fraction"], base["gflops_per_cpu_s"], base["gflops"],
                    ratio, capped["gflops"] / base["gflops"], throttled, ok)


def verify(tb: Testbed, *, nodes: list[str] | None = None, link_seconds: float = 2.0, cpu_seconds: float = 2.0,
           link_tol: float = 0.10, cpu_tol: float = 0.15) -> Report:
    """Measure every (or the given) node's links and CPU in a testbed that is up.

    The uncapped reference runs before and after the capped ones; their mean is the baseline.
    """
    names = list(nodes or tb.nodes)
    links = [c for n in names for c in check_links(tb, n, seconds=link_seconds, tol=link_tol)]
    runs = [cpu_probe_uncapped(cpu_seconds)]
    capped = [cpu_probe_capped(tb, n, seconds=cpu_seconds) for n in names]
    runs.append(cpu_probe_uncapped(cpu_seconds))
    base = {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}
    cpus = [cpu_check(n, tb.device(n).cpu, c, t, base, cpu_tol) for n, (c, t) in zip(names, capped)]
    return Report(tb.cluster.name, links, cpus, base["cpu_fraction"])


def render(report: Report) -> str:
    """Plain-text tables (stdlib only) of every check."""
    rows = [f"Testbed verification of cluster {report.cluster!r}", "",
            f"{'link':<28} {'cap Mbit/s':>10} {'measured':>10} {'ratio':>7}  ok"]
    for c in report.links:
        cap = f"{c.cap_mbps:g}" if c.cap_mbps is not None else "none"
        ratio = f"{c.measured_mbps / c.cap_mbps:.3f}" if c.cap_mbps else "-"
        rows.append(f"{c.direction:<28} {cap:>10} {c.measured_mbps:>10.2f} {ratio:>7}  {'yes' if c.ok else 'NO'}")
    rows += ["", f"{'cpu':<16} {'quota':>6} {'capped GF/s':>11} {'cpu share':>9} {'core GF/s':>9} "
             f"{'ratio':>6} {'raw ratio':>9} {'throttled':>9}  ok"]
    for c in report.cpus:
        rows.append(f"{c.node:<16} {c.quota or 1.0:>6.2f} {c.capped_gflops:>11.2f} {c.capped_cpu_fraction:>9.3f} "
                    f"{c.full_core_gflops:>9.2f} {c.ratio:>6.3f} {c.raw_ratio:>9.3f} {c.nr_throttled:>9}  {'yes' if c.ok else 'NO'}")
    rows += ["", f"uncapped probe got {report.uncapped_cpu_fraction:.2f} of a core (below ~0.9: the host is busy and "
             "'raw ratio' overstates the cap; 'ratio' uses GFLOP per CPU-second)",
             f"result: {'PASS' if report.ok else 'FAIL'}"]
    return "\n".join(rows)
