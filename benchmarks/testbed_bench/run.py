"""Drive one cluster: bring up the testbed, start the node processes, check their advertised
compute against the quota, run the requester job, tear down. Progress on stderr."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.testbed import Testbed, TestbedError, load_cluster
from benchmarks.testbed_bench.swarm import TestbedSwarm
from p2pinfer.models import zoo
from p2pinfer.models.store import ModelStore



def progress(text: str) -> None:
    print(f"[bench_testbed {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def model_blobs(store: ModelStore, models: list[str]) -> dict[str, list[str]]:
    """model id -> every blob its hops may need, for pre-placing in the nodes' stores."""
    return {m.model_id: m.weight_hashes() for m in (zoo.get_manifest(n, store=store) for n in models)}


def full_core(tb: Testbed, models: list[str]) -> dict[str, Any]:
    """The same calibration the nodes run, and each model timed, outside any cgroup in the
    requester's namespace: what one full core of this host gives right now (the host may be
    shared, so measure it) and each model's efficiency against the calibration (efficiency.py)."""
    done = tb.requester_exec([sys.executable, "-m", "benchmarks.testbed_bench.efficiency", *models], timeout=300,
                             cgroup=False, check=True, env={"OMP_NUM_THREADS": "1"},
                             cwd=str(Path(__file__).resolve().parents[2]))
    return json.loads(done.stdout.strip().splitlines()[-1])


def compute_check(tb: Testbed, swarm: TestbedSwarm, records: list[dict[str, Any]], core: dict[str, Any]) -> list[dict[str, Any]]:
    """Advertised GFLOP/s of each node next to its quota x the full-core figure (overall, and the
    linear class: one plain matmul, the steadiest of the calibration's kernels)."""
    full, full_linear = core["gflops"], core["by_class"]["linear"]
    by_peer = {r["peer_id"]: r for r in records}
    rows = []
    for name, node in swarm.nodes.items():
        rec = by_peer[node.peer_id]
        cpu = tb.device(name).cpu
        rows.append({"node": name, "class": tb.device(name).name, "peer": node.peer_id, "cpu": cpu,
                     "advertised_gflops": rec["gflops"], "full_core_gflops": full,
                     "ratio": rec["gflops"] / full, "by_class": rec.get("gflops_by_class", {}),
                     "by_kind": rec.get("gflops_by_kind", {}),
                     "linear_ratio": rec.get("gflops_by_class", {}).get("linear", float("nan")) / full_linear,
                     "up_mbps": rec["up_mbps"], "down_mbps": rec["down_mbps"], "latency_ms": rec["latency_ms"]})
    return rows


def run_requester(tb: Testbed, swarm: TestbedSwarm, job: dict[str, Any], store: ModelStore, timeout: float) -> dict[str, Any]:
    fields = tb.device("requester").node_config_fields()  # the requester advertises its goodput as nodes do
    link = f"{fields.get('up_mbps', 1000)},{fields.get('down_mbps', 1000)},{fields['latency_ms']}"
    path = tb.log_dir / f"job-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(job))
    boot = [a for n in swarm.nodes for a in ("--bootstrap", swarm.addr(n))]  # any live node will do
    argv = [sys.executable, "-m", "benchmarks.testbed_bench.requester", *boot,
            "--link", link, "--store", str(store.root), str(path)]
    proc = tb.requester_spawn(argv, stdout=subprocess.PIPE, stderr=sys.stderr, env=tb.thread_env("requester"),
                              cwd=str(Path(__file__).resolve().parents[2]))
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise TestbedError(f"the requester job did not finish within {timeout}s")
    if proc.returncode != 0:
        raise TestbedError(f"the requester job failed (exit {proc.returncode}); see the output above")
    return json.loads(out)


def set_send_buffer(tb: Testbed, nbytes: int) -> None:
    """Diagnostic: a fixed TCP send buffer in every member's namespace (tcp_wmem is per
    namespace), so a hop's send of one activation returns at once instead of waiting for the link."""
    for name in (*tb.nodes, "requester"):
        tb.exec(name, ["sysctl", "-q", "-w", f"net.ipv4.tcp_wmem=4096 {nbytes} {nbytes}"], timeout=10, cgroup=False, check=True)


def run_cluster(cluster_file: Path, job: dict[str, Any], store: ModelStore, *, timeout: float,
                send_buffer: int | None = None) -> dict[str, Any]:
    """Everything for one cluster, torn down on the way out whatever happens."""
    cluster = load_cluster(cluster_file)
    models = sorted(set(job.get("models", [])) | {m for m in [job.get("hop_sweep"), (job.get("failover") or {}).get("model")] if m})
    blobs = model_blobs(store, models)
    started = time.monotonic()
    with Testbed(cluster) as tb:
        progress(f"{cluster.name}: testbed up ({len(tb.nodes)} nodes), logs in {tb.log_dir}")
        if send_buffer:
            set_send_buffer(tb, send_buffer)
        swarm = TestbedSwarm(tb, store.root, tuple(blobs), blobs).start()
        progress(f"{cluster.name}: {len(swarm.nodes)} nodes ready in {time.monotonic() - started:.1f}s")
        core = full_core(tb, job.get("models", []))
        compute = compute_check(tb, swarm, swarm.advertised(), core)
        for row in compute:
            progress(f"  {row['node']}: quota {row['cpu']:.2f} core, advertises {row['advertised_gflops']:.1f} GFLOP/s "
                     f"= {row['ratio']:.3f} x full core ({core['gflops']:.1f}); linear class {row['linear_ratio']:.3f}")
        result: dict[str, Any] = {}
        phases = [("models", {**job, "hop_sweep": None, "failover": None}),
                  ("hop_sweep", {**job, "models": [], "failover": None}),
                  ("failover", {**job, "models": [], "hop_sweep": None,
                                "failover": job.get("failover") and {**job["failover"], "pids": swarm.pids()}})]
        for phase, sub in phases:  # separate jobs: one failing phase does not lose the others
            if not (sub.get("models") or sub.get("hop_sweep") or sub.get("failover")):
                continue
            progress(f"{cluster.name}: {phase}")
            try:
                out = run_requester(tb, swarm, sub, store, timeout)
            except TestbedError as e:
                progress(f"{cluster.name}: {phase} failed: {e}")
                result.setdefault("errors", []).append(f"{phase}: {e}")
                continue
            result.update({k: v for k, v in out.items() if k != "models" or phase == "models"})
        names = {p.peer_id: n for n, p in swarm.nodes.items()}
        throttled = {n: tb.cpu_stat(n).get("nr_throttled", 0) for n in tb.nodes}
    return {"cluster": cluster.name, "nodes": names, "compute": compute, "throttled": throttled, "full_core": core,
            "wall_s": time.monotonic() - started, "models": [], **result}
