"""Planner benchmark: solve time and plan quality on random heterogeneous swarms.

Reproduce:  python -m benchmarks.bench_planner            (full; about a few minutes)
            python -m benchmarks.bench_planner --quick    (fewer repetitions and instances)

Instances: a transformer-like or CNN-like layer chain (FLOPs, parameter and activation sizes
drawn around realistic values) over peers drawn from device classes (IoT boards, phones,
laptops, desktops, GPU boxes) with per-peer jitter on every field, random reputation and load.
Writes the "planner" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import dataclass

from p2pinfer.core.baselines import baseline_plans
from p2pinfer.core.costs import build_costs
from p2pinfer.core.plan import Plan, PlannerOptions
from p2pinfer.core.planner import check_feasible, plan_with_costs
from p2pinfer.core.profile import LayerProfile, ModelProfile
from p2pinfer.core.snapshot import PeerSpec, RequesterSpec, SwarmSnapshot
from p2pinfer.errors import InfeasiblePlanError

try:
    from benchmarks._report import machine_line, write_section
except ImportError:  # run as a script from benchmarks/
    from _report import machine_line, write_section  # type: ignore[no-redef]

# (name, weight, gflops, mem GB, up Mbit/s, down Mbit/s, latency ms)
DEVICE_CLASSES = (
    ("iot", 3, (2, 20), (0.25, 2), (5, 40), (10, 80), (20, 80)),
    ("phone", 3, (20, 150), (2, 6), (10, 100), (20, 300), (15, 60)),
    ("laptop", 4, (50, 400), (4, 16), (20, 300), (50, 500), (5, 30)),
    ("desktop", 2, (200, 2000), (8, 32), (50, 1000), (100, 1000), (2, 20)),
    ("gpu-box", 1, (5000, 60000), (16, 80), (100, 2000), (100, 2000), (1, 10)),
)


def random_profile(rng: random.Random, num_layers: int) -> ModelProfile:
    """A layer chain shaped like a transformer (uniform) or a CNN (activations shrink)."""
    cnn = rng.random() < 0.5
    layers = []
    for i in range(num_layers):
        depth = i / max(1, num_layers - 1)
        scale = rng.uniform(0.5, 1.5)
        if cnn:
            out = int(4e6 * (0.02 ** depth) * scale) + 4000
            params = int(2e7 * (0.1 + depth) * scale)
            flops = int(4e9 * scale * (1.2 - depth * 0.5))
            by_class = {"conv": int(flops * 0.9), "other": int(flops * 0.1)}
        else:
            out = int(128 * 1024 * 4 * scale)
            params = int(2.8e7 * scale)
            flops = int(7e9 * scale)
            by_class = {"linear": int(flops * 0.8), "attention": int(flops * 0.18), "other": int(flops * 0.02)}
        layers.append(LayerProfile(i, "conv" if cnn else "block", flops, params, out, by_class, f"h{i}"))
    return ModelProfile("cnn" if cnn else "transformer", "bench", 3 * 224 * 224 * 4 if cnn else 128 * 8, tuple(layers))


def random_snapshot(rng: random.Random, num_peers: int, model_bytes: int) -> SwarmSnapshot:
    """Peers drawn from device classes; memory scaled so that only big boxes hold the whole model."""
    weights = [c[1] for c in DEVICE_CLASSES]
    mem_scale = model_bytes / 32e9  # a "16 GB" device holds half the model
    peers = []
    for j in range(num_peers):
        _, _, g, m, up, down, lat = rng.choices(DEVICE_CLASSES, weights)[0]
        rep = 1.0 if rng.random() < 0.8 else rng.uniform(0.1, 1.0)
        peers.append(PeerSpec(
            f"peer-{j:04d}", rng.uniform(*g), int(rng.uniform(*m) * 1e9 * mem_scale), rng.uniform(*up),
            rng.uniform(*down), rng.uniform(*lat), reputation=rep, load=rng.choice([0.0, 0.0, 0.2, 0.5]),
            holds=frozenset({"bench"}) if rng.random() < 0.3 else frozenset()))
    return SwarmSnapshot(RequesterSpec(rng.uniform(20, 500), rng.uniform(50, 1000), rng.uniform(5, 40)), tuple(peers))


def instances_of(L: int, P: int, count: int, seed: int):
    """`count` feasible random instances (infeasible draws are skipped), deterministic in seed."""
    found, k = [], 0
    while len(found) < count:
        rng = random.Random(seed * 1000 + k)
        k += 1
        profile = random_profile(rng, L)
        snap = random_snapshot(rng, P, profile.total_param_bytes)
        try:
            check_feasible(build_costs(profile, snap, PlannerOptions()), snap, PlannerOptions())
            plan_with_costs(build_costs(profile, snap, PlannerOptions()), snap, "latency", PlannerOptions())
        except InfeasiblePlanError:
            continue
        found.append((profile, snap))
    return found


@dataclass
class Row:
    layers: int
    peers: int
    objective: str
    median_ms: float
    median_cpu_ms: float
    min_ms: float
    max_ms: float
    optimal: int
    runs: int
    worst_gap: float


def time_case(L: int, P: int, objective: str, instances: int, reps: int, seed: int) -> Row:
    """Wall and CPU time of build_costs + plan (the CPU column is what a shared machine distorts least)."""
    times, cpu, optimal, gaps = [], [], 0, []
    for profile, snap in instances_of(L, P, instances, seed):
        opts = PlannerOptions()
        best: Plan | None = None
        for _ in range(reps):
            t, c = time.perf_counter(), time.process_time()
            best = plan_with_costs(build_costs(profile, snap, opts), snap, objective, opts)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        optimal += best.optimal
        gaps.append(best.gap)
    return Row(L, P, objective, 1000 * statistics.median(times), 1000 * statistics.median(cpu), 1000 * min(times),
               1000 * max(times), optimal, instances, max(gaps))


def quality(L: int, P: int, objective: str, instances: int, seed: int) -> dict[str, list[float]]:
    """Per baseline: its objective value divided by the planner's (1.0 = as good)."""
    ratios: dict[str, list[float]] = {}
    for profile, snap in instances_of(L, P, instances, seed):
        opts = PlannerOptions()
        cm = build_costs(profile, snap, opts)
        best = plan_with_costs(cm, snap, objective, opts)
        for name, other in baseline_plans(cm, objective).items():
            ratios.setdefault(name, []).append(other.value / best.value if other else float("inf"))
    return ratios


def _fmt_ratio(values: list[float]) -> str:
    finite = [v for v in values if v != float("inf")]
    if not finite:
        return "infeasible everywhere"
    med = statistics.median(finite)
    miss = len(values) - len(finite)
    return f"{med:.2f}x (worst {max(finite):.2f}x{', infeasible on %d' % miss if miss else ''})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer instances and repetitions")
    ap.add_argument("--note", default="", help="a line printed under the machine line (e.g. 'shared, busy machine')")
    args = ap.parse_args()
    instances, reps, q_inst = (2, 2, 10) if args.quick else (5, 3, 40)
    import scipy.optimize  # noqa: F401  (one-time import the throughput LP needs: not solve time)
    targets = {(50, 10): 5, (100, 100): 50, (200, 1000): 1000}
    rows = [time_case(L, P, obj, instances, reps, seed=L + P)
            for (L, P) in targets for obj in ("latency", "throughput")]
    lines = [
        "## Planner", "",
        f"Reproduce: `python -m benchmarks.bench_planner{' --quick' if args.quick else ''}`. {machine_line()}",
        *([f"**{args.note}**"] if args.note else []),
        f"Random heterogeneous swarms (device classes IoT..GPU box, jittered), {instances} instances x {reps} runs per row.",
        "Times include compiling the cost model (`build_costs`). `median ms` is wall time, `median CPU ms` "
        "the process CPU time of the same runs (all threads, so numpy's threads can push it above wall "
        "time): on a machine shared with other jobs wall time is inflated by waiting for a core. "
        "`proven optimal` counts instances where the planner proved optimality; `worst gap` is the largest "
        "distance to its proven lower bound among the others.", "",
        "| layers | peers | objective | median ms | median CPU ms | min ms | max ms | target ms | proven optimal | worst gap |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r.layers} | {r.peers} | {r.objective} | {r.median_ms:.1f} | {r.median_cpu_ms:.1f} | "
                     f"{r.min_ms:.1f} | {r.max_ms:.1f} | {targets[(r.layers, r.peers)]} | {r.optimal}/{r.runs} | "
                     f"{100 * r.worst_gap:.2f}% |")
    lines += ["", f"Baselines relative to the planner (objective value / planner's, median over {q_inst} instances; "
              "1.00x = as good as the planner):", "",
              "| instance | objective | " + " | ".join(_BASELINE_ORDER) + " |",
              "|---|---|" + "---|" * len(_BASELINE_ORDER)]
    for L, P in ((24, 6), (50, 10), (100, 100)):
        for obj in ("latency", "throughput"):
            ratios = quality(L, P, obj, q_inst, seed=3 * L + P)
            cells = " | ".join(_fmt_ratio(ratios.get(n, [])) for n in _BASELINE_ORDER)
            lines.append(f"| {L} layers, {P} peers | {obj} | {cells} |")
    text = "\n".join(lines)
    write_section("planner", text)
    print(text)


_BASELINE_ORDER = ("single-peer", "even-split", "memory-proportional", "greedy-fastest")

if __name__ == "__main__":
    main()
