"""`p2pinfer plan`: plan a partition of a model over peers, offline (--peers-file) or live.

Thin: resolve the model's profile and a SwarmSnapshot, call `plan_report` (pure), render it as
JSON, a rich table, and optionally a timeline plot. `plan_command(profile, snapshot, objective)`
is the entry point for callers that already hold a snapshot (e.g. one built from the live
swarm's verified records for --bootstrap).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pinfer.core.baselines import baseline_plans
from p2pinfer.core.costs import build_costs
from p2pinfer.core.plan import OBJECTIVES, Plan, PlannerOptions
from p2pinfer.core.plan_inputs import profile_from_json, snapshot_from_json
from p2pinfer.core.planner import plan_with_costs
from p2pinfer.core.profile import ModelProfile
from p2pinfer.core.snapshot import SwarmSnapshot
from p2pinfer.errors import ConfigError


@dataclass(frozen=True)
class PlanReport:
    """The planner's plan plus every baseline's, priced by the same cost model."""

    plan: Plan
    baselines: dict[str, Plan | None]
    excluded: tuple[str, ...]

    @property
    def best_baseline(self) -> tuple[str, Plan] | None:
        found = [(n, p) for n, p in self.baselines.items() if p is not None]
        return min(found, key=lambda np_: np_[1].value) if found else None

    def to_json_dict(self) -> dict[str, Any]:
        d = self.plan.to_json_dict()
        d["excluded_peers"] = list(self.excluded)
        d["baselines"] = {n: None if p is None else {k: p.to_json_dict()[k] for k in (
            "predicted_latency_s", "bottleneck_s", "throughput_rps")} | {"hops": len(p.hops)}
            for n, p in self.baselines.items()}
        best = self.best_baseline
        d["best_baseline"] = best[0] if best else None
        return d


def plan_report(profile: ModelProfile, snapshot: SwarmSnapshot, objective: str = "latency",
                options: PlannerOptions = PlannerOptions()) -> PlanReport:
    cm = build_costs(profile, snapshot, options)
    best = plan_with_costs(cm, snapshot, objective, options)
    return PlanReport(best, baseline_plans(cm, objective), cm.excluded)


def plan_command(profile: ModelProfile, snapshot: SwarmSnapshot, objective: str = "latency",
                 options: PlannerOptions = PlannerOptions()) -> dict[str, Any]:
    """The `--json` document for a plan over `snapshot` (live or from a peers file)."""
    return plan_report(profile, snapshot, objective, options).to_json_dict()


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plan", help="plan a partition of a model over peers",
        description="Choose which peer computes which contiguous span of MODEL's layers, minimising one "
                    "request's latency or a stream's bottleneck, and compare with simple baselines.")
    p.add_argument("model", nargs="?", help="model name or id (zoo or store); optional with --profile-file")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--peers-file", type=Path, metavar="FILE", help="JSON snapshot of requester and peers")
    src.add_argument("--bootstrap", action="append", metavar="MULTIADDR", help="plan over the live swarm")
    p.add_argument("--profile-file", type=Path, metavar="FILE", help="JSON ModelProfile instead of resolving MODEL")
    p.add_argument("--objective", choices=OBJECTIVES, default="latency")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="draw the plan and the best baseline as timelines")
    p.add_argument("--data-dir", type=Path, metavar="DIR", help="model store / node data directory")
    p.add_argument("--amortize", type=int, default=100, metavar="N",
                   help="spread a peer's one-time weight download over N requests (0: assume weights are held)")
    p.add_argument("--exclusion-threshold", type=float, default=0.2, metavar="R",
                   help="never use peers with reputation below R (default 0.2)")
    p.add_argument("--chains", type=int, metavar="N",
                   help="objective throughput: also plan up to N disjoint chains served at once (0: as many as "
                        "pay off), shown under 'replicated' (docs/cost-model.md, replicated plans)")
    p.set_defaults(handler=_handle)


def _options(args: argparse.Namespace) -> PlannerOptions:
    if args.amortize < 0:
        raise ConfigError(f"--amortize must be >= 0, got {args.amortize}")
    if not 0 <= args.exclusion_threshold <= 1:
        raise ConfigError(f"--exclusion-threshold must be in [0, 1], got {args.exclusion_threshold}")
    if args.chains is not None and args.chains < 0:
        raise ConfigError(f"--chains must be >= 0, got {args.chains}")
    if args.chains is not None and args.objective != "throughput":
        raise ConfigError("--chains needs --objective throughput (several chains serve a stream, not one request)")
    return PlannerOptions(exclusion_threshold=args.exclusion_threshold, amortize_requests=args.amortize or None)


def replicated_report(profile: ModelProfile, snapshot: SwarmSnapshot, chains: int, options: PlannerOptions) -> Any:
    """The replicated plan for `--chains N` (0: no cap), priced by the same cost model."""
    from p2pinfer.core.replicas import ReplicaOptions, plan_replicated

    return plan_replicated(profile, snapshot, options=options, replicas=ReplicaOptions(max_chains=chains or None))


def read_json_file(path: Path, what: str) -> Any:
    """Parse a JSON file; ConfigError (one line) when it is missing or not JSON."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what} {str(path)!r} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None


def resolve_profile(model: str, data_dir: Path | None) -> ModelProfile:
    """MODEL -> its cost profile via the models package (zoo or store; profiles are cached)."""
    from p2pinfer.models import profiling, store, zoo

    st = store.store_for(data_dir)
    return profiling.profile(zoo.get_manifest(model, store=st), st)


def _profile(args: argparse.Namespace) -> ModelProfile:
    if args.profile_file is not None:
        return profile_from_json(read_json_file(args.profile_file, "profile file"), f"profile file {str(args.profile_file)!r}")
    if not args.model:
        raise ConfigError("plan: give MODEL (or --profile-file FILE)")
    return resolve_profile(args.model, args.data_dir)


def _snapshot(args: argparse.Namespace) -> SwarmSnapshot:
    if args.peers_file is not None:
        return snapshot_from_json(read_json_file(args.peers_file, "peers file"), f"peers file {str(args.peers_file)!r}")
    if args.bootstrap:
        return live_snapshot(args.bootstrap, args.data_dir)
    raise ConfigError("plan: give --peers-file FILE (or --bootstrap MULTIADDR)")


def live_snapshot(bootstrap: list[str], data_dir: Path | None) -> SwarmSnapshot:
    """A snapshot from the live swarm's verified capability records (the requester's discovery)."""
    from p2pinfer.client import live_snapshot as discover_snapshot

    try:
        return discover_snapshot(bootstrap)
    except ConfigError as exc:
        raise ConfigError(f"plan --bootstrap: {exc}") from None


def _handle(args: argparse.Namespace) -> int:
    options = _options(args)
    profile = _profile(args)
    snapshot = _snapshot(args)
    report = plan_report(profile, snapshot, args.objective, options)
    replicated = None if args.chains is None else replicated_report(profile, snapshot, args.chains, options)
    if args.plot is not None:
        from p2pinfer.plot_plan import plot_report

        plot_report(report.plan, report.best_baseline, args.plot, title=profile.name)
    if args.json:
        doc = report.to_json_dict()
        if replicated is not None:
            doc["replicated"] = replicated.to_json_dict()
        json.dump(doc, sys.stdout)
        sys.stdout.write("\n")
    else:
        render(report, profile)
        if replicated is not None:
            render_replicated(replicated)
    return 0


def render_replicated(replicated: Any) -> None:
    """One row per chain of a replicated plan, then its total and proven bound."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"replicated: {len(replicated.chains)} disjoint chain(s) served at once")
    for col in ("chain", "hops", "predicted inputs/s"):
        table.add_column(col, justify="left" if col == "hops" else "right")
    for i, (chain, rate) in enumerate(zip(replicated.chains, replicated.rates_rps), 1):
        hops = " -> ".join(f"{h.peer_id}[{h.start}:{h.stop}]" for h in chain.hops)
        table.add_row(str(i), hops, f"{rate:.2f}")
    console = Console()
    console.print(table)
    proof = "proven optimal" if replicated.optimal else f"within {100 * replicated.gap:.1f}% of a proven upper bound"
    console.print(f"total {replicated.throughput_rps:.2f} inputs/s (bound {replicated.upper_bound_rps:.2f}, "
                  f"limited by {replicated.limit}); {proof}")


def render(report: PlanReport, profile: ModelProfile) -> None:
    """Readable output: hops table, totals, and the baselines next to the plan."""
    from rich.console import Console
    from rich.table import Table

    plan = report.plan
    console = Console()
    table = Table(title=f"{profile.name}: {len(plan.hops)} hop(s), objective {plan.objective}")
    for col in ("hop", "peer", "layers", "transfer in ms", "compute ms", "frames ms", "weight fetch ms"):
        table.add_column(col, justify="left" if col in ("peer", "layers") else "right")
    for i, h in enumerate(plan.hops, 1):
        table.add_row(str(i), h.peer_id, f"[{h.start}, {h.stop})", f"{1e3 * h.transfer_in_s:.2f}",
                      f"{1e3 * h.compute_s:.2f}", f"{1e3 * h.frame_s:.2f}", f"{1e3 * h.weight_fetch_s:.2f}")
    console.print(table)
    proof = "proven optimal" if plan.optimal else f"within {100 * plan.gap:.1f}% of a proven lower bound"
    console.print(f"latency {1e3 * plan.predicted_latency_s:.2f} ms (result back {1e3 * plan.transfer_out_s:.2f} ms), "
                  f"bottleneck {1e3 * plan.bottleneck_s:.2f} ms = {plan.throughput_rps:.2f} req/s; {proof}")
    if report.excluded:
        console.print(f"excluded by reputation: {', '.join(report.excluded)}")
    base = Table(title="baselines (same cost model)")
    ratio = "latency / plan's" if plan.objective == "latency" else "bottleneck / plan's"
    for col in ("baseline", "hops", "latency ms", "bottleneck ms", "req/s", ratio):
        base.add_column(col, justify="left" if col == "baseline" else "right")
    for name, p in report.baselines.items():
        if p is None:
            base.add_row(name, "-", "infeasible", "", "", "")
        else:
            base.add_row(name, str(len(p.hops)), f"{1e3 * p.predicted_latency_s:.2f}", f"{1e3 * p.bottleneck_s:.2f}",
                         f"{p.throughput_rps:.2f}", f"{p.value / plan.value:.2f}x")
    console.print(base)
    best = report.best_baseline
    if best is not None:
        what = "latency" if plan.objective == "latency" else "bottleneck"
        console.print(f"best baseline: {best[0]}, {what} {1e3 * best[1].value:.2f} ms "
                      f"({best[1].value / plan.value:.2f}x the plan's)")
