"""Throughput objective: minimise the pipeline bottleneck over chains of distinct peers.

Minimising the period of an interval mapping on heterogeneous processors is NP-hard (Benoit &
Robert, "Mapping pipeline skeletons onto heterogeneous platforms", JPDC 2008), so this module
proves what it can and says what it proved. Everything rests on deciding a threshold T
(core/threshold.py): "is there a chain of distinct peers with every stage and transfer
bandwidth part <= T?", which at fixed T has no coupling between neighbours.

1. Bounds: every layer on its fastest fitting peer, and the min-max DP with peers reusable (T0);
   if that DP's optimal chain uses distinct peers it is the answer. The bound itself is probed.
2. Raise the proven bound `lb` with the cheap proofs (capacity counting), then probe just above
   it and geometrically further until the chain search finds a chain, then bisect down to `hi`
   (the best chain's bottleneck); a completed search without a chain raises `lb`.
3. The optimum is one of finitely many term values: when few lie in (lb, hi) they are bisected
   exactly; if all below `hi` are proven infeasible the chain is optimal.
4. Still more than 2% apart: the flow LP (core/flow_lp.py, window form) raises `lb` (a certificate
   checked here, extended upwards as far as it holds) and guides chain searches with perturbed
   restarts between its bound and `hi`, until 1% apart; still more than 4% apart, the full arc
   LP's guide at a few T (the window LP's guide misled the search on some many-hop instances).
5. Unproven chains compete with the baselines (never worse) and, if still loose, a local search
   (core/polish.py). Among chains within the final bottleneck the fastest one found is returned.

On few peers (core/few_peers.py: at most 16, and P * (L+1)^2 <= 80k) one exact branch and bound
over span costs replaces steps 1-4; the steps above run only past its node budget, from what it
found and proved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from . import few_peers
from .chain_dp import dssr, pass_work, repeated, solve
from .costs import CostModel, Span, restrict
from .plan import PlannerOptions
from .polish import polish
from .flow_lp import Guide, certifies_at, solve_full, solve_windows
from .threshold import CAP_SLACK, ChainSearch, Threshold, at, columns, proven_infeasible

_TOL = 1.001  # real-valued bisections stop within 0.1%
_FEW = 48  # candidate values in (lb, hi) bisected exactly when at most this many
_EXACT_NODES = 20_000  # chain-search nodes per probe when few peers are usable (decides exactly in practice)
_SMALL_PEERS = 16  # "few peers"
_MIN_NODES = 64  # many peers: a probe gets this plus one node per layer (a dive and some backtracking)
_BIG_STEP = 0.01  # a new chain this much better than the last: probe just below it next
_NEAR = 0.03  # ... and also when it is this close to the bound
_UNDECIDED = 2  # a bisection gives up after this many undecided probes in a row
_LP_GAP = 0.02  # the flow LP is tried when the gap is still above this
_LP_PROBES = 4  # LPs spent on the bound
_LP_GUIDED = 7  # then LP-guided probes for chains
_LP_NODES = 1000  # chain-search nodes per LP-guided attempt (cheap next to the LP itself)
_LP_RESTARTS = 4  # attempts per LP-guided probe (perturbed orders)
_RESCUE_GAP = 0.04  # ... and tries the full LP's guide when the gap is still above this
_RESCUE_POINTS = 3  # at this many T between the bound and hi
_LP_ENOUGH = 0.01  # the LP stage stops refining once the gap is this small (after one proof attempt)
_CERT_STEPS = 4  # bisection steps of an LP certificate's reach (each far cheaper than an LP)
_FEW_LP = 16  # candidate values settled exactly with LP-backed probes (about log2 of it LPs)
_TIEBREAK_WORK = 200_000  # exact latency tie-break (DSSR) when every peer could be critical within this
_TIEBREAK_PASS = 100_000  # one relaxed latency pass for the tie-break up to this much work
_FEW_NODES = 30_000  # search nodes for the exact search on few peers (core/few_peers.py), in all


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
    if cm.num_peers == 0:
        return math.inf
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
    stage, n_b = cm.stage, cm.num_layers + 1
    for y in range(cm.num_peers):
        st = stage[y]  # windows widened by one on each side: st[b] - st[a] rounds unlike st[a] + lo
        first = np.maximum(np.searchsorted(st, st + lo, side="left") - 1, np.arange(n_b) + 1)
        last = np.minimum(np.searchsorted(st, st + hi, side="right") + 1, n_b)
        n = np.maximum(last - first, 0)
        a_idx = np.repeat(np.arange(n_b), n)
        b_idx = first[a_idx] + np.arange(len(a_idx)) - np.repeat(np.cumsum(n) - n, n)
        d = st[b_idx] - st[a_idx]
        d = d[(d > lo) & (d < hi)]
        count += len(d)
        if count > limit:
            return None
        vals.append(d)
    links = np.concatenate([np.outer(cm.bits, cm.inv_up).ravel(), np.outer(cm.bits, cm.inv_down).ravel(),
                            cm.bits[[0, -1]] * np.array([cm.src_inv_up, cm.req_inv_down])])
    vals.append(links[(links > lo) & (links < hi)])
    out = np.unique(np.concatenate(vals)) if vals else np.zeros(0)
    out = out[(out > lo) & (out < hi)]
    return out if len(out) <= limit else None


class _Search:
    """Bisection state: the best chain, `hi` its bottleneck, `lb` the largest T proven infeasible."""

    def __init__(self, cm: CostModel, nodes: int) -> None:
        self.cm, self.nodes, self.dive = cm, nodes, nodes  # chain-search nodes per probe (near lb: dive)
        self.work, self.keep = cm, list(range(cm.num_peers))  # probes run on these peers
        self.best: tuple[Span, ...] | None = None
        self.hi = math.inf
        self.lb = 0.0
        self.relaxed_known = True  # lb >= the relaxed (peers may repeat) optimum: skip that proof
        self.lp_guided = False  # probes ask the flow LP first (slow; for stubborn gaps)
        self.lp_floor = math.inf  # the smallest t with a feasible flow LP (no LP proof above it)

    def offer(self, spans: tuple[Span, ...] | None) -> None:
        if spans is not None:
            value = bottleneck_of(self.cm, spans)
            if value < self.hi:
                self.best, self.hi = spans, value

    def narrow(self) -> None:
        """Probe only peers with a span within hi from now on: every later probe is below hi,
        where the others cannot serve at all (so proofs on the rest hold for all peers)."""
        keep = [int(y) for y in np.flatnonzero(at(self.cm, self.hi).alive)]
        if keep and len(keep) < self.cm.num_peers:
            self.work, self.keep = restrict(self.cm, keep), keep

    def probe(self, t: float, nodes: int) -> bool | None:
        """True: a chain within t (recorded); False: proven none; None: undecided.

        With `lp_guided` set, the flow LP at t is solved first: it may prove t infeasible, else
        its solution orders the chain search."""
        th = at(self.work, t)
        if proven_infeasible(self.work, th, not self.relaxed_known):
            self.lb = max(self.lb, t)
            return False
        guide = None
        if self.lp_guided:
            got = self.flow(t, th)
            if got is not None and not got[0]:
                self.lp_proved(t, got[2])
                return False
            guide = got[1] if got is not None else None
        work, keep = self.work, self.keep
        alive = np.flatnonzero(th.alive)
        if guide is None and len(alive) * 4 < 3 * work.num_peers:
            # peers with no span within t take no part in the search: dropping them first gives
            # the same search (same order among the rest) over smaller arrays
            work, keep = restrict(work, alive.tolist()), [keep[int(y)] for y in alive]
            th = columns(th, alive)
        spans, proven = ChainSearch(work, th, guide).run(nodes, _LP_RESTARTS if self.lp_guided else 1)
        if spans is not None:
            self.offer(tuple((keep[y], a, b) for y, a, b in spans))
            return True
        if proven:
            self.lb = max(self.lb, t)
            return False
        return None

    def bisect(self, nodes: int, tol: float, max_probes: int = 64, lo: float = 0.0, below: bool = True) -> None:
        """Log-scale bisection of (max(lb, lo), hi); an undecided probe counts as 'no chain' for
        the direction but proves nothing. After each new chain the value just below it is tried
        first: the chain search's first find is often optimal, and then one probe proves it."""
        lo, undecided = max(lo, self.lb), 0
        for _ in range(max_probes):
            if self.hi <= lo * tol or undecided >= _UNDECIDED:
                return
            t = self.hi * (1 - 3 * CAP_SLACK) if below else math.sqrt(lo * self.hi)
            if below and self.lp_guided and t >= self.lp_floor:  # the LP cannot prove t: bisect instead
                t, below = math.sqrt(lo * self.hi), False
            before = self.hi
            got = self.probe(t, nodes)
            undecided = undecided + 1 if got is None else 0
            if got:  # after a big step down, or close to the bound, try just below again
                below = not below or self.hi < before * (1 - _BIG_STEP) or self.hi <= self.lb * (1 + _NEAR)
            else:
                if got is False or not below:  # an undecided probe just below hi moves nothing
                    lo = max(lo, t)
                below = False

    def flow(self, t: float, th: Threshold) -> tuple[bool, Guide | None, np.ndarray | None] | None:
        """The flow LP at t (core/flow_lp.solve_windows), solved afresh for every t (a guide from
        a feasible LP at a lower t misled the chain search); remembers the lowest feasible t."""
        got = solve_windows(self.work, th)
        if got is not None and got[0]:
            self.lp_floor = min(self.lp_floor, t)
        return got

    def lp_proved(self, t: float, w: np.ndarray | None) -> None:
        """The flow LP proved t out of reach (lb = t) with certificate w, which usually holds
        further up, where checking it is far cheaper than another LP: first just below hi (then
        hi is optimal), else a few log-scale bisection steps towards it."""
        self.lb = max(self.lb, t)
        top = self.hi * (1 - 3 * CAP_SLACK)
        if w is None or top <= self.lb:
            return
        if certifies_at(at(self.work, top), w):
            self.lb = top
            return
        lo, up = self.lb, top
        for _ in range(_CERT_STEPS):
            mid = math.sqrt(lo * up)
            if certifies_at(at(self.work, mid), w):
                lo = self.lb = mid
            else:
                up = mid

    def lp_bisect(self, nodes: int, max_lps: int) -> None:
        """Bisect towards the flow LP's bound: an infeasible LP raises lb; a feasible one lowers
        the upper end of the search and guides a chain search at that T (which may lower hi)."""
        lo, up = self.lb, self.hi
        for _ in range(max_lps):
            if up <= lo * _TOL or self.hi <= self.lb * _TOL:
                return
            t = math.sqrt(lo * up)
            th = at(self.work, t)
            if proven_infeasible(self.work, th, not self.relaxed_known):
                lo = self.lb = max(self.lb, t)
                continue
            got = self.flow(t, th)
            if got is None:
                return
            if not got[0]:
                self.lp_proved(t, got[2])
                lo = self.lb
                continue
            up = t
            spans, proven = ChainSearch(self.work, th, got[1]).run(nodes)
            if spans is not None:
                self.offer(tuple((self.keep[y], a, b) for y, a, b in spans))
            elif proven:
                lo = self.lb = max(self.lb, t)

    def ascend(self, nodes: int) -> float:
        """Probe just above lb, then geometrically further, until a chain turns up (the proofs
        are usually within a few percent of the optimum). Returns the last T without a chain."""
        step, lo = 0.004, self.lb
        while self.hi > lo * _TOL:
            t = self.lb * (1 + step)
            if t >= self.hi:
                return lo
            if self.probe(t, nodes):
                return lo
            lo, step = t, step * 3
        return lo

    def prove_lower(self, hi: float) -> None:
        """Raise lb towards hi with the cheap proofs alone (monotone in T), to within _TOL:
        one probe just above lb (the bound is sometimes close already), then a log-scale
        bisection of the rest (a gallop from lb took about twice the probes when it was not)."""
        lo = self.lb
        t = lo * _TOL
        if t >= hi:
            return
        if not proven_infeasible(self.cm, at(self.cm, t), not self.relaxed_known):
            return
        lo = self.lb = max(self.lb, t)
        while hi > lo * _TOL:
            mid = math.sqrt(lo * hi)
            if proven_infeasible(self.cm, at(self.cm, mid), not self.relaxed_known):
                lo = self.lb = max(self.lb, mid)
            else:
                hi = mid

    def exact(self, cands: np.ndarray, nodes: int) -> bool:
        """Bisect the candidate values below hi; True when every one of them is proven infeasible
        (gives up at the first undecided probe: no proof can come then)."""
        lo, hi = -1, len(cands)  # cands[lo] proven infeasible (or none), cands[hi:] >= self.hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            got = self.probe(float(cands[mid]), nodes)
            if got is None:
                return False
            if got:
                hi = min(mid, int(np.searchsorted(cands, self.hi * (1 - CAP_SLACK))))
            else:
                lo = mid
        return True

    def optimal(self) -> bool:
        """hi is proven optimal: no candidate value between the proven bound and hi."""
        if self.hi <= self.lb * (1 + CAP_SLACK):
            return True
        cands = candidates_between(self.cm, self.lb * (1 + CAP_SLACK), self.hi * (1 - CAP_SLACK), 0)
        return cands is not None and len(cands) == 0


def search_bottleneck(cm: CostModel, options: PlannerOptions,
                      incumbents: Callable[[], Sequence[tuple[Span, ...]]] = tuple) -> BottleneckResult:
    """Best chain for the throughput objective, with a proven lower bound on its bottleneck.

    `incumbents()` gives known feasible chains (e.g. baselines): the result is never worse.
    Few peers: the exact branch and bound of core/few_peers.py, and the search below only if
    that runs out of budget (starting from what it found and proved).
    """
    few = few_peers.solve_few(cm, _FEW_NODES) if few_peers.fits(cm) else None
    if few is not None and few.decided:
        if few.best is None:
            return BottleneckResult(None, math.inf, True)
        return BottleneckResult(_fastest_within(cm, few.best, few.hi, options, few), few.hi, True)
    start = _start(cm, options, incumbents, few)
    if isinstance(start, BottleneckResult):
        return start
    s, lb0 = start
    optimal = _refine(s, cm)
    if not optimal and s.hi > s.lb * (1 + _LP_GAP):
        optimal = _refine_with_lp(s, cm)
    if not optimal:
        for spans in incumbents():
            s.offer(spans)
        if s.hi > max(s.lb, lb0) * (1 + _LP_GAP):  # still loose: a local search may shave some off
            s.offer(polish(cm, s.best))
    best = _fastest_within(cm, s.best, s.hi, options)
    return BottleneckResult(best, s.hi if optimal else min(max(s.lb, lb0), s.hi), optimal)


def _start(cm: CostModel, options: PlannerOptions, incumbents: Callable[[], Sequence[tuple[Span, ...]]],
           few: few_peers.FewResult | None = None) -> BottleneckResult | tuple[_Search, float]:
    """Bounds and a first chain; a finished result when they already settle it. `few`: what an
    unfinished few-peers search found (a chain) and proved (a bound)."""
    th = at(cm, math.inf)  # any chain at all? (memory and distinct peers only)
    if proven_infeasible(cm, th):
        return BottleneckResult(None, math.inf, True)
    alive = int(th.alive.sum())
    s = _Search(cm, _EXACT_NODES)
    relaxed = solve(cm, "max")  # peers may repeat: its optimum T0 is a lower bound
    t0 = relaxed.value if relaxed is not None else math.inf
    lb0 = max(trivial_lower_bound(cm), t0)
    s.lb = lb0 * (1 - 2 * CAP_SLACK)  # below the bound, so that lb0 itself gets probed
    if few is not None:
        s.offer(few.best)
        s.lb = max(s.lb, few.lower_bound)
    if relaxed is not None and not repeated(relaxed.spans):  # the relaxation's optimum is a chain
        return BottleneckResult(_fastest_within(cm, relaxed.spans, t0, options), t0, True)
    spans, proven = ChainSearch(cm, th).run(_EXACT_NODES)
    if spans is None:
        spans = next(iter(sorted(incumbents(), key=lambda c: bottleneck_of(cm, c))), None)
        if spans is None:
            return BottleneckResult(None, math.inf, proven)
    s.offer(spans)
    if s.probe(lb0, cm.num_layers) and s.hi <= lb0 * (1 + CAP_SLACK):  # the bound is met (one dive)
        return BottleneckResult(_fastest_within(cm, s.best, s.hi, options), s.hi, True)
    if alive > _SMALL_PEERS:  # many peers: budgets for a dive plus some backtracking (one dive near lb)
        s.nodes, s.dive = _MIN_NODES + cm.num_layers, cm.num_layers
    return s, lb0


def _refine(s: _Search, cm: CostModel) -> bool:
    """Cheap proofs and the chain search, then the exact candidates; True when proven optimal."""
    s.prove_lower(s.hi)
    s.narrow()
    lo = s.ascend(s.dive)
    s.narrow()
    s.bisect(s.nodes, _TOL, lo=lo)
    if s.optimal():
        return True
    cands = candidates_between(cm, s.lb * (1 + CAP_SLACK), s.hi * (1 - CAP_SLACK), _FEW)
    return cands is not None and s.exact(cands, s.nodes)


def _refine_with_lp(s: _Search, cm: CostModel) -> bool:
    """The flow LP's bound, then LP-guided chain probes between it and hi; True when optimal."""
    nodes = max(s.nodes, _LP_NODES)
    s.lp_bisect(nodes, _LP_PROBES)
    s.lp_guided = True  # each probe is guided by its own LP
    s.bisect(nodes, 1 + _LP_ENOUGH, max_probes=_LP_GUIDED, below=False)
    if s.optimal():
        return True
    if s.hi <= s.lb * (1 + _LP_ENOUGH):  # close: one LP just below hi (its certificate may prove it)
        s.probe(s.hi * (1 - 3 * CAP_SLACK), nodes)
        return s.optimal()
    if s.hi > s.lb * (1 + _RESCUE_GAP):
        _rescue(s, nodes)
    cands = candidates_between(cm, s.lb * (1 + CAP_SLACK), s.hi * (1 - CAP_SLACK), _FEW_LP)
    return cands is not None and s.exact(cands, nodes)


def _rescue(s: _Search, nodes: int) -> None:
    """Still far from the LP bound: the window LP's guide failed (it does on some many-hop
    instances, where a MILP finds chains a few percent above the bound); try the full arc LP's
    guide at a few T between the bound and hi, lowest first, until one search finds a chain."""
    for k in range(1, _RESCUE_POINTS + 1):
        t = s.lb * (s.hi / s.lb) ** (k / (_RESCUE_POINTS + 1))
        th = at(s.work, t)
        got = solve_full(s.work, th)
        if got is None or not got[0]:
            if got is not None:
                s.lb = max(s.lb, t)
            continue
        spans, _ = ChainSearch(s.work, th, got[1]).run(nodes, _LP_RESTARTS)
        if spans is not None:
            s.offer(tuple((s.keep[y], a, b) for y, a, b in spans))
            return


def _fastest_within(cm: CostModel, spans: tuple[Span, ...], hi: float, options: PlannerOptions,
                    few: few_peers.FewResult | None = None) -> tuple[Span, ...]:
    """The lowest-latency chain found with bottleneck <= hi, among: `spans`, the chain search
    spending strong peers first (few hops), and the capped latency DP over the peers that have
    a span within hi: exact (DSSR) when small; on mid sizes without `few` (few peers: its
    result brings the few-hop chain), one relaxed pass (used only when its optimum happens to
    use distinct peers, which makes it exact too; on few peers it almost never does, and costs
    more than the rest together)."""
    L, cap = cm.num_layers, hi * (1 + CAP_SLACK)
    if few is not None:
        keep = few_peers.alive(few.costs, hi)
        found = [few.few_hops]
    else:
        keep = [int(y) for y in np.flatnonzero(at(cm, hi).alive)]
        if not keep:
            return spans
        sub = restrict(cm, keep)
        found = [_mapped(keep, ChainSearch(sub, at(sub, hi), thrifty=False).run(_MIN_NODES + L)[0])]
    sub = restrict(cm, keep)
    if pass_work(sub, len(keep)) <= _TIEBREAK_WORK:
        found.append(_mapped(keep, dssr(sub, "sum", cap=cap, budget=options.search_budget,
                                        max_critical=options.max_critical).spans))
    elif few is None and pass_work(sub, 0) <= _TIEBREAK_PASS:
        sol = solve(sub, "sum", cap=cap)
        found.append(_mapped(keep, sol.spans) if sol is not None and not repeated(sol.spans) else None)
    best, best_lat = spans, cm.latency_s(spans)
    for chain in found:
        if chain is None or chain == best:
            continue
        lat = cm.latency_s(chain)
        if lat < best_lat and cm.bottleneck_s(chain) <= cap:
            best, best_lat = chain, lat
    return best


def _mapped(keep: list[int], chain: Sequence[Span] | None) -> tuple[Span, ...] | None:
    """A chain over restrict(cm, keep) in cm's peer indices."""
    return None if chain is None else tuple((keep[y], a, b) for y, a, b in chain)
