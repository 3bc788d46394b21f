"""Partitioning on the kernel-enforced testbed: planner vs baselines, cost-model error, per-hop
overhead and failover, with real `p2pinfer node start` processes (docs/testbed.md).

    python -m benchmarks.bench_testbed                 # full: iot4 + iot8, resnet50/vgg16/minilm (~10 min)
    python -m benchmarks.bench_testbed --quick         # ci-quick cluster, minilm only (~2 min), no docs
    python -m benchmarks.bench_testbed --clusters iot8 --models resnet50 --frames 24

Per cluster: bring up the testbed (namespaces, tbf caps, cgroup quotas), write each node's config
from its device class, start the nodes (each measures its own compute inside its cgroup), check
the advertised GFLOP/s against quota x one full core, then run the requester job in the
requester's namespace (benchmarks/testbed_bench/requester.py): per model, the planner's plan and
every baseline's (best single node, DEFER-style even split, exo-style memory-proportional split,
greedy) for both objectives, each forced through a real circuit: a stream of --frames inputs
(throughput) and --reps sequential requests after a warm-up (latency); then the latency of mlp
over 1..P hops (per-hop overhead), then a stream in which one hop's process is SIGKILLed
(failover). Writes the "testbed" section of docs/benchmarks.md and docs/img/testbed_*.png.
Needs root; otherwise prints the testbed's reason and exits 3.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._report import machine_line, write_section
from benchmarks.testbed import TestbedError, TestbedUnavailable
from benchmarks.testbed_bench import report
from benchmarks.testbed_bench.requester import OPTIONS, REPLICAS
from benchmarks.testbed_bench.run import progress, run_cluster
from p2pinfer.core import planner
from p2pinfer.core.baselines import baseline_plans
from p2pinfer.core.costs import build_costs
from p2pinfer.core.replicas import plan_replicated
from p2pinfer.core.snapshot import PeerSpec, RequesterSpec, SwarmSnapshot
from p2pinfer.models import profiling, zoo
from p2pinfer.models.store import ModelStore, store_for

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ROOT / "benchmarks" / "testbed" / "profiles"
IMG = ROOT / "docs" / "img"
FULL = "python -m benchmarks.bench_testbed"


def job_for(args: argparse.Namespace) -> dict[str, Any]:
    return {"models": args.models, "frames": args.frames, "latency_reps": args.reps, "methods": None,
            "hop_sweep": "mlp", "failover": {"model": "minilm", "kill_after": max(3, args.frames // 3), "frames": args.frames}}


def link_sweep(res: dict[str, Any], store: ModelStore, model: str, link_cpu: dict[str, float]) -> list[dict[str, Any]]:
    """Cost-model what-if on the measured swarm: every link cap x m. Shows whether the
    throughput targets are reachable at all on these links (the planner's plans are proven optimal)."""
    profile = profiling.profile(zoo.get_manifest(model, store=store), store)
    rows = []
    for m in (1, 2, 3, 5, 10):
        peers = tuple(PeerSpec(p["peer"], gflops=p["gflops"], gflops_by_class=p["by_class"], gflops_by_kind=p.get("by_kind", {}),
                               mem_bytes=p["mem_bytes"],
                               up_mbps=p["up_mbps"] * m, down_mbps=p["down_mbps"] * m, latency_ms=p["latency_ms"])
                      for p in res["peers"])
        snap = SwarmSnapshot(RequesterSpec(link_cpu["up"] * m, link_cpu["down"] * m, link_cpu["lat"]), peers)
        plan = planner.plan(profile, snap, objective="throughput", options=OPTIONS)
        base = baseline_plans(build_costs(profile, snap, OPTIONS), "throughput")
        rep = plan_replicated(profile, snap, options=OPTIONS, replicas=REPLICAS)
        rows.append({"mult": m, "planner": plan.throughput_rps, "optimal": plan.optimal, "hops": len(plan.hops),
                     "replicated": rep.throughput_rps, "replicated_chains": len(rep.chains),
                     "single": base["single-peer"].throughput_rps if base["single-peer"] else float("nan"),
                     "even": base["even-split"].throughput_rps if base["even-split"] else float("nan")})
    return rows


def section(results: list[dict[str, Any]], sweep: list[dict[str, Any]], args: argparse.Namespace, wall_s: float) -> str:
    cmd = f"{FULL} --clusters {' '.join(args.clusters)} --models {' '.join(args.models)} --frames {args.frames} --reps {args.reps}"
    out = ["## Testbed: planner vs baselines on kernel-enforced IoT clusters", "",
           f"`{cmd}` (as root; {wall_s / 60:.1f} min). {machine_line()} Each node is a `p2pinfer node start` process in its "
           "own network namespace (tbf caps) and cgroup (CPU quota), see docs/testbed.md; plans are forced through real "
           "circuits from the requester's namespace. Streams: throughput after the pipeline filled; latency: median of "
           "sequential requests after a warm-up. Error = (predicted - measured) / measured.", ""]
    t = report.targets(results)
    if t:
        label = "planner (single chain)" if t["best"] == "planner" else report.SHORT[t["best"]]
        out += ["### Targets (issue 7): iot8, resnet50", "",
                f"Best planner result by measured throughput: **{label}**, {t['shape']} "
                f"({t['measured']:.2f} inputs/s measured, {t['predicted']:.2f} predicted"
                + (f"; {t['overall']:.2f} over the whole stream of {t['frames']}, its tail included: the slowest chains "
                   "finish their last inputs after the others ran dry" if t.get("overall") else "") + ").", "",
                "| | measured | predicted (cost model) | target |", "|---|---|---|---|",
                f"| best planner result ({label}) / best single node | {t['vs_single']:.2f}x | {t['pred_vs_single']:.2f}x | >= 1.5x |",
                f"| best planner result ({label}) / even split (DEFER) | {t['vs_even']:.2f}x | {t['pred_vs_even']:.2f}x | >= 1.2x |"]
        for key, row in t["rows"].items():
            if key != t["best"]:
                out += [f"| {report.SHORT[key]} / best single node | {row['vs_single']:.2f}x | {row['pred_vs_single']:.2f}x | |",
                        f"| {report.SHORT[key]} / even split (DEFER) | {row['vs_even']:.2f}x | {row['pred_vs_even']:.2f}x | |"]
        out.append("")
        cpu = t.get("requester_cpu_ms")
        if cpu:
            feeds = 1000 / cpu
            out += [f"Requester CPU: {cpu:.1f} ms per input (encode, seal, send, receive): it could feed {feeds:.0f} "
                    f"inputs/s, " + ("not the bottleneck." if feeds > 1.5 * t["measured"] else
                                     "close to the measured rate: the requester is (near) the bottleneck."), ""]
    for correct, label in ((False, "cost-model"), (True, "with compute corrected by model efficiency (diagnostic)")):
        for k, v in report.errors(results, correct=correct).items():
            if v:
                inside = sum(abs(x) <= 0.15 for x in v)
                out.append(f"- {label} {k} error over {len(v)} distinct plans: median |error| "
                           f"{statistics.median(abs(x) for x in v) * 100:.0f}%, max {max(abs(x) for x in v) * 100:.0f}%, "
                           f"{inside}/{len(v)} within 15%.")
    if results and results[0].get("full_core") and results[0]["models"]:
        out += ["", "Model efficiency on one full core of this host (outside any cgroup, one torch thread): "
                "the calibration's prediction / the measured whole-model time; the cost model assumes 1.0. "
                "`python -m benchmarks.testbed_bench.efficiency resnet50 vgg16 minilm`", "", report.efficiency_table(results)]
    out += ["", "Known causes of the misses (measured and explained in docs/testbed.md, \"What we found\"): on the "
            "issue's IoT links a single resnet50 chain is link-bound (0.4-3.2 MB fp32 activations over 20 Mbit/s; the "
            "single-chain planner's plan is proven optimal under the cost model, see the last table for the links it would "
            "need), which the replicated planner sidesteps by serving disjoint chains at once (docs/cost-model.md); the "
            "DEFER even split of resnet50 puts [10, 20) on a 0.2-core node whose input transfer (344 ms) and compute "
            "(~320 ms) are balanced: that span used ~14% more CPU per input under the quota than its calibration implies "
            "(on a full core it runs at its prediction), which the balanced chain turned into +13..+56% of throughput "
            "error, over 15% in one cluster per run; the slowest chains of a replicated plan "
            "lose 7-20% when every node computes at once (1.6 cores of quota and the requester on 2 vCPUs); the head "
            "hop of the planner's deep MiniLM chain ran its span at up to 2.3x its prediction (not explained yet: "
            "forced alone, such heads ran from 23% under to 39% over theirs), and frame handling in streams took ~3x the event-loop "
            "CPU per input that the frame-cost micro-benchmark measures (12.5 against ~4 ms on a 0.2-core node); and runs "
            "differ: in one of three runs of the same code a whole cluster's MiniLM hops ran 1.3-2x their predictions "
            "and its nodes calibrated 10-30% lower, and in a later period the same code ran the jetson's whole resnet50 "
            "at 445-506 ms per input against 323-362 before (this VM's neighbours are invisible from inside it). That scatter is a floor: one calibration kernel, timed over and over on this VM with nothing else running, moves so much that a cost model knowing every layer's cost exactly would be within 15% for only 55-90% of (calibration, 10-s stream minutes later) pairs at the testbed's 0.4-core quota and 70-87% at 0.2 core (three runs of benchmarks/bench_host_noise.py, section Host noise floor; docs/testbed.md, session 8, reads the latest full run against it). "
            "Fixed since the first runs: hops pipeline read, compute and forward; nodes calibrate in CPU seconds x their "
            "quota; a per-layer-kind speed table replaced one rate per class (each model's efficiency against the "
            "calibration, table above, was 1.18 / 1.43 / 0.81 for resnet50 / vgg16 / minilm with the class rates); "
            "pooling layers count their window operations; a node receives with a socket low-water mark "
            "(net/transport_tuning.py patch 5: 1 MiB over 20 Mbit/s cost ~65 ms of receiver CPU, now 5-11 ms); and "
            "streams keep latency / bottleneck inputs in flight (core.plan.pipeline_window; a fixed window of 4 held "
            "a 4-hop vgg16 split at 0.87 inputs/s against 1.48 predicted); nodes measure and advertise their frame "
            "handling per input (net/frame_cost.py: ~10 ms + 25 ms/MiB on a 0.2-core node, priced in every hop's stage) "
            "and the CPU their own background work takes as load (load_monitor.py: 1-11% of their quota); nodes "
            "advertise their CPU quota and period, and latency prices a lone request's work as starting on a fresh "
            "period at full core speed (the hop sweep's 4-hop prediction fell from 138 to 62 ms, measured 39-45); a "
            "replicated stream's rate is the sum of its chains' own rates (a common window cut the slow chains' few "
            "results: -24..+30% errors before, -18..+18% after); nodes time their calibration kernels for a box of CPU "
            "time, not wall time (a 0.2-core node's bottleneck rate scattered 39-59 GFLOP per CPU-second over three runs, "
            "now 60-64), and emulated links add their latency at both ends of a transfer, as the cost model charges.",
            "", "![throughput](img/testbed_throughput.png)", "", "![prediction](img/testbed_prediction.png)", ""]
    for res in results:
        if res.get("error") or res.get("errors"):
            out += [f"**{res['cluster']}: failed**: {res.get('error') or '; '.join(res['errors'])}", ""]
        if not res.get("compute"):
            continue
        out += [f"### {res['cluster']}: advertised compute vs quota", "", report.compute_table(res), ""]
        for model in res["models"]:
            out += [report.model_table(res, model), ""]
        table, slope = report.hop_sweep_table(res)
        if res.get("hop_sweep"):
            out += [f"Per-hop overhead ({res['cluster']}, mlp over 1..P hops, latency): slope of measured - predicted "
                    f"= **{slope:.1f} ms per hop**.", "", table, ""]
        f = res.get("failover")
        if f:
            out += [f"Failover ({res['cluster']}, minilm stream of {f['frames']}, hop {res['nodes'].get(f['victim'], f['victim'])} "
                    f"SIGKILLed after {f['kill_after']} results): failure surfaced after "
                    f"**{(f['detect_s'] or float('nan')) * 1000:.0f} ms** ({f['error'][:120]}...), first result of the re-planned "
                    f"circuit **{(f['recover_s'] or float('nan')):.2f} s** after the kill; {f['attempts']} attempts, new plan "
                    f"{' → '.join(res['nodes'].get(p, p[:8]) + f'[{a}:{b}]' for p, a, b in f['new_plan'])}.", ""]
    if sweep:
        out += ["### Are the targets reachable on these links? (cost model, measured swarm, resnet50, iot8)", "",
                "Every link cap multiplied by m; planner plans proven optimal where marked.", "",
                "| m (rpi4 Mbit/s) | planner rps | best single | even split | planner / single | planner / even | replicated rps (chains) |",
                "|---|---|---|---|---|---|---|"]
        for r in sweep:
            out.append(f"| {r['mult']} ({20 * r['mult']}) | {r['planner']:.2f}{' (opt)' if r['optimal'] else ''} | {r['single']:.2f} "
                       f"| {r['even']:.2f} | {r['planner'] / r['single']:.2f}x | {r['planner'] / r['even']:.2f}x "
                       f"| {r.get('replicated', float('nan')):.2f} ({r.get('replicated_chains', '?')}) |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="testbed benchmark (issue 7)")
    parser.add_argument("--clusters", nargs="+", default=["iot4", "iot8"], help="profile names under benchmarks/testbed/profiles")
    parser.add_argument("--models", nargs="+", default=["resnet50", "vgg16", "minilm"])
    parser.add_argument("--frames", type=int, default=12, help="inputs per stream")
    parser.add_argument("--reps", type=int, default=3, help="sequential requests per latency measurement")
    parser.add_argument("--quick", action="store_true", help="ci-quick cluster, minilm, short streams; docs untouched")
    parser.add_argument("--out", type=Path, help="also write the raw results as JSON here")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md and the plots")
    parser.add_argument("--from-json", type=Path, metavar="PATH",
                        help="re-render docs/benchmarks.md and the plots from a saved --out file (same other flags) without running")
    parser.add_argument("--send-buffer", type=int, metavar="BYTES",
                        help="diagnostic: fixed TCP send buffer in every namespace (a hop's send then returns at once)")
    args = parser.parse_args(argv)
    if args.quick:
        args.clusters, args.models, args.frames, args.reps, args.no_docs = ["ci-quick"], ["minilm"], 8, 2, True
    store = store_for(None)
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        results, sweep = saved["results"], saved.get("sweep", [])
        return publish(section(results, sweep, args, sum(r.get("wall_s", 0.0) for r in results)), results, args)
    started = time.monotonic()
    results = []
    for name in args.clusters:
        progress(f"cluster {name} ({time.monotonic() - started:.0f}s elapsed)")
        try:
            results.append(run_cluster(PROFILES / f"{name}.toml", job_for(args), store, timeout=1200,
                                       send_buffer=args.send_buffer))
        except TestbedUnavailable as e:
            print(e, file=sys.stderr)
            return 3
        except TestbedError as e:  # this cluster failed (teardown done); report it, go on with the next
            progress(f"cluster {name} failed: {e}")
            results.append({"cluster": name, "error": str(e), "models": [], "nodes": {}, "compute": []})
        if args.out:
            args.out.write_text(json.dumps({"results": results}, indent=1))
    wall = time.monotonic() - started
    progress(f"done in {wall:.0f}s")
    iot8 = next((r for r in results if r["cluster"] == "iot8" and r.get("peers")), None)
    sweep = link_sweep(iot8, store, "resnet50", {"up": 200, "down": 200, "lat": 2}) if iot8 else []
    if args.out:
        args.out.write_text(json.dumps({"results": results, "sweep": sweep}, indent=1))
    return publish(section(results, sweep, args, wall), results, args)


def publish(text: str, results: list[dict[str, Any]], args: argparse.Namespace) -> int:
    """Print the section; unless --no-docs, write it to docs/benchmarks.md with its plots."""
    print(text)
    if not args.no_docs:
        IMG.mkdir(parents=True, exist_ok=True)
        report.plot_throughput(results, IMG / "testbed_throughput.png")
        report.plot_prediction(results, IMG / "testbed_prediction.png")
        write_section("testbed", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
