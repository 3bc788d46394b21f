"""Feasibility of a bottleneck threshold T: which chains of distinct peers keep every term <= T.

The throughput objective's link term `bits_a * max(1/up_X, 1/down_Y)` is <= T exactly when the
sender's part `bits_a / up_X` and the receiver's part `bits_a / down_Y` both are, so at a fixed T
the links stop coupling neighbours: peer Y may *start* a span at boundary a when
`bits_a / down_Y <= T`, *end* one at b when `bits_b / up_Y <= T`, and serve [a, b) when also its
stage and memory allow (`window_starts`). Everything here is (L+1, P) numpy work per T.

- `relaxed_reach` (peers may repeat) and `capacity_short` (each peer covers at most one span, so
  its most FLOPs / layers / parameter bytes within T must add up to the model's) *prove* that no
  chain has bottleneck <= T; both are monotone in T.
- `ChainSearch` *decides* T exactly by depth-first search under a node budget (else says it
  could not): it walks from boundary 0, only to boundaries from which the end is still
  reachable, and tries first the unused peer whose capacity it wastes least ("thrifty"), so
  strong peers stay free for later; its first dive is that greedy.

Deciding T exactly is NP-hard in general (see core/bottleneck.py); these are the fast halves.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .costs import CostModel, Span

CAP_SLACK = 1e-9  # relative slack on T (float round-off of cumulative sums)
_DENSE = 60_000  # `at` compares all (peer, start, end) triples up to this many
_SWEEP = 4_000  # can_finish sweeps in plain Python up to this many (boundary, peer) pairs
_JITTER = 0.3  # a restart's random perturbation of the move scores, relative to their spread


@dataclass(frozen=True, eq=False)
class Threshold:
    """The spans allowed at bottleneck T, as arrays indexed [boundary, peer]."""

    t: float
    lo: np.ndarray  # (L+1, P) smallest start of a span ending at b (memory and stage)
    start_ok: np.ndarray  # (L+1, P) bool: peer may receive at boundary a
    end_ok: np.ndarray  # (L+1, P) bool: peer may send at boundary b
    alive: np.ndarray  # (P,) bool: peer has at least one allowed span
    first: np.ndarray  # (L+1, P) earliest allowed start of a span ending at b (L+1: none)

    @cached_property
    def hi_end(self) -> np.ndarray:
        """(L+1, P) largest end of a span starting at a (memory and stage); on demand: the
        cheap proofs, probed many times while the bound is raised, never need it."""
        return _hi_end(self.lo)


def at(cm: CostModel, t: float) -> Threshold:
    """Compile threshold t (with relative slack CAP_SLACK) over cm."""
    L, tt = cm.num_layers, t * (1 + CAP_SLACK)
    lo = cm.mem_starts
    if np.isfinite(tt):
        st = cm.stage
        if cm.num_peers * (L + 1) ** 2 <= _DENSE:  # small: count instead of P searchsorted calls
            cap = (st[:, None, :] < (st - tt)[:, :, None]).sum(axis=2)  # same as searchsorted 'left'
        else:
            cap = np.stack([np.searchsorted(st[y], st[y] - tt, side="left") for y in range(cm.num_peers)])
        lo = np.maximum(lo, cap.T)
    start_ok = cm.bits[:, None] * cm.inv_down[None, :] <= tt
    end_ok = cm.bits[:, None] * cm.inv_up[None, :] <= tt
    if cm.bits[0] * cm.src_inv_up > tt:
        start_ok[0] = False
    if cm.bits[L] * cm.req_inv_down > tt:
        end_ok[L] = False
    end_ok[0] = False
    start_ok[L] = False
    b = np.arange(L + 1)[:, None]
    nxt = np.minimum.accumulate(np.where(start_ok, b, L + 1)[::-1], axis=0)[::-1]  # next allowed start >= i
    first = np.take_along_axis(nxt, lo, axis=0)
    first = np.where(end_ok & (first < b), first, L + 1)
    alive = (first <= L).any(axis=0)
    return Threshold(t, lo, start_ok, end_ok, alive, first)


def columns(th: Threshold, keep: np.ndarray) -> Threshold:
    """`th` over the peers `keep` (indices, in order): the same as `at(restrict(cm, keep), th.t)`,
    since every array of a threshold is computed column by column, without compiling it again."""
    return Threshold(th.t, th.lo[:, keep], th.start_ok[:, keep], th.end_ok[:, keep], th.alive[keep], th.first[:, keep])


def _hi_end(lo: np.ndarray) -> np.ndarray:
    """(L+1, P): max b with lo[b, y] <= a (lo is non-decreasing in b and lo[b] <= b)."""
    Lp1, P = lo.shape
    off = (np.arange(P) * (Lp1 + 1))[None, :]
    flat = (lo + off).T.ravel()  # each peer's column, shifted into its own range: sorted overall
    q = (np.arange(Lp1)[:, None] + off)
    return (np.searchsorted(flat, q.T.ravel(), side="right").reshape(P, Lp1).T - 1) - np.arange(P)[None, :] * Lp1


def _last_true(mask: np.ndarray) -> np.ndarray:
    """(n, P): the largest index <= i where mask[:, y] is True, else -1."""
    idx = np.where(mask, np.arange(mask.shape[0])[:, None], -1)
    return np.maximum.accumulate(idx, axis=0)


def relaxed_reach(th: Threshold) -> np.ndarray:
    """(L+1,) bool: boundaries a chain within T can reach from 0 if peers may repeat.

    Fixpoint of one-hop steps, each a few (L+1, P) array operations; the number of rounds is
    the hop count of the shortest relaxed chain, usually a handful."""
    Lp1 = th.lo.shape[0]
    reach = np.zeros(Lp1, dtype=bool)
    reach[0] = True
    while True:
        last = _last_true(th.start_ok & reach[:, None])  # latest reachable allowed start <= i
        new = reach.copy()
        new[1:] |= np.any(th.end_ok[1:] & (last[:-1] >= th.lo[1:]), axis=1)
        if np.array_equal(new, reach):
            return reach
        reach = new


def can_finish(th: Threshold) -> np.ndarray:
    """(L+1,) bool: boundaries from which the end L is reachable within T if peers may repeat."""
    Lp1, P = th.lo.shape
    if Lp1 * P <= _SWEEP:
        return _can_finish_sweep(th)
    fin = np.zeros(Lp1, dtype=bool)
    fin[-1] = True
    hi = np.clip(th.hi_end, 0, Lp1 - 1)
    a = np.arange(Lp1)[:, None]
    while True:
        last = np.take_along_axis(_last_true(th.end_ok & fin[:, None]), hi, axis=0)  # furthest finishing end
        new = fin | np.any(th.start_ok & (last > a), axis=1)
        if np.array_equal(new, fin):
            return fin
        fin = new


def _can_finish_sweep(th: Threshold) -> np.ndarray:
    """`can_finish` in one backward sweep of plain Python (small instances, where the numpy
    fixpoint's rounds cost more than the loop): fin[a] when some peer may start at a and its
    nearest finishing end after a is within its reach. Per boundary only the peers that may
    start (resp. end) there are visited, each list found once with numpy."""
    Lp1, P = th.lo.shape
    starts, ends = _rows(th.start_ok), _rows(th.end_ok)
    hi_end = th.hi_end.tolist()
    fin = [False] * Lp1
    fin[-1] = True
    nxt = [Lp1] * P  # per peer: the nearest end b > a it may finish at (Lp1: none)
    for y in ends[-1]:
        nxt[y] = Lp1 - 1
    for a in range(Lp1 - 2, -1, -1):
        hi_a = hi_end[a]
        for y in starts[a]:
            if nxt[y] <= hi_a[y]:
                fin[a] = True
                for z in ends[a]:
                    nxt[z] = a
                break
    return np.array(fin, dtype=bool)


def _rows(mask: np.ndarray) -> list[list[int]]:
    """Per row of a bool matrix, the columns where it is True."""
    rows, cols = np.nonzero(mask)
    cuts = np.searchsorted(rows, np.arange(1, mask.shape[0])).tolist()
    cols = cols.tolist()
    return [cols[i:j] for i, j in zip([0, *cuts], [*cuts, len(cols)])]


def span_capacity(th: Threshold, weight: np.ndarray) -> np.ndarray:
    """(P,) the most total `weight` (per layer, >= 0) any one allowed span of each peer covers."""
    Lp1 = th.lo.shape[0]
    cum = np.concatenate([[0.0], np.cumsum(weight, dtype=float), [np.inf]])  # index L+1: no span
    return np.maximum(cum[:Lp1, None] - cum[th.first], 0.0).max(axis=0)


def capacity_short(cm: CostModel, th: Threshold) -> bool:
    """True: proven that no chain of distinct peers is within T (some resource cannot be covered).

    Each peer serves one span, so it covers at most its `span_capacity` of any additive per-layer
    weight; layers, FLOPs and parameter bytes are three such weights.
    """
    cum, totals = cm.capacity_weights
    Lp1 = th.lo.shape[0]
    caps = np.maximum(cum[:Lp1, None, :] - cum[th.first], 0.0).max(axis=0)  # (P, 3) as span_capacity
    return bool(np.any((totals > 0) & (caps.sum(axis=0) < totals * (1 - 1e-12))))


def proven_infeasible(cm: CostModel, th: Threshold, relaxed: bool = True) -> bool:
    """True when T is proven out of reach (capacity counting, then relaxed reachability; callers
    that already know the relaxed optimum pass relaxed=False: reachability adds nothing then)."""
    if not th.alive.any() or capacity_short(cm, th):  # the cheaper proof first
        return True
    return relaxed and not relaxed_reach(th)[-1]


class _Budget(Exception):
    """The search ran out of nodes (nothing proven)."""


class ChainSearch:
    """Exact decision at T by depth-first search over (boundary, unused peers), with a node budget.

    Moves: an unused peer that may start at the current boundary takes a span to an end from
    which the rest is still reachable. Only ends not dominated by a further end with no more
    bits to send are tried (a chain from the nearer end can be cut at the further one). A state
    whose unused peers' capacities (FLOPs, layers) over the rest of the chain fall short of what
    is left is cut off; failed states are remembered. The first dive is the thrifty greedy.
    """

    def __init__(self, cm: CostModel, th: Threshold,
                 guide: tuple[np.ndarray, np.ndarray] | None = None, thrifty: bool = True) -> None:
        self.cm, self.th, L = cm, th, cm.num_layers
        self.guide = guide  # (L+1, P) preference and preferred end, e.g. from the flow LP
        self.thrifty = thrifty  # False: furthest-reaching peer first (few hops, for latency)
        fin = can_finish(th)
        self.good_end = th.end_ok & fin[:, None]
        last_good = _last_true(self.good_end)
        self.reach = np.take_along_axis(last_good, np.clip(th.hi_end, 0, L), axis=0)
        self.cum = np.concatenate([[0.0], np.cumsum(cm.layer_flops)])
        self.cap = span_capacity(th, cm.layer_flops)
        # per boundary: what is left to cover (FLOPs, layers, less the slack) and, stacked, the
        # most of each one span of every peer can still cover: one matrix-vector product a node
        left = np.stack([self.cum[-1] - self.cum, float(L) - np.arange(L + 1)], axis=1) * (1 - 1e-12)
        self.need_left: list[list[float]] = left.tolist()
        self.need_cap = np.ascontiguousarray(np.stack(
            [_suffix_capacity(th, self.reach, self.cum), _suffix_capacity(th, self.reach, np.arange(L + 1.0))], axis=1))
        self.failed: set[tuple[int, int]] = set()
        self.ends_cache: dict[tuple[int, int], list[int]] = {}
        self.good_cols: dict[int, list[bool]] = {}
        self._bits: list[float] = cm.bits.tolist()
        self.order_cache: dict[int, list[int]] = {}
        self.jitter: np.random.Generator | None = None
        self.nodes = 0

    def run(self, budget: int, restarts: int = 1) -> tuple[tuple[Span, ...] | None, bool]:
        """(chain, proven): a chain within T; or None with proven=True (none exists) or False.

        `budget` nodes per attempt; after the first attempt runs out, up to `restarts - 1` more
        start over with the move order randomly perturbed (seeded: deterministic), keeping the
        states already proven to fail. Deep backtracking rarely repairs an early mistake; a
        different early order often does."""
        if not self.th.start_ok[0].any() or not self.th.alive.any():
            return None, True
        mask = sum(1 << int(y) for y in np.flatnonzero(self.th.alive))
        for attempt in range(restarts):
            self.budget, self.nodes = budget, 0
            self.free = self.th.alive.astype(float)  # 1.0 for unused peers (for the capacity sums)
            self.jitter = np.random.default_rng(attempt) if attempt else None
            self.order_cache = {}
            try:
                found = self._dfs(0, mask)
            except _Budget:
                continue
            return (tuple(found), True) if found is not None else (None, True)
        return None, False

    def _dfs(self, a: int, mask: int) -> list[Span] | None:
        """Chain from boundary a using only peers in `mask` (bit y set: peer y unused)."""
        if a == self.cm.num_layers:
            return []
        key = (a, mask)
        if key in self.failed:
            return None
        self.nodes += 1
        if self.nodes > self.budget:
            raise _Budget
        free = self.free
        flops_cap, layers_cap = (self.need_cap[a] @ free).tolist()
        flops_left, layers_left = self.need_left[a]
        if flops_cap < flops_left or layers_cap < layers_left:
            self.failed.add(key)
            return None
        order = self.order_cache.get(a)
        for y in (order if order is not None else self._order(a)):
            if not (mask >> y) & 1:
                continue
            free[y] = 0.0
            ends = self.ends_cache.get((a, y))
            for b in (ends if ends is not None else self._ends(a, y)):
                rest = self._dfs(b, mask & ~(1 << y))
                if rest is not None:
                    free[y] = 1.0
                    return [(y, a, b), *rest]
            free[y] = 1.0
        self.failed.add(key)
        return None

    def _order(self, a: int) -> list[int]:
        """Peers that may start a span at a, in the order they are tried (cached per a)."""
        got = self.order_cache.get(a)
        if got is None:
            r = self.reach[a]
            cand = np.flatnonzero(self.th.start_ok[a] & (r > a))
            score = self._score(a, cand, r)
            if self.jitter is not None and len(cand) > 1:
                score = score + self.jitter.random(len(cand)) * (_JITTER * float(np.ptp(score)) + 1e-300)
            got = self.order_cache[a] = cand[np.argsort(score, kind="stable")].tolist()
        return got

    def _score(self, a: int, cand: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Order of the peers tried at a: least FLOPs capacity left unused first (thrifty),
        after the guide's preference when there is one; or furthest reach first."""
        if not self.thrifty:
            return -r[cand] - self.cap[cand] / (2 * float(self.cap.max()) + 1e-300)
        waste = self.cap[cand] - (self.cum[r[cand]] - self.cum[a])
        if self.guide is None:
            return waste
        return -self.guide[0][a, cand] * (1 + float(np.abs(waste).max())) + waste

    def _ends(self, a: int, y: int) -> list[int]:
        """Good ends of y's span from a, furthest first, skipping ones a further end dominates."""
        got = self.ends_cache.get((a, y))
        if got is None:
            got = self.ends_cache[(a, y)] = self._compute_ends(a, y)
        return got

    def _compute_ends(self, a: int, y: int) -> list[int]:
        # plain Python: called thousands of times on short columns, where numpy's per-call
        # overhead dominated the planner's small instances
        hi = int(self.reach[a, y])
        col = self._good_col(y)
        bits = self._bits
        out: list[int] = []
        best = float("inf")  # smallest bits among the ends kept or skipped so far (further ones)
        for b in range(hi, a, -1):
            if col[b]:
                if bits[b] < best:
                    out.append(b)
                    best = bits[b]
        if self.guide is not None:
            pick = int(self.guide[1][a, y])
            if a < pick <= hi and col[pick]:
                out = [pick] + [b for b in out if b != pick]
        return out

    def _good_col(self, y: int) -> list[bool]:
        got = self.good_cols.get(y)
        if got is None:
            got = self.good_cols[y] = self.good_end[:, y].tolist()
        return got


def _suffix_capacity(th: Threshold, reach: np.ndarray, cum: np.ndarray) -> np.ndarray:
    """(L+1, P): the most weight one span of the peer starting at or after a can cover."""
    Lp1 = reach.shape[0]
    a = np.arange(Lp1)[:, None]
    ok = th.start_ok & (reach > a)
    got = np.where(ok, cum[np.clip(reach, 0, Lp1 - 1)] - cum[a], 0.0)
    return np.maximum.accumulate(got[::-1], axis=0)[::-1]
