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

import math
from typing import Callable

import numpy as np

from .costs import REQUESTER, CostModel, Span
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
    # np.rint rounds half to even, as round() on numpy floats does; one call instead of k+1
    return np.rint(np.concatenate([[0], np.cumsum(fractions)]) * L).astype(np.int64).tolist()


def _chain(peers: list[int], cuts: list[int]) -> list[Span]:
    return [(y, a, b) for y, a, b in zip(peers, cuts, cuts[1:]) if b > a]


@_baseline("single-peer")
def single_peer(cm: CostModel, objective: str) -> Plan | None:
    plans = [_price(cm, [(y, 0, cm.num_layers)], objective, "single-peer") for y in range(cm.num_peers)]
    feasible = [p for p in plans if p is not None]
    return min(feasible, key=lambda p: p.value) if feasible else None


@_baseline("even-split")
def even_split(cm: CostModel, objective: str) -> Plan | None:
    """The best k, chosen on `_value` (the same numbers as CostModel.evaluate, without building
    a Plan per k: that made pricing this baseline a large part of planning on 100 peers)."""
    fastest, best, best_value = _by_speed(cm), None, math.inf
    for k in range(1, min(cm.num_peers, cm.num_layers) + 1):
        spans = _even_spans(cm, k, fastest)
        if not spans or not _all_fit(cm, spans):
            continue
        value = _value(cm, spans, objective)
        if value < best_value:
            best, best_value = spans, value
    return _price(cm, best, objective, "even-split") if best is not None else None


def even_split_k(cm: CostModel, objective: str, k: int, fastest: list[int] | None = None) -> Plan | None:
    """The k fastest peers, equal layer counts each (DEFER's split)."""
    return _price(cm, _even_spans(cm, k, fastest), objective, "even-split")


def _even_spans(cm: CostModel, k: int, fastest: list[int] | None = None) -> list[Span]:
    peers = (fastest or _by_speed(cm))[:k]
    return _chain(peers, _cuts(np.full(k, 1.0 / k), cm.num_layers))


def _all_fit(cm: CostModel, spans: list[Span]) -> bool:
    """Every span fits its peer's memory (cm.fits over the chain, in one numpy pass)."""
    y, a, b = (np.array(v, dtype=np.int64) for v in zip(*spans))
    return bool(np.all(cm.params[b] - cm.params[a] <= cm.mem[y]))


def _value(cm: CostModel, spans: list[Span], objective: str) -> float:
    """`cm.evaluate(spans, objective).value`, computed with the same operations in the same order
    (so the choice among candidates is the one evaluate would make), minus the Plan."""
    y, a, b = (np.array(v, dtype=np.int64) for v in zip(*spans))
    stage = (cm.compute[y, b] - cm.compute[y, a]) + (cm.fetch[y, b] - cm.fetch[y, a])
    src_up = np.concatenate([[cm.req_inv_up], cm.inv_up[y[:-1]]])
    bw_in = cm.bits[a] * np.maximum(src_up, cm.inv_down[y])
    last = int(y[-1])
    if objective != "latency":
        return max(float(stage.max()), float(bw_in.max()), cm.bandwidth_s(last, REQUESTER, cm.num_layers))
    src_lat = np.concatenate([[cm.req_lat], cm.lat[y[:-1]]])
    transfer_in = ((src_lat + cm.lat[y]) + bw_in).tolist()
    return sum(t + s for t, s in zip(transfer_in, stage.tolist())) + cm.transfer_s(last, REQUESTER, cm.num_layers)


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
