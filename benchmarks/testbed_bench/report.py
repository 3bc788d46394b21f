"""Tables and plots of testbed results (the "testbed" section of docs/benchmarks.md)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from benchmarks.testbed_bench.requester import METHODS

SHORT = {"planner": "planner", "single-peer": "best single", "even-split": "even split (DEFER)",
         "memory-proportional": "mem-proportional (exo)", "greedy-fastest": "greedy", "replicated": "planner (replicated)"}


def err(pred: float, meas: float) -> float:
    """Relative error of the prediction against the measurement."""
    return (pred - meas) / meas if meas and math.isfinite(meas) and meas > 0 else float("nan")


def pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x * 100:+.0f}%"


def hops_text(entry: dict[str, Any], names: dict[str, str]) -> str:
    if "chains" in entry:  # a replicated plan: its chains, served at once
        return f"{len(entry['chains'])} chains at once: " + " ∥ ".join(hops_text(c, names) for c in entry["chains"])
    return " → ".join(f"{names.get(p, p[:8])}[{a}:{b}]" for p, a, b in entry["spans"])


KINDS_SHOWN = ("conv_bn_act", "bottleneck", "bert_layer", "linear")


def compute_table(res: dict[str, Any]) -> str:
    rows = ["| node | class | CPU quota | advertised GFLOP/s | full core GFLOP/s | ratio | linear-class ratio "
            "| conv / linear / attention | kinds: " + " / ".join(KINDS_SHOWN) + " |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in res["compute"]:
        bc, bk = r["by_class"], r.get("by_kind", {})
        kinds = " / ".join(f"{bk[k]:.1f}" if k in bk else "-" for k in KINDS_SHOWN)
        rows.append(f"| {r['node']} | {r['class']} | {r['cpu']:.2f} | {r['advertised_gflops']:.1f} | {r['full_core_gflops']:.1f} "
                    f"| {r['ratio']:.3f} | {r.get('linear_ratio', float('nan')):.3f} "
                    f"| {bc.get('conv', 0):.1f} / {bc.get('linear', 0):.1f} / {bc.get('attention', 0):.1f} | {kinds} |")
    return "\n".join(rows)


def model_table(res: dict[str, Any], model: dict[str, Any]) -> str:
    names = res["nodes"]
    rows = [f"**{res['cluster']} / {model['model']}** ({model['layers']} layers, {model['gflop']:.1f} GFLOP)\n",
            "| method | throughput plan | predicted rps | measured rps | error | latency plan: predicted ms | measured ms | error |",
            "|---|---|---|---|---|---|---|---|"]
    for method in METHODS:
        t, l = model["throughput"].get(method), model["latency"].get(method)
        if t is None:
            rows.append(f"| {SHORT[method]} | infeasible | | | | | | |")
            continue
        tm = t["measured"]["throughput_rps"]
        lm = l["measured"]["latency_ms"] if l else float("nan")
        lp = l["predicted_latency_ms"] if l else float("nan")
        lat = f"{lp:.0f} | {lm:.0f} | {pct(err(lp, lm))}" if l else "- | - | -"
        rows.append(f"| {SHORT[method]} | {hops_text(t, names)} | {t['predicted_throughput_rps']:.2f} | {tm:.2f} "
                    f"| {pct(err(t['predicted_throughput_rps'], tm))} | {lat} |")
    return "\n".join(rows)


def efficiency(res: dict[str, Any], model: str) -> float:
    """Model FLOP rate / calibration's prediction on one full core (benchmarks/testbed_bench/efficiency.py)."""
    return float(res.get("full_core", {}).get("models", {}).get(model, {}).get("efficiency", 1.0))


def corrected(entry: dict[str, Any], objective: str, eff: float) -> float:
    """The prediction with every compute term divided by the model's efficiency (transfers kept):
    what the cost model would say if the calibration kernels ran at the model's FLOP rate."""
    if "chains" in entry:  # replicated: the chains' corrected rates, within the requester's cap
        total = sum(corrected(c, objective, eff) for c in entry["chains"])
        raw = sum(1.0 / c["bottleneck_s"] for c in entry["chains"])
        return min(total, entry["predicted_throughput_rps"] if raw > entry["predicted_throughput_rps"] * (1 + 1e-9) else total)
    compute = entry["predicted_compute_ms"]
    if objective == "latency":
        return entry["predicted_latency_ms"] + sum(compute) * (1 / eff - 1)
    stage = max(compute) / 1000
    transfer = entry["bottleneck_s"] if entry["bottleneck_s"] > stage * (1 + 1e-9) else 0.0
    return 1.0 / max(stage / eff, transfer)


def errors(results: list[dict[str, Any]], *, correct: bool = False) -> dict[str, list[float]]:
    """Prediction errors of every distinct plan; `correct`: after the model-efficiency correction."""
    out: dict[str, list[float]] = {"throughput": [], "latency": []}
    for res in results:
        for model in res["models"]:
            eff = efficiency(res, model["model"]) if correct else 1.0
            for objective, pkey, mkey in (("throughput", "predicted_throughput_rps", "throughput_rps"),
                                          ("latency", "predicted_latency_ms", "latency_ms")):
                seen = set()
                for entry in model[objective].values():
                    if entry and str(entry["spans"]) not in seen:
                        seen.add(str(entry["spans"]))
                        pred = corrected(entry, objective, eff) if correct else entry[pkey]
                        out[objective].append(err(pred, entry["measured"][mkey]))
    return {k: [x for x in v if math.isfinite(x)] for k, v in out.items()}


def efficiency_table(results: list[dict[str, Any]]) -> str:
    rows = ["| cluster | full core GFLOP/s (calibration) | " + " | ".join(m["model"] for m in results[0]["models"]) + " |",
            "|---|---|" + "---|" * len(results[0]["models"])]
    for res in results:
        core = res.get("full_core", {})
        cells = [f"{efficiency(res, m['model']):.2f} ({core.get('models', {}).get(m['model'], {}).get('measured_s', float('nan')) * 1000:.0f} ms)"
                 for m in res["models"]]
        rows.append(f"| {res['cluster']} | {core.get('gflops', float('nan')):.1f} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def targets(results: list[dict[str, Any]], cluster: str = "iot8", model: str = "resnet50") -> dict[str, Any] | None:
    """Planner results against the issue's baselines: the single-chain planner, the replicated
    planner, and the best of the two by measured throughput (`best`: which one)."""
    for res in results:
        if res["cluster"] != cluster:
            continue
        for m in res["models"]:
            if m["model"] == model:
                t = m["throughput"]
                get = lambda k, f="measured": (t[k]["measured"]["throughput_rps"] if f == "measured" else t[k]["predicted_throughput_rps"]) if t.get(k) else float("nan")  # noqa: E731
                mine = [k for k in ("planner", "replicated") if t.get(k)]
                best = max(mine, key=lambda k: get(k) if math.isfinite(get(k)) else -1.0)
                rows = {k: {"vs_single": get(k) / get("single-peer"), "vs_even": get(k) / get("even-split"),
                            "pred_vs_single": get(k, "p") / get("single-peer", "p"),
                            "pred_vs_even": get(k, "p") / get("even-split", "p"), "optimal": t[k]["optimal"],
                            "shape": hops_text(t[k], res["nodes"]), "measured": get(k), "predicted": get(k, "p"),
                            "requester_cpu_ms": t[k]["measured"].get("requester_cpu_ms_per_input"),
                            "overall": t[k]["measured"].get("overall_rps"), "frames": t[k]["measured"].get("frames")}
                        for k in mine}
                return {**rows[best], "best": best, "rows": rows}
    return None


def hop_sweep_table(res: dict[str, Any]) -> tuple[str, float]:
    rows = ["| hops | predicted ms | measured ms | measured - predicted |", "|---|---|---|---|"]
    xs, ys = [], []
    for r in res.get("hop_sweep", []):
        d = r["measured"]["latency_ms"] - r["predicted_latency_ms"]
        xs.append(r["hops"]); ys.append(d)
        rows.append(f"| {r['hops']} | {r['predicted_latency_ms']:.1f} | {r['measured']['latency_ms']:.1f} | {d:.1f} |")
    slope = statistics.linear_regression(xs, ys).slope if len(xs) >= 2 else float("nan")
    return "\n".join(rows), slope


def plot_throughput(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [res for res in results if res["models"]]
    cols = max((len(res["models"]) for res in rows), default=1)
    fig, axes = plt.subplots(max(1, len(rows)), cols, figsize=(3.4 * cols, 3.4 * max(1, len(rows))), squeeze=False)
    for ax, (res, model) in zip([ax for row in axes for ax in row], [(r, m) for r in rows for m in r["models"]]):
        meas = [(model["throughput"].get(k) or {}).get("measured", {}).get("throughput_rps", 0) for k in METHODS]
        pred = [(model["throughput"].get(k) or {}).get("predicted_throughput_rps", 0) for k in METHODS]
        ax.bar(range(len(METHODS)), meas, color=["#2a7", "#999", "#69c", "#c96", "#a6c", "#175"])
        ax.scatter(range(len(METHODS)), pred, marker="_", s=300, color="k", label="predicted")
        ax.set_xticks(range(len(METHODS)), [SHORT[k].split(" (")[0] for k in METHODS], rotation=60, fontsize=7)
        ax.set_title(f"{res['cluster']}: {model['model']}", fontsize=9)
        ax.set_ylabel("inputs/s (streamed)", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_prediction(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, (objective, pkey, mkey, unit) in zip(axes, (("throughput", "predicted_throughput_rps", "throughput_rps", "inputs/s"),
                                                        ("latency", "predicted_latency_ms", "latency_ms", "ms"))):
        hi = 0.0
        for res, marker in zip(results, "os^v"):
            for model, color in zip(res["models"], ("#c33", "#36c", "#3a3", "#a6c")):
                pts = [(e[pkey], e["measured"][mkey]) for e in model[objective].values() if e]
                if pts:
                    ax.scatter(*zip(*pts), marker=marker, color=color, label=f"{res['cluster']} {model['model']}", s=22)
                    hi = max(hi, *(max(p) for p in pts))
        ax.plot([0, hi * 1.1], [0, hi * 1.1], "k-", lw=0.8)
        ax.fill_between([0, hi * 1.1], [0, hi * 1.1 / 1.15], [0, hi * 1.1 / 0.85], color="k", alpha=0.08, label="±15%")
        ax.set_xlabel(f"predicted {objective} ({unit})"); ax.set_ylabel(f"measured ({unit})")
        ax.set_title(f"cost model: {objective}", fontsize=10)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
