"""Throughput objective on few peers: an exact branch and bound whose failed states carry over.

At a bound T the link term `bits_a * max(1/up_X, 1/down_Y)` splits into the sender's part and
the receiver's part (core/threshold.py), so a span [a, b) on peer y has one cost of its own,

    c(y, a, b) = max(stage_y(a, b), bits_a / down_y, bits_b / up_y)     (inf if it does not fit),

the requester's own link parts are a constant `floor` of every chain, and a chain's bottleneck
is max(floor, max of its spans' c). On few peers all c fit one (P, L+1, L+1) array, and then:

1. A lower bound without search: capacity counting (each peer serves one span, so the most
   layers / FLOPs / parameter bytes of any one span within T, summed over peers, must reach the
   model's) evaluated exactly as a step function of T, so the bound is itself a span cost.
2. Ascend: decide T = bound, then geometrically higher, until a chain turns up (each decision
   that finds none raises the bound).
3. Descend (branch and bound): every chain found is re-cut optimally for its own peer order (a
   small DP); then search again below its bottleneck. States (boundary, unused peers) that
   failed at T fail at every smaller T, so the descent keeps them all: the searches together
   cost about one search. A search that completes without a chain proves the incumbent optimal.

Every decision is a depth-first search over (boundary, set of unused peers) in plain Python (few
peers: thousands of nodes at most), with the moves, cuts and dominance rules of
`threshold.ChainSearch`. Out of budget it says so; the caller then falls back on the general
search (core/bottleneck.py) with what was found and proven here.
"""

from __future__ import annotations

import copy
import functools
import math
import operator
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from .costs import CostModel, Span
from .threshold import CAP_SLACK

MAX_PEERS = 16  # "few peers": masks of at most this many bits
MAX_CELLS = 80_000  # ... and P * (L+1)^2 span costs at most (the search grows with it, too)
_ASCENT = (0.004, 2.0)  # first relative step above the bound, growth factor
_RECOMPILE = 0.03  # the descent recompiles its decider after T fell this much (stronger cuts)
_DIVE_NODES = 64  # the few-hop search gets this plus one node per layer
INF = math.inf


def fits(cm: CostModel) -> bool:
    """Small enough for this module (its arrays are P * (L+1)^2)."""
    return 0 < cm.num_peers <= MAX_PEERS and cm.num_peers * (cm.num_layers + 1) ** 2 <= MAX_CELLS


@dataclass(frozen=True, eq=False)
class SpanCosts:
    """Every span's cost on every peer, and what the searches derive from it once. Arrays are
    indexed [end b, peer y, start a]: running minima over b then run over the outer axis."""

    cost: np.ndarray  # (L+1, P, L+1) c(y, a, b); inf where b <= a or the span does not fit
    reach: np.ndarray  # (L+1, P, L+1) min over b' >= b of cost: "some end at or after b is within T"
    floor: float  # the requester's link parts, in every chain
    cum: np.ndarray  # (3, L+1) cumulative layers, FLOPs, parameter bytes (capacity weights)
    bits: list[float]  # bits crossing each boundary (the dominance rule among ends)
    left: tuple[list[float], list[float]]  # layers and FLOPs from each boundary on (less 1e-12)
    rows: dict[int, list[float]] = field(default_factory=dict)  # cache of cost[a+1:, y, a] as lists


def span_costs(cm: CostModel) -> SpanCosts:
    L, Lp1 = cm.num_layers, cm.num_layers + 1
    st = cm.stage
    cost = st.T[:, :, None] - st[None, :, :]  # (b, y, a) stage of [a, b)
    np.maximum(cost, (cm.bits[:, None] * cm.inv_up[None, :])[:, :, None], out=cost)  # y sends at b
    np.maximum(cost, (cm.inv_down[:, None] * cm.bits[None, :])[None, :, :], out=cost)  # y receives at a
    span_params = cm.params[:, None] - cm.params[None, :]  # (b, a)
    bad = (span_params[:, None, :] > cm.mem[None, :, None]) | np.triu(np.ones((Lp1, Lp1), dtype=bool))[:, None, :]
    np.putmask(cost, bad, INF)
    reach = np.minimum.accumulate(cost[::-1], axis=0)[::-1]
    floor = float(max(cm.bits[0] * cm.src_inv_up, cm.bits[L] * cm.req_inv_down))
    cum = np.stack([np.arange(Lp1, dtype=float), np.concatenate([[0.0], np.cumsum(cm.layer_flops)]),
                    cm.params.astype(float)])
    left = (cum[:2, -1:] - cum[:2]) * (1 - 1e-12)
    return SpanCosts(cost, reach, floor, cum, cm.bits.tolist(), (left[0].tolist(), left[1].tolist()))


def counting_bound(sc: SpanCosts) -> float:
    """The smallest T at which capacity counting does not rule T out (a proven lower bound).

    Per peer and weight, the heaviest span within T is a step function of T: it steps where the
    furthest end reachable from some start moves (the `reach` frontier) to a new record weight.
    Summed over peers it must reach the model's total; the answer is a span cost itself.
    (Orders and running maxima use float keys: errors of about 1e-15 relative, inside the 1e-12
    slack on the totals.)"""
    Lp1, P = sc.cost.shape[:2]
    front = np.concatenate([sc.cost[:-1] < sc.reach[1:], np.isfinite(sc.cost[-1:])], axis=0)
    flat = np.flatnonzero(front)  # where the furthest end within T from (peer, start) moves
    if len(flat) == 0:
        return INF
    cost = sc.cost.ravel()[flat]
    flat = flat[np.argsort((flat // Lp1 % P) * (4.0 * float(cost.max())) + cost)]  # by peer, then cost
    b, rest = np.divmod(flat, P * Lp1)
    ys, a = np.divmod(rest, Lp1)
    cost = sc.cost.ravel()[flat]
    first = np.flatnonzero(np.concatenate([[True], ys[1:] != ys[:-1]]))  # each peer's first event
    bound, off = sc.floor, ys * 2.0
    for cum in sc.cum:
        total = float(cum[-1] - cum[0])
        if total <= 0:
            continue
        record = np.maximum.accumulate((cum[b] - cum[a]) / total + off) - off  # per peer, in [0, 1]
        gain = np.diff(record, prepend=0.0)
        gain[first] = record[first]
        step = gain > 0
        at_cost = cost[step]
        by_cost = np.argsort(at_cost, kind="stable")
        hit = int(np.searchsorted(np.cumsum(gain[step][by_cost]), 1 - 1e-12, side="left"))
        if hit >= len(by_cost):
            return INF
        bound = max(bound, float(at_cost[by_cost[hit]]))
    return bound


class Decider:
    """Is there a chain of distinct peers whose every span cost is <= t? Depth-first search over
    (boundary, unused peers) with a node budget.

    Moves: an unused peer takes a span to an end within t, furthest first, skipping ends that a
    further one with no more bits to send dominates; peers are tried thrifty first (least of
    their best span within t left unused). A state is cut when the unused peers' best spans
    cannot cover the rest (layers or FLOPs). `failed` holds states proven to fail at t or at
    any larger bound, so a search at a smaller t may start from a previous one's."""

    def __init__(self, sc: SpanCosts, t: float, failed: set[int] | None = None, thrifty: bool = True) -> None:
        self.sc, self.t, self.compiled = sc, t, t
        Lp1 = sc.cost.shape[0]
        self.L, self.stride = Lp1 - 1, Lp1
        end = (sc.reach <= t).sum(axis=0) - 1  # (P, L+1): furthest end within t from a (-1: none)
        has = end > np.arange(Lp1)[None, :]
        span = np.where(has[None], sc.cum[:2, np.maximum(end, 0)] - sc.cum[:2, None, :], 0.0)  # (2, P, L+1)
        best = np.maximum.accumulate(span[:, :, ::-1], axis=2)[:, :, ::-1]  # best span starting >= a
        self.cap_layers, self.cap_flops = best[0].T.tolist(), best[1].T.tolist()
        self.left_layers, self.left_flops = sc.left
        self._arrays = (end, has, span[1], best[1])
        self.order = self._order(thrifty)
        self.end = end.tolist()
        self.ends: dict[int, list[int]] = {}
        self.failed = set() if failed is None else failed
        self.nodes = self.budget = 0

    def _order(self, thrifty: bool) -> list[list[int]]:
        """Per boundary, the peers with a span from it in the order they are tried."""
        end, has, span, best = self._arrays
        if thrifty:
            score = best[:, :1] - span  # FLOPs capacity left unused
        else:  # furthest end first, then the larger capacity (few hops: for latency)
            score = -end - best[:, :1] / (2 * float(best.max()) + 1e-300)
        order = np.argsort(np.where(has, score, INF), axis=0, kind="stable").T.tolist()
        return [row[:n] for row, n in zip(order, has.sum(axis=0).tolist())]

    def retarget(self, t: float) -> None:
        """Decide a smaller t with the arrays compiled for this one: the furthest ends and the
        capacities stay valid upper limits (only weaker), the ends are listed anew."""
        self.t, self.ends = min(t, self.t), {}

    def fork(self, t: float, thrifty: bool) -> Decider:
        """A decider for t <= the compiled bound with its own (empty) failed states and order."""
        other = copy.copy(self)
        other.t, other.ends, other.failed, other.order = min(t, self.compiled), {}, set(), self._order(thrifty)
        return other

    def search(self, budget: int, mask: int) -> tuple[list[Span] | None, bool]:
        """(chain, proven): a chain from boundary 0 using peers in `mask` (bit y: peer y), or
        None with proven=True (none exists) or proven=False (out of `budget` nodes)."""
        self.nodes, self.budget = 0, budget
        try:
            return (self._dfs(0, mask) if self._open(0, mask) else None), True
        except _Budget:
            return None, False

    def _open(self, a: int, mask: int) -> bool:
        """Count state (a, mask) as a node; False when it is known to fail, or its unused peers'
        best spans (one each) cannot cover the layers or FLOPs left (then it is remembered)."""
        key = mask * self.stride + a
        if key in self.failed:
            return False
        self.nodes += 1
        if self.nodes > self.budget:
            raise _Budget
        pick = _picker(mask)
        if sum(pick(self.cap_layers[a])) < self.left_layers[a] or sum(pick(self.cap_flops[a])) < self.left_flops[a]:
            self.failed.add(key)
            return False
        return True

    def _dfs(self, a: int, mask: int) -> list[Span] | None:
        """Chain from boundary a < L over the peers in `mask`, for an open state (a, mask)."""
        L, open_ = self.L, self._open
        for y in self.order[a]:
            if (mask >> y) & 1:
                rest_mask = mask ^ (1 << y)
                ends = self.ends.get(a * 64 + y)
                for b in ends if ends is not None else self._ends(a, y):
                    if b == L:
                        return [(y, a, b)]
                    if open_(b, rest_mask):
                        rest = self._dfs(b, rest_mask)
                        if rest is not None:
                            return [(y, a, b), *rest]
        self.failed.add(mask * self.stride + a)
        return None

    def _ends(self, a: int, y: int) -> list[int]:
        """y's ends from a within t, furthest first, without those a further end dominates
        (see threshold.ChainSearch: a chain from the nearer end can be cut at the further)."""
        hi = self.end[y][a]
        row = self.sc.rows.get(a * 64 + y)  # costs from a on, shared by every decider of the plan
        if row is None or len(row) < hi - a:
            row = self.sc.rows[a * 64 + y] = self.sc.cost[a + 1:hi + 1, y, a].tolist()
        bits, t, out, least = self.sc.bits, self.t, [], INF
        for b in range(hi, a, -1):
            if row[b - a - 1] <= t and bits[b] < least:
                out.append(b)
                least = bits[b]
        self.ends[a * 64 + y] = out
        return out


class _Budget(Exception):
    """The search ran out of nodes (nothing proven)."""


@functools.lru_cache(maxsize=1 << 16)
def _picker(mask: int) -> Callable[[list[float]], tuple[float, ...]]:
    """The entries of a per-peer list that belong to the peers in `mask`, as a tuple."""
    peers = [y for y in range(mask.bit_length()) if (mask >> y) & 1]
    if len(peers) == 1:
        return lambda row, y=peers[0]: (row[y],)
    return operator.itemgetter(*peers) if peers else (lambda row: ())


def recut(sc: SpanCosts, chain: list[Span]) -> tuple[list[Span], float]:
    """The best cuts for the chain's peers in its order (any of them may drop out): a DP over
    (peer in order, boundary), one (L+1, L+1) array step per peer. Returns (chain, its value)."""
    Lp1 = sc.cost.shape[0]
    best = np.full(Lp1, INF)
    best[0] = sc.floor
    idx, steps = np.arange(Lp1), []
    for y, _, _ in chain:
        via = np.maximum(best[None, :], sc.cost[:, y, :])  # (b, a): arrive at a, then y serves [a, b)
        start = via.argmin(axis=1)
        value = via[idx, start]
        take = value < best
        steps.append((y, start, take))
        best = np.where(take, value, best)
    out, b = [], Lp1 - 1
    for y, start, take in reversed(steps):
        if b > 0 and take[b]:
            out.append((y, int(start[b]), b))
            b = out[-1][1]
    return out[::-1], float(best[-1])


@dataclass(frozen=True)
class FewResult:
    """best: the best chain found (None: none); hi its bottleneck; lower_bound proven; decided:
    the search finished (best is optimal, or no chain exists); few_hops: another chain within
    hi, found spending strong peers first (for the latency tie-break); costs: the span costs."""

    best: tuple[Span, ...] | None
    hi: float
    lower_bound: float
    decided: bool
    few_hops: tuple[Span, ...] | None = None
    costs: SpanCosts | None = None


def solve_few(cm: CostModel, budget: int) -> FewResult:
    """Minimum-bottleneck chain of distinct peers on a small instance (see `fits`), exactly
    unless more than `budget` search nodes are needed in all."""
    sc = span_costs(cm)
    return replace(_Few(sc, budget).run(), costs=sc)


class _Few:
    """The ascent and the descent of `solve_few`; `lb` is proven (no chain has every span cost
    <= lb), `hi` is the best chain's value (span costs, floor included)."""

    def __init__(self, sc: SpanCosts, budget: int) -> None:
        self.sc, self.budget = sc, budget
        self.full = (1 << sc.cost.shape[1]) - 1
        self.best: tuple[Span, ...] | None = None
        self.hi, self.lb = INF, 0.0
        self.found_by: Decider | None = None  # the decider whose search found the first chain

    def run(self) -> FewResult:
        sc = self.sc
        self.lb = counting_bound(sc)
        if not math.isfinite(self.lb):
            return FewResult(None, INF, INF, True)
        top = float(sc.cost[np.isfinite(sc.cost)].max())  # every span is within this
        dec = self._ascend(top)
        if dec is None:  # out of budget, or no chain at all
            return FewResult(None, INF, self.lb, self.lb == INF)
        while self.hi > self.lb * (1 + CAP_SLACK):  # descend, keeping the states failed so far
            t = self.hi * (1 - CAP_SLACK)
            if t < dec.compiled * (1 - _RECOMPILE):
                dec = Decider(sc, t, dec.failed)
            else:
                dec.retarget(t)
            chain, proven = dec.search(self.budget, self.full)
            self.budget -= dec.nodes
            if chain is None:
                return self._result(self.hi if proven else self.lb, proven)
            self._offer(chain)
        return self._result(self.hi, True)

    def _result(self, lower_bound: float, decided: bool) -> FewResult:
        """The result, with a few-hop alternative within hi for the latency tie-break: the
        search spending the furthest-reaching peers first, on arrays compiled at or above hi."""
        t, dec = self.hi * (1 + CAP_SLACK), self.found_by
        dive = dec.fork(t, thrifty=False) if dec is not None and dec.compiled >= t else Decider(self.sc, t, thrifty=False)
        chain, _ = dive.search(_DIVE_NODES + dive.L, self.full)
        return FewResult(self.best, self.hi, lower_bound, decided, few_hops=tuple(chain) if chain else None)

    def _ascend(self, top: float) -> Decider | None:
        """Decide T just above the bound, then geometrically higher, until a chain turns up;
        the decider that found it (its failed states hold at every smaller T). None: out of
        budget (lb set) or no chain with every span allowed (lb = inf)."""
        step, growth = _ASCENT
        t = self.lb
        while True:
            t = min(t * (1 + step), top)
            step *= growth
            dec = Decider(self.sc, t * (1 + CAP_SLACK))
            chain, proven = dec.search(self.budget, self.full)
            self.budget -= dec.nodes
            if chain is not None:
                self._offer(chain)
                self.found_by = dec
                return dec
            if not proven:
                return None
            self.lb = INF if t >= top else max(self.lb, t)
            if t >= top:
                return None

    def _offer(self, chain: list[Span]) -> None:
        """Take the chain, re-cut for its own peer order when that is better."""
        cut, value = recut(self.sc, chain)
        own = chain_value(self.sc, chain)
        if own <= value:
            cut, value = chain, own
        if value < self.hi:
            self.best, self.hi = tuple(cut), value


def chain_value(sc: SpanCosts, chain: list[Span] | tuple[Span, ...]) -> float:
    """A chain's bottleneck from the span costs (the cost model's value up to round-off)."""
    cost = sc.cost
    return max([sc.floor] + [float(cost[b, y, a]) for y, a, b in chain])


def alive(sc: SpanCosts, hi: float) -> list[int]:
    """Peers with some span within hi."""
    return np.flatnonzero(sc.reach[0].min(axis=1) <= hi * (1 + CAP_SLACK)).tolist()
