"""Throughput objective: minimise the pipeline bottleneck over chains of distinct peers.

Minimising the period of an interval mapping on heterogeneous processors is NP-hard (Benoit &
Robert, "Mapping pipeline skeletons onto heterogeneous platforms", JPDC 2008), so this module
proves what it can and says what it proved:

1. The min-max DP with peers reusable gives a proven lower bound T0 in one pass.
2. A *probe* at T asks for the fastest (latency DP) chain whose every stage and transfer
   bandwidth part is <= T, made elementary by DSSR (core/chain_dp.py). It either returns a chain
   (bottleneck <= T), proves none exists (relaxation infeasible), or is inconclusive (budget).
3. Probe T0 first: a chain there is optimal. Otherwise grow T geometrically until a probe finds a
   chain, then bisect. The optimum is one of finitely many term values (a stage or a transfer's
   bandwidth part); when there are few enough of them the bisection runs over those values and a
   proven-infeasible neighbour makes the result exactly optimal. The largest T proven infeasible
   is the lower bound reported.

When a probe runs out of budget, a "thrifty" chain (every hop charged what its peer could carry
within T, so weak peers are spent first) is tried instead; an unproven final chain is polished by
local search (core/polish.py). A proven-optimal chain is also the lowest-latency one among those
within its bottleneck (the probe minimises latency under the cap).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from .chain_dp import SearchResult, window_starts, dssr, pass_work, peer_bounds, solve
from .costs import CostModel, Span, restrict
from .plan import PlannerOptions
from .polish import polish

CAP_SLACK = 1e-9  # relative slack when capping at a bottleneck (float round-off)
_MAX_CANDIDATES = 2_000_000  # enumerate term values up to this many (L^2 P / 2 stage terms)
_MAX_PROBES = 30
_TOTAL_BUDGETS = 6  # all probes together may spend this many search budgets
_STOP_RATIO = 1.01  # real-valued bisection stops within 1%


@dataclass(frozen=True)
class BottleneckResult:
    spans: tuple[Span, ...] | None
    lower_bound: float
    optimal: bool


def bottleneck_of(cm: CostModel, spans: tuple[Span, ...]) -> float:
    return cm.evaluate(spans, "throughput").bottleneck_s


def candidate_values(cm: CostModel, lo: float) -> np.ndarray | None:
    """Sorted distinct values >= lo that the optimal bottleneck can take (None: too many)."""
    L, P = cm.num_layers, cm.num_peers
    if P * L * (L + 1) // 2 + 2 * P * (L + 1) > _MAX_CANDIDATES:
        return None
    st = cm.stage
    iu, ju = np.triu_indices(L + 1, k=1)
    stages = (st[:, ju] - st[:, iu]).ravel()
    links = np.concatenate([np.outer(cm.bits, cm.inv_up).ravel(), np.outer(cm.bits, cm.inv_down).ravel(),
                            cm.bits[[0, -1]] * np.array([cm.req_inv_up, cm.req_inv_down])])
    vals = np.unique(np.concatenate([stages, links]))
    return vals[vals >= lo * (1 - CAP_SLACK)]


class _Prober:
    """Runs probes, remembering the best chain found and the largest T proven infeasible."""

    def __init__(self, cm: CostModel, options: PlannerOptions) -> None:
        self.cm, self.options = cm, options
        self.best: tuple[Span, ...] | None = None
        self.hi = math.inf
        self.infeasible = 0.0  # no chain has bottleneck <= this (proven)
        self.from_probe = False  # best came from a probe: fastest among chains within its bottleneck
        self.probes = 0
        self.critical: tuple[int, ...] = ()
        self.left = _TOTAL_BUDGETS * options.search_budget  # work left for all probes together
        self.conclusive = True  # every probe so far was exact (found a chain or proved none)
        self.bounds: np.ndarray | None = None  # per-peer bottleneck lower bounds, once needed

    def offer(self, spans: tuple[Span, ...]) -> None:
        value = bottleneck_of(self.cm, spans)
        if value < self.hi:
            self.best, self.hi, self.from_probe = spans, value, False

    def probe(self, t: float) -> bool | None:
        """True: a chain within t exists (recorded); False: proven none; None: inconclusive."""
        self.probes += 1
        cm, keep = self.cm, list(range(self.cm.num_peers))
        if self.bounds is not None:  # peers that cannot be in any chain within t sit out
            keep = [int(y) for y in np.flatnonzero(self.bounds <= t * (1 + CAP_SLACK))]
            if not keep:
                self.infeasible = max(self.infeasible, t)
                return False
            cm = restrict(self.cm, keep)
        local = {y: i for i, y in enumerate(keep)}
        budget = max(pass_work(cm, 0), min(self.options.search_budget, self.left))
        res: SearchResult = dssr(cm, "sum", cap=t * (1 + CAP_SLACK), budget=budget, max_critical=self.options.max_critical,
                                 critical=[local[y] for y in self.critical if y in local])
        self.left -= res.work
        self.critical = tuple(dict.fromkeys([*(keep[y] for y in res.critical), *self.critical]))
        if res.spans is not None:
            res = replace(res, spans=tuple((keep[y], a, b) for y, a, b in res.spans))
            value = bottleneck_of(self.cm, res.spans)
            if value <= self.hi:  # equal: the probe's chain is the faster one under the cap
                self.best, self.hi, self.from_probe = res.spans, value, True
            return True
        if res.optimal:
            self.infeasible = max(self.infeasible, t)
            return False
        spans = _thrifty_chain(cm, t * (1 + CAP_SLACK), budget)
        if spans is not None:
            spans = tuple((keep[y], a, b) for y, a, b in spans)
            value = bottleneck_of(self.cm, spans)
            if value < self.hi:
                self.best, self.hi, self.from_probe = spans, value, False
            return True
        self.conclusive = False
        return None


def _thrifty_chain(cm: CostModel, cap: float, budget: int) -> tuple[Span, ...] | None:
    """A chain within `cap` that spends weak peers first: every hop is charged the number of
    layers its peer could carry within the cap, so strong peers stay free for the heavy parts.
    Used when the exact probe runs out of budget; any chain it returns is valid."""
    lo = window_starts(cm, cm.stage, cap)  # (L+1, P)
    carry = (np.arange(cm.num_layers + 1)[:, None] - lo).max(axis=0).astype(float)
    price = 100.0 * max(1.0, cm.num_layers * cap) * carry
    priced = replace(cm, lat=cm.lat + price / 2)  # each hop pays its lat twice: in and out
    res = dssr(priced, "sum", cap=cap, budget=budget, max_critical=4)
    return res.spans


def capacity_bound(cm: CostModel, lo: float, hi: float, bounds: np.ndarray | None = None) -> float:
    """Largest T in [lo, hi] proven infeasible by counting work (within 1%), else 0.0.

    Each peer serves one span, so under bottleneck T it covers at most W_Y(T) FLOPs and C_Y(T)
    layers: the most of any span that fits its memory, whose stage is <= T and whose input and
    output transfers' bandwidth parts are <= T. If the sums over the peers that can be in a chain
    within T (per-peer `bounds`) fall short of the model's FLOPs or layer count, no plan has
    bottleneck T.
    """
    L = cm.num_layers
    flops = np.concatenate([[0.0], np.cumsum([lay.flops for lay in cm.profile.layers], dtype=float)])
    flops = flops[-(L + 1):] - flops[-(L + 1)]
    lo_mem = window_starts(cm, cm.stage, math.inf)  # (L+1, P)
    b = np.arange(L + 1)
    send_in = cm.bits[:, None] * cm.inv_down[None, :]  # (L+1, P) receiving at boundary a
    send_in[0] = cm.bits[0] * np.maximum(cm.src_inv_up, cm.inv_down)
    send_out = cm.bits[:, None] * cm.inv_up[None, :]  # sending at boundary b
    send_out[L] = cm.bits[L] * np.maximum(cm.inv_up, cm.req_inv_down)

    def covers(t: float) -> bool:
        tt, total, count = t * (1 + CAP_SLACK), 0.0, 0
        for y in range(cm.num_peers):
            if bounds is not None and bounds[y] > tt:
                continue
            st = cm.stage[y]
            first = np.maximum(lo_mem[:, y], np.searchsorted(st, st - tt, side="left"))
            ok_start = np.where(send_in[:, y] <= tt, b, L + 1)
            next_ok = np.minimum.accumulate(ok_start[::-1])[::-1]  # first allowed start >= a
            start = next_ok[np.minimum(first, L)]
            ok = (start < b) & (send_out[:, y] <= tt)
            total += float(np.where(ok, flops[b] - flops[np.minimum(start, L)], 0.0).max())
            count += int(np.where(ok, b - start, 0).max())
            if total >= flops[-1] and count >= L:
                return True
        return False

    if not math.isfinite(hi) or covers(lo):
        return 0.0
    if not covers(hi):
        return hi
    while hi > lo * 1.01:
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if covers(mid) else (mid, hi)
    return lo


def search_bottleneck(cm: CostModel, options: PlannerOptions,
                      incumbents: Callable[[], Sequence[tuple[Span, ...]]] = tuple) -> BottleneckResult:
    """Best chain for the throughput objective, with a proven lower bound on its bottleneck.

    `incumbents()` gives known feasible chains (e.g. baselines), asked for only when the quick
    exact check fails: the result is never worse than any of them.
    """
    relaxed = solve(cm, "max")
    if relaxed is None:
        return BottleneckResult(None, math.inf, True)
    t0 = relaxed.value  # optimum >= t0
    pr = _Prober(cm, options)
    if pr.probe(t0):
        return BottleneckResult(pr.best, t0, True)
    for spans in incumbents():
        pr.offer(spans)
    pr.bounds = peer_bounds(cm, "max")
    pr.infeasible = max(pr.infeasible, capacity_bound(cm, t0, pr.hi, pr.bounds))
    cands = candidate_values(cm, t0)
    if cands is not None:
        _bisect_candidates(pr, cands)
    else:
        _bisect_reals(pr, t0)
    if pr.best is not None and not pr.from_probe:
        pr.probe(pr.hi)  # an incumbent won: find the fastest chain within its bottleneck
    lower = max(t0, pr.infeasible)
    if pr.best is None:
        return BottleneckResult(None, lower, cands is not None and pr.infeasible >= cands[-1])
    optimal = bool(pr.hi <= t0 * (1 + CAP_SLACK) or _all_below_infeasible(pr, cands))
    if not optimal:  # unproven: a local search on the bottleneck may still shave some off
        pr.offer(polish(cm, pr.best))
    return BottleneckResult(pr.best, pr.hi if optimal else lower, optimal)


def _all_below_infeasible(pr: _Prober, cands: np.ndarray | None) -> bool:
    """Every possible bottleneck value below the best found is proven infeasible."""
    if cands is None:
        return pr.hi <= pr.infeasible * (1 + CAP_SLACK)
    below = cands[cands < pr.hi * (1 - CAP_SLACK)]
    return len(below) == 0 or below[-1] <= pr.infeasible


def _hi_index(pr: _Prober, cands: np.ndarray) -> int:
    return min(len(cands) - 1, int(np.searchsorted(cands, pr.hi * (1 - CAP_SLACK))))


def _bisect_candidates(pr: _Prober, cands: np.ndarray) -> None:
    """Binary search over the possible bottleneck values (lo: proven or assumed infeasible).

    After a bisection step finds a chain, the value just below it is tried first: the fastest
    chain within a cap is often bottleneck-optimal, and then one probe proves it.
    """
    lo = int(np.searchsorted(cands, pr.infeasible, side="right")) - 1
    if pr.best is None and not pr.probe(float(cands[-1])):
        return
    hi, just_below = _hi_index(pr, cands), True
    while hi - lo > 1 and pr.probes < _MAX_PROBES:
        if not pr.conclusive and cands[hi] <= cands[max(lo, 0)] * _STOP_RATIO:
            break  # no proof is coming: stop once within 1%
        mid = hi - 1 if just_below else (lo + hi) // 2
        if pr.probe(float(cands[mid])):
            hi, just_below = min(mid, _hi_index(pr, cands)), not just_below
        else:
            lo, just_below = mid, False


def _bisect_reals(pr: _Prober, t0: float) -> None:
    """Grow T geometrically until feasible, then bisect in log space."""
    lo = t = max(t0, pr.infeasible)
    while pr.best is None and pr.probes < _MAX_PROBES // 2:
        lo, t = t, t * 2
        pr.probe(t)
    while pr.best is not None and pr.hi > lo * _STOP_RATIO and pr.probes < _MAX_PROBES:
        mid = math.sqrt(lo * pr.hi)
        if not pr.probe(mid):
            lo = mid
