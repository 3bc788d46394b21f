"""The planner: choose which peer computes which contiguous span of a model's layer chain.

`plan(profile, snapshot, objective=...)` is a pure, deterministic function: same inputs, same
Plan (peers are considered in id order, ties go to the earliest start / lowest id). It prices
plans with core/costs.py and searches with core/chain_dp.py:

- latency: minimise one request's end-to-end time (exact DSSR over the latency DP);
- throughput: minimise the pipeline bottleneck (core/bottleneck.py: on few peers the exact branch
  and bound of core/few_peers.py; otherwise threshold decisions - capacity counting, the chain
  search of core/threshold.py and, for stubborn gaps, the flow LP of core/flow_lp.py - with a
  proven lower bound), then among the chains found within the bottleneck pick the one with the
  lowest latency (exactly, via the capped latency DP, on small instances).

Infeasible inputs raise InfeasiblePlanError with the cause in words.
"""

from __future__ import annotations

import numpy as np

from .baselines import baseline_plans, plan_spans
from .bottleneck import search_bottleneck
from .chain_dp import dssr, peer_bounds
from .costs import CostModel, Span, build_costs, restrict
from .polish import polish
from .plan import OBJECTIVES, Plan, PlannerOptions
from .profile import ModelProfile
from .snapshot import SwarmSnapshot
from ..errors import InfeasiblePlanError, PlanError

def fmt_bytes(n: float, like: float | None = None) -> str:
    """Human-readable bytes; with `like`, in the unit `like` would get (so sizes compare at a glance)."""
    ref = n if like is None else like
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if ref >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def check_feasible(cm: CostModel, snapshot: SwarmSnapshot, options: PlannerOptions) -> None:
    """Raise InfeasiblePlanError for causes that are visible without searching."""
    if not snapshot.peers:
        raise InfeasiblePlanError("no peers in the snapshot")
    if cm.num_peers == 0:
        raise InfeasiblePlanError(
            f"all {len(snapshot.peers)} peers excluded by reputation "
            f"(below the threshold {options.exclusion_threshold})")
    largest = int(cm.mem.max())
    for layer in cm.profile.layers:
        if layer.param_bytes > largest:
            raise InfeasiblePlanError(
                f"layer {layer.index} needs {fmt_bytes(layer.param_bytes)} but the largest peer offers "
                f"{fmt_bytes(largest, like=layer.param_bytes)}")
    total, offered = cm.profile.total_param_bytes, int(cm.mem.sum())
    if total > offered:
        raise InfeasiblePlanError(
            f"model needs {fmt_bytes(total)} of memory but all {cm.num_peers} usable peers together "
            f"offer {fmt_bytes(offered, like=total)}")


def _no_chain(cm: CostModel) -> InfeasiblePlanError:
    return InfeasiblePlanError(
        f"model needs more peers than available given memory: no chain of distinct peers among the "
        f"{cm.num_peers} usable ones covers all {cm.num_layers} layers (each peer serves one contiguous span)")


def _plan_latency(cm: CostModel, options: PlannerOptions) -> Plan:
    kw = dict(budget=options.search_budget, max_critical=options.max_critical)
    search = cm.search_model()  # every candidate is priced by cm
    slack = cm.max_lone_saving_s  # what quotas can take off; frames only add
    res = dssr(search, "sum", **kw)
    if res.spans is None and res.optimal:
        raise _no_chain(cm)
    if res.optimal and cm.searched_exactly:
        return cm.evaluate(res.spans, "latency", lower_bound=res.lower_bound, optimal=True)
    # budget hit, or frame / quota terms the search did not see: the search's path competes with
    # the baselines (the single best peer pays one hop's frames); on a budget hit, peers that
    # cannot beat the best of them are dropped and the exact search runs again on the rest
    found = [cm.evaluate(res.spans, "latency")] if res.spans is not None else []
    found += [p for p in baseline_plans(cm, "latency").values() if p is not None]
    if not found:
        raise PlanError("search budget exhausted before a plan was found; raise PlannerOptions.search_budget")
    best = cm.evaluate(plan_spans(cm, min(found, key=lambda p: p.predicted_latency_s)), "latency")
    lower = res.lower_bound - slack
    keep = [int(y) for y in np.flatnonzero(peer_bounds(search, "sum") - slack <= best.predicted_latency_s * (1 + 1e-9))]
    if not res.optimal and len(keep) < cm.num_peers:
        sub = dssr(restrict(search, keep), "sum", **kw)
        lower = max(lower, min(sub.lower_bound - slack, best.predicted_latency_s))
        if sub.spans is not None:
            cand = cm.evaluate(tuple((keep[y], a, b) for y, a, b in sub.spans), "latency")
            if cand.predicted_latency_s <= best.predicted_latency_s:
                best = cand
        if sub.optimal and cm.searched_exactly:
            lower = best.predicted_latency_s
    optimal = best.predicted_latency_s <= lower * (1 + 1e-9)
    return cm.evaluate(plan_spans(cm, best), "latency", lower_bound=min(lower, best.predicted_latency_s), optimal=optimal)


def _plan_throughput(cm: CostModel, options: PlannerOptions) -> Plan:
    def incumbents() -> list[tuple[Span, ...]]:
        return [plan_spans(cm, p) for p in baseline_plans(cm, "throughput").values() if p is not None]

    res = search_bottleneck(cm.search_model(), options, incumbents)  # its bound holds with frames too; quotas leave it alone
    if res.spans is None:
        if res.optimal:
            raise _no_chain(cm)
        raise PlanError("search budget exhausted before an elementary plan was found; raise search_budget")
    if not cm.has_frame_costs:  # the quota term is latency's only
        return cm.evaluate(res.spans, "throughput", lower_bound=res.lower_bound, optimal=res.optimal)
    # frame costs favour fewer hops, which polish (it moves cuts and peers) cannot reach: the
    # baselines (the best single peer among them) compete too; ties go to the lower latency
    candidates = [res.spans, polish(cm, res.spans), *incumbents()]
    spans = min(candidates, key=lambda c: (cm.bottleneck_s(c), cm.latency_s(c)))
    return cm.evaluate(spans, "throughput", lower_bound=res.lower_bound,
                       optimal=cm.bottleneck_s(spans) <= res.lower_bound * (1 + 1e-9))


def plan_with_costs(cm: CostModel, snapshot: SwarmSnapshot, objective: str, options: PlannerOptions) -> Plan:
    """`plan` for callers that already compiled the cost model (baselines, CLI, benchmarks)."""
    if objective not in OBJECTIVES:
        raise PlanError(f"unknown objective {objective!r}; expected one of {', '.join(OBJECTIVES)}")
    check_feasible(cm, snapshot, options)
    return _plan_latency(cm, options) if objective == "latency" else _plan_throughput(cm, options)


def plan(profile: ModelProfile, snapshot: SwarmSnapshot, *, objective: str = "latency",
         options: PlannerOptions = PlannerOptions()) -> Plan:
    """The best plan for `objective` ("latency" or "throughput") under the cost model.

    Plan.optimal is True when the result is proven optimal (always, unless the exact search
    would exceed options.search_budget); Plan.lower_bound is a proven bound either way.
    """
    if objective not in OBJECTIVES:
        raise PlanError(f"unknown objective {objective!r}; expected one of {', '.join(OBJECTIVES)}")
    return plan_with_costs(build_costs(profile, snapshot, options), snapshot, objective, options)
