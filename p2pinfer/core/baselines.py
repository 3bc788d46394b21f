"""Baseline partitioners, priced with the same cost model, to show what the planner buys.

- single-peer: the whole model on the best single peer that can hold it.
- even-split (DEFER-style): the k fastest peers, equal numbers of layers each, in speed order;
  the best k is kept.
- memory-proportional (exo-style): every peer, largest memory first, gets a share of layers
  proportional to its memory.
- greedy-fastest: fastest peer first, each takes as many layers as fit in its memory.

Each returns a Plan (method = the baseline's name) or None when its rule finds no feasible
assignment. They never raise for infeasibility: a baseline failing is a data point.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .costs import CostModel, Span
from .plan import Plan

BASELINES: dict[str, Callable[[CostModel, str], Plan | None]] = {}


def _baseline(name: str) -> Callable[[Callable[[CostModel, str], Plan | None]], Callable[[CostModel, str], Plan | None]]:
    def register(fn: Callable[[CostModel, str], Plan | None]) -> Callable[[CostModel, str], Plan | None]:
        BASELINES[name] = fn
        return fn
    return register


def _price(cm: CostModel, spans: list[Span], objective: str, name: str) -> Plan | None:
    if not spans or any(not cm.fits(y, a, b) for y, a, b in spans):
        return None
    return cm.evaluate(spans, objective, method=name)


def _by_speed(cm: CostModel) -> list[int]:
    """Peers fastest first (expected time for the whole model), ties by id order."""
    return sorted(range(cm.num_peers), key=lambda y: (cm.compute[y, -1], y))


def _cuts(fractions: np.ndarray, L: int) -> list[int]:
    return [int(round(x)) for x in np.concatenate([[0], np.cumsum(fractions)]) * L]


def _chain(peers: list[int], cuts: list[int]) -> list[Span]:
    return [(y, a, b) for y, a, b in zip(peers, cuts, cuts[1:]) if b > a]


@_baseline("single-peer")
def single_peer(cm: CostModel, objective: str) -> Plan | None:
    plans = [_price(cm, [(y, 0, cm.num_layers)], objective, "single-peer") for y in range(cm.num_peers)]
    feasible = [p for p in plans if p is not None]
    return min(feasible, key=lambda p: p.value) if feasible else None


@_baseline("even-split")
def even_split(cm: CostModel, objective: str) -> Plan | None:
    fastest, best = _by_speed(cm), None
    for k in range(1, min(cm.num_peers, cm.num_layers) + 1):
        plan = even_split_k(cm, objective, k, fastest)
        if plan is not None and (best is None or plan.value < best.value):
            best = plan
    return best


def even_split_k(cm: CostModel, objective: str, k: int, fastest: list[int] | None = None) -> Plan | None:
    """The k fastest peers, equal layer counts each (DEFER's split)."""
    peers = (fastest or _by_speed(cm))[:k]
    return _price(cm, _chain(peers, _cuts(np.full(k, 1.0 / k), cm.num_layers)), objective, "even-split")


@_baseline("memory-proportional")
def memory_proportional(cm: CostModel, objective: str) -> Plan | None:
    peers = sorted(range(cm.num_peers), key=lambda y: (-int(cm.mem[y]), y))
    mem = cm.mem[peers].astype(float)
    if mem.sum() <= 0:
        return None
    return _price(cm, _chain(peers, _cuts(mem / mem.sum(), cm.num_layers)), objective, "memory-proportional")


@_baseline("greedy-fastest")
def greedy_fastest(cm: CostModel, objective: str) -> Plan | None:
    spans, a = [], 0
    for y in _by_speed(cm):
        if a == cm.num_layers:
            break
        b = int(np.searchsorted(cm.params, cm.params[a] + cm.mem[y], side="right")) - 1
        if b > a:
            spans.append((y, a, min(b, cm.num_layers)))
            a = spans[-1][2]
    return _price(cm, spans, objective, "greedy-fastest") if a == cm.num_layers else None


def baseline_plans(cm: CostModel, objective: str) -> dict[str, Plan | None]:
    """Every baseline's plan (None where its rule is infeasible), keyed by name."""
    return {name: fn(cm, objective) for name, fn in BASELINES.items()}


def plan_spans(cm: CostModel, plan: Plan) -> tuple[Span, ...]:
    """A plan's hops as (peer index, start, stop) in this cost model."""
    index = {p.peer_id: i for i, p in enumerate(cm.peers)}
    return tuple((index[h.peer_id], h.start, h.stop) for h in plan.hops)


def best_baseline(cm: CostModel, objective: str) -> Plan | None:
    plans = [p for p in baseline_plans(cm, objective).values() if p is not None]
    return min(plans, key=lambda p: p.value) if plans else None
