"""The benchmark's requester, run inside the testbed's requester namespace and cgroup:

    python -m benchmarks.testbed_bench.requester --bootstrap MA [--bootstrap MA ...] --link UP,DOWN,LAT_MS JOB.json

It discovers the swarm like any requester (verified records, advertised compute measured by each
node in its cgroup), plans each model with the planner and every baseline (core/baselines) from
the same snapshot and cost model, and forces each plan through a real circuit with
`net.circuit_client.run_plan` (streamed throughput) and `Circuit.infer` (one-at-a-time latency).
JOB.json: {"models": [...], "frames": N, "latency_reps": M, "methods": [...] | null,
"hop_sweep": MODEL | null, "failover": {"model", "kill_after", "pids": {peer_id: pid}} | null,
"chains": {LABEL: [[peer_id, start, stop], ...]} (optional: given chains, priced by the same cost
model and measured like the methods' plans, for diagnosing one hop)}.
Prints one JSON document on stdout; progress on stderr.

Links: the kernel enforces every bandwidth cap, so the requester does not shape its uplink; it
only adds its own one-way latency per frame, as the nodes' shapers do.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import sys
import time
from typing import Any, Sequence

import trio

from p2pinfer.client import Requester, RequesterConfig, RequesterHooks, Retry
from p2pinfer.core import planner
from p2pinfer.core.baselines import baseline_plans, even_split_k
from p2pinfer.core.costs import build_costs
from p2pinfer.core.plan import Plan, PlannerOptions, pipeline_window
from p2pinfer.core.replicas import ReplicaOptions, ReplicatedPlan, plan_replicated
from p2pinfer.core.snapshot import RequesterSpec, SwarmSnapshot
from p2pinfer.emulation import UplinkShaper
from p2pinfer.errgroups import unwrapped
from p2pinfer.models import profiling
from p2pinfer.models.io import sample_input
from p2pinfer.models.store import store_for
from p2pinfer.net.circuit_client import ClientConfig, hop_specs, run_plan
from p2pinfer.net.replicated_run import run_replicated

OPTIONS = PlannerOptions(amortize_requests=None)  # the nodes hold the weights (benchmarks/testbed_bench/swarm.py)
METHODS = ("planner", "single-peer", "even-split", "memory-proportional", "greedy-fastest", "replicated")
REPLICAS = ReplicaOptions(exact_peers=8)  # the replicated planner: disjoint chains at once (core/replicas.py)


def say(text: str) -> None:
    print(f"[requester {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def spans(plan: Plan) -> list[list[Any]]:
    return [[h.peer_id, h.start, h.stop] for h in plan.hops]


def plans_for(profile: Any, snapshot: SwarmSnapshot, objective: str, methods: list[str],
              chains: dict[str, list[list[Any]]] | None = None) -> dict[str, Plan | None]:
    """The planner's plan and every baseline's, and any given `chains`, priced by the same cost model."""
    out: dict[str, Plan | None] = {}
    if "planner" in methods:
        out["planner"] = planner.plan(profile, snapshot, objective=objective, options=OPTIONS)
    costs = build_costs(profile, snapshot, OPTIONS)
    base = baseline_plans(costs, objective)
    out.update({m: base.get(m) for m in methods if m not in ("planner", "replicated")})
    index = {p.peer_id: i for i, p in enumerate(costs.peers)}
    for label, chain in (chains or {}).items():
        out[label] = costs.evaluate([(index[peer], int(a), int(b)) for peer, a, b in chain], objective, method=label)
    return out


def steady_throughput(done_at: list[float]) -> float:
    """Results per second after the pipeline filled (the first quarter, at least 2, dropped:
    first frames also pay each hop's layer build)."""
    skip = max(2, len(done_at) // 4)
    if len(done_at) - skip < 2:
        return float("nan")
    return (len(done_at) - 1 - skip) / (done_at[-1] - done_at[skip])


async def measure_stream(req: Requester, manifest: Any, plan: Plan, acts: Any, addrs: Any, frames: int) -> dict[str, Any]:
    done_at: list[float] = []
    run = await run_plan(req.client, plan=plan, manifest=manifest, inputs=[acts] * frames, peer_addrs=addrs,
                         max_in_flight=pipeline_window(plan), on_result=lambda _n, _r: done_at.append(time.perf_counter()))
    return {"throughput_rps": steady_throughput(done_at), "setup_ms": run.setup_ms, "wall_s": run.wall_s,
            "stream_latency_ms": statistics.median(run.latency_ms),
            "hops": [{"peer": h.peer_id, "layers": [h.start, h.stop], "predicted_compute_ms": h.predicted_compute_ms,
                      "predicted_transfer_in_ms": h.predicted_transfer_in_ms, "measured_compute_ms": h.measured_compute_ms}
                     for h in run.hops]}


async def measure_latency(req: Requester, manifest: Any, plan: Plan, acts: Any, addrs: Any, reps: int) -> dict[str, Any]:
    """One warm-up request (layer build), then `reps` sequential requests on one circuit."""
    circuit = await req.client.open_circuit(model_id=manifest.model_id, hops=hop_specs(plan, manifest, addrs))
    async with circuit:
        await circuit.infer(acts)
        times, traces = [], []
        for _ in range(reps):
            start = time.perf_counter()
            result = await circuit.infer(acts)
            times.append((time.perf_counter() - start) * 1000)
            traces.append(result.trace)
    compute = [statistics.median(t[i] for t in traces) / 1000 for i in range(len(plan.hops))]
    return {"latency_ms": statistics.median(times), "latencies_ms": times, "hop_compute_ms": compute}


def describe(plan: Plan) -> dict[str, Any]:
    return {"spans": spans(plan), "predicted_throughput_rps": plan.throughput_rps,
            "predicted_latency_ms": plan.predicted_latency_s * 1000, "bottleneck_s": plan.bottleneck_s,
            "optimal": plan.optimal, "predicted_compute_ms": [h.compute_s * 1000 for h in plan.hops]}


async def bench_model(req: Requester, snapshot: SwarmSnapshot, addrs: Any, model: str, job: dict[str, Any]) -> dict[str, Any]:
    """Every method x objective for one model; identical chains are measured once."""
    manifest = req.manifest(model)
    profile = profiling.profile(manifest, req.store)
    acts = req.load_input(manifest, {k: v.numpy() for k, v in sample_input(manifest, req.store).items()})
    methods = job.get("methods") or list(METHODS)
    out: dict[str, Any] = {"model": model, "layers": manifest.num_layers, "gflop": sum(l.flops for l in profile.layers) / 1e9,
                           "throughput": {}, "latency": {}}
    for objective, kind in (("throughput", "stream"), ("latency", "single")):
        seen: dict[str, dict[str, Any]] = {}
        for method, plan in plans_for(profile, snapshot, objective, methods, job.get("chains")).items():
            if plan is None:
                out[objective][method] = None
                continue
            key = json.dumps(spans(plan))
            if key not in seen:
                say(f"{model} {objective} {method}: {len(plan.hops)} hop(s), predicted "
                    f"{plan.throughput_rps:.2f} rps / {plan.predicted_latency_s * 1000:.0f} ms")
                measured = (await measure_stream(req, manifest, plan, acts, addrs, job["frames"]) if kind == "stream"
                            else await measure_latency(req, manifest, plan, acts, addrs, job["latency_reps"]))
                seen[key] = measured
            out[objective][method] = {**describe(plan), "measured": seen[key]}
    if "replicated" in methods:  # throughput only: a replicated plan has no single-request latency
        out["throughput"]["replicated"] = await bench_replicated(req, manifest, profile, snapshot, acts, addrs, job["frames"])
        out["latency"]["replicated"] = None
    return out


def steady_replicated(done_at: Sequence[float], done_by: Sequence[int], last_dispatch: float) -> float:
    """The stream's steady rate: the sum over chains of each chain's own rate, measured between
    its consecutive results while the queue still held inputs (every chain busy). Counting all
    arrivals in a common window instead is skewed by where that window cuts the slow chains'
    few results (one result of a 0.15-input/s chain more or less moved it by 20%). A chain with
    fewer than two results in that span counts with its results over its whole time."""
    total = 0.0
    for chain in sorted(set(done_by)):
        times = [t for t, c in zip(done_at, done_by) if c == chain]
        busy = [t for t in times if t <= last_dispatch]
        if len(busy) >= 2:  # the first result ends the pipeline fill: the gaps after it are steady
            total += (len(busy) - 1) / (busy[-1] - busy[0])
        elif len(times) >= 2:
            total += (len(times) - 1) / (times[-1] - times[0])
        else:
            total += len(times) / times[-1]
    return total


def replicated_inputs(rates_rps: Sequence[float], frames: int, *, per_chain: int = 5, cap: int = 200) -> int:
    """Inputs for a replicated run: enough that the slowest chain gets `per_chain` of them
    (inputs go to chains in proportion to their rates), at least `frames`, at most `cap`."""
    total, slowest = sum(rates_rps), min(rates_rps)
    return min(cap, max(frames, math.ceil(per_chain * total / slowest)))


async def bench_replicated(req: Requester, manifest: Any, profile: Any, snapshot: SwarmSnapshot, acts: Any, addrs: Any,
                           frames: int) -> dict[str, Any]:
    """The replicated plan streamed over all its chains at once (pull-based, net/replicated_run.py);
    at least 5 inputs on the slowest chain so that every chain reaches its steady state."""
    rp = plan_replicated(profile, snapshot, options=OPTIONS, replicas=REPLICAS)
    count = replicated_inputs(rp.rates_rps, frames)
    say(f"{manifest.name} throughput replicated: {len(rp.chains)} chain(s), predicted {rp.throughput_rps:.2f} rps "
        f"(bound {rp.upper_bound_rps:.2f}), {count} inputs")
    run = await run_replicated(req.client, plan=rp, manifest=manifest, inputs=[acts] * count, peer_addrs=addrs)
    measured = {"throughput_rps": steady_replicated(run.done_at_s, run.done_by, run.last_dispatch_s),
                "overall_rps": count / run.done_at_s[-1], "setup_ms": run.setup_ms, "wall_s": run.wall_s,
                "done_at_s": list(run.done_at_s), "done_by": list(run.done_by), "last_dispatch_s": run.last_dispatch_s,
                "stream_latency_ms": statistics.median(run.latency_ms), "frames": count,
                "requester_cpu_ms_per_input": run.requester_cpu_s / count * 1000,
                "chains": [{"inputs": c.inputs, "error": c.error, "predicted_rps": c.predicted_rps,
                            "hops": [{"peer": h.peer_id, "layers": [h.start, h.stop], "predicted_compute_ms": h.predicted_compute_ms,
                                      "measured_compute_ms": h.measured_compute_ms} for h in c.hops]} for c in run.chains]}
    return {**describe_replicated(rp), "measured": measured}


def describe_replicated(rp: ReplicatedPlan) -> dict[str, Any]:
    """Like `describe`, per chain; `spans` is every hop of every chain (the plan's identity)."""
    return {"spans": [s for c in rp.chains for s in spans(c)], "chains": [describe(c) for c in rp.chains],
            "rates_rps": list(rp.rates_rps), "predicted_throughput_rps": rp.throughput_rps,
            "upper_bound_rps": rp.upper_bound_rps, "optimal": rp.optimal, "limit": rp.limit,
            "predicted_latency_ms": float("nan"), "bottleneck_s": 1.0 / rp.throughput_rps,
            "predicted_compute_ms": [ms for c in rp.chains for ms in describe(c)["predicted_compute_ms"]]}


async def hop_sweep(req: Requester, snapshot: SwarmSnapshot, addrs: Any, model: str, reps: int) -> list[dict[str, Any]]:
    """Latency of the same model over 1..P hops (even split over the k fastest): the slope of
    measured minus predicted is the per-hop overhead the cost model does not price."""
    manifest = req.manifest(model)
    profile = profiling.profile(manifest, req.store)
    acts = req.load_input(manifest, {k: v.numpy() for k, v in sample_input(manifest, req.store).items()})
    cm = build_costs(profile, snapshot, OPTIONS)
    rows = []
    for k in range(1, min(cm.num_peers, manifest.num_layers) + 1):
        plan = even_split_k(cm, "latency", k)
        if plan is None:
            continue
        measured = await measure_latency(req, manifest, plan, acts, addrs, reps)
        say(f"hop sweep {model} k={k}: {measured['latency_ms']:.1f} ms (predicted {plan.predicted_latency_s * 1000:.1f})")
        rows.append({"hops": k, **describe(plan), "measured": measured})
    return rows


class Failover(RequesterHooks):
    """Retry without the failed hop; record when the failure surfaced."""

    def __init__(self) -> None:
        self.failed_at: float | None = None
        self.error = ""
        self.victim: str | None = None  # the peer we killed: blamed even if a neighbour reported it

    async def on_failure(self, attempt: Any, error: Exception) -> Retry | None:
        self.failed_at, self.error = time.perf_counter(), f"{type(error).__name__}: {error}"
        blamed = getattr(error, "peer_id", None)
        plan_peers = {h.peer_id for h in attempt.plan.hops}
        victim = self.victim if self.victim in plan_peers else blamed
        return Retry(exclude=frozenset({victim} if victim else set()))


async def failover(req: Requester, hooks: Failover, spec: dict[str, Any], frames: int) -> dict[str, Any]:
    """Stream `frames` inputs; after `kill_after` results SIGKILL the process of the plan's
    middle hop; the requester's hooks re-plan without it. Returns the timeline."""
    manifest = req.manifest(spec["model"])
    acts = req.load_input(manifest, {k: v.numpy() for k, v in sample_input(manifest, req.store).items()})
    snapshot, _addrs = await req.snapshot()
    plan = req.plan(manifest, snapshot, "throughput")
    hooks.victim = plan.hops[len(plan.hops) // 2].peer_id
    events: dict[str, Any] = {"victim": hooks.victim, "plan": spans(plan), "kill_after": spec["kill_after"]}
    times: list[float] = []
    t0 = time.perf_counter()

    def on_result(n: int) -> None:
        times.append(time.perf_counter())
        if "killed_at" not in events and n >= spec["kill_after"]:
            os.kill(int(spec["pids"][hooks.victim]), signal.SIGKILL)
            events["killed_at"] = time.perf_counter()
            say(f"failover: killed {hooks.victim[:16]} after {n} results")

    result = await req.infer_stream(spec["model"], [acts] * frames, on_result=on_result)
    killed = events.get("killed_at")
    after = [t for t in times if killed and t > (hooks.failed_at or killed)]
    events.update({"attempts": result.attempts, "error": hooks.error,
                   "detect_s": (hooks.failed_at - killed) if killed and hooks.failed_at else None,
                   "recover_s": (after[0] - killed) if after else None, "wall_s": time.perf_counter() - t0,
                   "new_plan": spans(result.plan), "frames": frames, "throughput_rps": result.throughput_rps})
    return events


async def main(args: argparse.Namespace, job: dict[str, Any]) -> dict[str, Any]:
    up, down, lat = (float(x) for x in args.link.split(","))
    hooks = Failover()
    config = RequesterConfig(link=RequesterSpec(up, down, lat), use_dht=False, planner=OPTIONS, max_attempts=3,
                             circuit=ClientConfig(io_timeout_s=20, setup_timeout_s=60, result_timeout_s=float(job.get("result_timeout_s", 30))))
    async with Requester(args.bootstrap, store=store_for(args.store), config=config, hooks=hooks) as req:
        req.client.send_delay = UplinkShaper(None, lat)  # the kernel caps our uplink; add only our latency
        snapshot, addrs = await req.snapshot()
        out: dict[str, Any] = {"peers": [{"peer": p.peer_id, "gflops": p.gflops, "by_class": dict(p.gflops_by_class),
                                          "by_kind": dict(p.gflops_by_kind), "load": p.load,
                                          "frame_ms": p.frame_ms, "frame_ms_per_mib": p.frame_ms_per_mib,
                                          "cpu_quota_ms": p.cpu_quota_ms, "cpu_period_ms": p.cpu_period_ms,
                                          "up_mbps": p.up_mbps, "down_mbps": p.down_mbps, "latency_ms": p.latency_ms,
                                          "mem_bytes": p.mem_bytes} for p in snapshot.peers], "models": []}
        for model in job.get("models", []):
            out["models"].append(await bench_model(req, snapshot, addrs, model, job))
        if job.get("hop_sweep"):
            out["hop_sweep"] = await hop_sweep(req, snapshot, addrs, job["hop_sweep"], max(8, job["latency_reps"]))
        if job.get("failover"):
            out["failover"] = await failover(req, hooks, job["failover"], job["failover"].get("frames", job["frames"]))
        return out


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, action="append", help="a node's multiaddr (repeatable)")
    parser.add_argument("--link", required=True, help="our access link: UP_MBPS,DOWN_MBPS,LATENCY_MS")
    parser.add_argument("--store", default=None, help="model store (default: the user data dir)")
    parser.add_argument("job", help="JOB.json (see the module docstring)")
    args = parser.parse_args()
    with open(args.job, encoding="utf-8") as f:
        job = json.load(f)
    with unwrapped():
        out = trio.run(main, args, job)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
