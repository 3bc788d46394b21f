"""Throughput objective: minimise the pipeline bottleneck over chains of distinct peers.

Minimising the period of an interval mapping on heterogeneous processors is NP-hard (Benoit &
Robert, "Mapping pipeline skeletons onto heterogeneous platforms", JPDC 2008), so this module
proves what it can and says what it proved. Everything rests on deciding a threshold T
(core/threshold.py): "is there a chain of distinct peers with every stage and transfer
bandwidth part <= T?", which at fixed T has no coupling between neighbours.

1. Lower side: bisect T (log scale) with the cheap proofs (relaxed reachability, capacity
   counting); both are monotone in T, so the result `lb` is a proven lower bound.
2. Upper side: bisect between `lb` and the best known chain (baselines) with the depth-first
   chain search under a node budget; every chain found lowers `hi` to its exact bottleneck, and a
   search that completes without a chain raises `lb`.
3. The optimum is one of finitely many term values. When few of them lie in (lb, hi) they are
   bisected exactly; if all below `hi` are proven infeasible the chain is optimal.
4. Among chains within the final bottleneck, the latency DP capped at it (DSSR, budgeted) picks
   the fastest one; an unproven chain is polished by local search (core/polish.py) first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .chain_dp import dssr, pass_work
from .costs import CostModel, Span, restrict
from .plan import PlannerOptions
from .polish import polish
from .threshold import CAP_SLACK, ChainSearch, at, proven_infeasible

_TOL = 1.001  # real-valued bisections stop within 0.1%
_FEW = 48  # candidate values in (lb, hi) bisected exactly when at most this many
_NODES = 400  # chain-search nodes per probe while bisecting reals
_EXACT_NODES = 20_000  # per probe on the final exact candidates
_TIEBREAK_WORK = 2_000_000  # DP work the latency tie-break may spend at least


@dataclass(frozen=True)
class BottleneckResult:
    spans: tuple[Span, ...] | None
    lower_bound: float
    optimal: bool


def bottleneck_of(cm: CostModel, spans: tuple[Span, ...]) -> float:
    return cm.evaluate(spans, "throughput").bottleneck_s


def trivial_lower_bound(cm: CostModel) -> float:
    """Every layer runs somewhere (its fastest fitting peer) and the requester's links are fixed."""
    L = cm.num_layers
    layer = np.diff(cm.stage, axis=1)  # (P, L)
    fits = (np.diff(cm.params)[None, :] <= cm.mem[:, None])
    per_layer = np.where(fits, layer, np.inf).min(axis=0)
    link_in = cm.bits[0] * max(cm.src_inv_up, float(cm.inv_down.min()))
    link_out = cm.bits[L] * max(cm.req_inv_down, float(cm.inv_up.min()))
    return float(max(per_layer.max(), link_in, link_out, 1e-12))


def candidates_between(cm: CostModel, lo: float, hi: float, limit: int) -> np.ndarray | None:
    """Sorted distinct term values v with lo < v < hi (None: more than `limit` of them).

    Terms: every span's stage on every peer and every transfer's bandwidth part; the optimal
    bottleneck is one of them.
    """
    vals: list[np.ndarray] = []
    count = 0
    for y in range(cm.num_peers):
        st = cm.stage[y]
        first = np.searchsorted(st, st + lo, side="right")
        last = np.searchsorted(st, st + hi, side="left")
        n = np.maximum(last - first, 0)
        count += int(n.sum())
        if count > limit:
            return None
        for a in np.flatnonzero(n):
            vals.append(st[first[a]:last[a]] - st[a])
    links = np.concatenate([np.outer(cm.bits, cm.inv_up).ravel(), np.outer(cm.bits, cm.inv_down).ravel(),
                            cm.bits[[0, -1]] * np.array([cm.src_inv_up, cm.req_inv_down])])
    vals.append(links[(links > lo) & (links < hi)])
    out = np.unique(np.concatenate(vals)) if vals else np.zeros(0)
    out = out[(out > lo) & (out < hi)]
    return out if len(out) <= limit else None


class _Search:
    """Bisection state: the best chain, `hi` its bottleneck, `lb` the largest T proven infeasible."""

    def __init__(self, cm: CostModel) -> None:
        self.cm = cm
        self.best: tuple[Span, ...] | None = None
        self.hi = math.inf
        self.lb = 0.0

    def offer(self, spans: tuple[Span, ...] | None) -> None:
        if spans is not None:
            value = bottleneck_of(self.cm, spans)
            if value < self.hi:
                self.best, self.hi = spans, value

    def probe(self, t: float, nodes: int) -> bool | None:
        """True: a chain within t (recorded); False: proven none; None: undecided."""
        th = at(self.cm, t)
        if proven_infeasible(self.cm, th):
            self.lb = max(self.lb, t)
            return False
        spans, proven = ChainSearch(self.cm, th).run(nodes)
        if spans is not None:
            self.offer(spans)
            return True
        if proven:
            self.lb = max(self.lb, t)
            return False
        return None

    def prove_lower(self, lo: float, hi: float) -> None:
        """Largest T in [lo, hi) proven infeasible by the cheap proofs, to within _TOL."""
        if not proven_infeasible(self.cm, at(self.cm, lo)):
            return
        self.lb = max(self.lb, lo)
        while hi > lo * _TOL:
            mid = math.sqrt(lo * hi)
            if proven_infeasible(self.cm, at(self.cm, mid)):
                lo = self.lb = max(self.lb, mid)
            else:
                hi = mid

    def lower_hi(self) -> None:
        """Bisect (lb, hi) with the chain search; undecided probes count as 'no chain'."""
        lo = self.lb
        while self.hi > lo * _TOL:
            mid = math.sqrt(lo * self.hi) if lo > 0 else self.hi / 2
            if not self.probe(mid, _NODES):
                lo = mid

    def exact(self, cands: np.ndarray) -> bool:
        """Bisect the candidate values below hi; True when every one of them is proven infeasible."""
        lo, hi = -1, len(cands)  # cands[lo] proven infeasible (or none), cands[hi:] >= self.hi
        proven = True
        while hi - lo > 1:
            mid = (lo + hi) // 2
            got = self.probe(float(cands[mid]), _EXACT_NODES)
            if got:
                hi = min(hi, int(np.searchsorted(cands, self.hi * (1 - CAP_SLACK))))
                hi = min(hi, mid)
            else:
                proven &= got is False
                lo = mid
        return proven


def search_bottleneck(cm: CostModel, options: PlannerOptions,
                      incumbents: Callable[[], Sequence[tuple[Span, ...]]] = tuple) -> BottleneckResult:
    """Best chain for the throughput objective, with a proven lower bound on its bottleneck.

    `incumbents()` gives known feasible chains (e.g. baselines): the result is never worse.
    """
    s = _Search(cm)
    lb0 = trivial_lower_bound(cm)
    s.probe(lb0, _NODES)
    if s.best is None:
        for spans in incumbents():
            s.offer(spans)
    if s.best is None:  # any chain at all? (memory and distinct peers only)
        th = at(cm, math.inf)
        if proven_infeasible(cm, th):
            return BottleneckResult(None, math.inf, True)
        spans, proven = ChainSearch(cm, th).run(_EXACT_NODES)
        if spans is None:
            return BottleneckResult(None, math.inf, proven)
        s.offer(spans)
    if s.hi <= lb0 * (1 + CAP_SLACK):
        return BottleneckResult(_fastest_within(cm, s.best, s.hi, options), s.hi, True)
    s.prove_lower(lb0, s.hi)
    s.lower_hi()
    optimal = s.hi <= s.lb * (1 + CAP_SLACK) or s.hi <= lb0 * (1 + CAP_SLACK)
    if not optimal:
        cands = candidates_between(cm, s.lb * (1 + CAP_SLACK), s.hi * (1 - CAP_SLACK), _FEW)
        if cands is not None:
            optimal = s.exact(cands)
    if not optimal:
        s.offer(polish(cm, s.best))
    best = _fastest_within(cm, s.best, s.hi, options)
    return BottleneckResult(best, s.hi if optimal else min(max(s.lb, lb0), s.hi), optimal)


def _fastest_within(cm: CostModel, spans: tuple[Span, ...], hi: float, options: PlannerOptions) -> tuple[Span, ...]:
    """The lowest-latency chain with bottleneck <= hi: the capped latency DP (exact when DSSR
    finishes within budget), restricted to peers that have a span within hi."""
    keep = [int(y) for y in np.flatnonzero(at(cm, hi).alive)]
    if not keep:
        return spans
    sub = restrict(cm, keep)
    budget = min(options.search_budget, max(8 * pass_work(sub, 0), _TIEBREAK_WORK))
    res = dssr(sub, "sum", cap=hi * (1 + CAP_SLACK), budget=budget, max_critical=options.max_critical)
    if res.spans is None:
        return spans
    cand = tuple((keep[y], a, b) for y, a, b in res.spans)
    mine, theirs = cm.evaluate(spans, "throughput"), cm.evaluate(cand, "throughput")
    if theirs.bottleneck_s <= hi * (1 + CAP_SLACK) and theirs.predicted_latency_s < mine.predicted_latency_s:
        return cand
    return spans
