"""Exact chain partition: DP over (layer boundary, last peer), made elementary by DSSR.

Rules of this module (see docs/cost-model.md, "How the planner searches"):

- `solve` is a dynamic program over states (boundary a, last peer Y, subset s of *critical*
  peers already used). Non-critical peers may appear more than once on its path, so its value
  is a lower bound on the true optimum (a relaxation of "each peer serves one span"); with every
  peer critical it is exact.
- mode "sum" minimises latency (sum of transfers and stages); mode "max" minimises the
  bottleneck (max of stages and transfer bandwidth parts). `cap` forbids every stage and every
  transfer bandwidth part above it (used to find the fastest plan among bottleneck-optimal ones).
- Transfers are star-model: cost(X->Y) = lat_X + lat_Y + bits * max(1/up_X, 1/down_Y). Sorting
  peers by 1/up once turns "min over predecessors X" into a prefix and a suffix minimum, so one
  boundary costs O(P log P), not O(P^2). Spans use cumulative sums: O(L^2 P) per pass overall.
- `dssr` (decremental state-space relaxation, Righini & Salani 2008) re-solves with the peers
  that the relaxed optimum repeated added to the critical set until the optimum is elementary:
  then it is proven optimal. If the state space would exceed the budget it repairs the path
  (keep it up to the first repeat, re-solve the rest without used peers, repeat) and reports the
  last relaxation's value as a proven lower bound.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Sequence

import numpy as np

from .costs import CostModel, Span, reversed_model, suffix

Mode = Literal["sum", "max"]
INF = float("inf")


@dataclass(frozen=True)
class Solution:
    value: float
    spans: tuple[Span, ...]


@dataclass(frozen=True)
class SearchResult:
    """Best elementary spans found (None: none found), their DP value and a proven lower bound."""

    spans: tuple[Span, ...] | None
    value: float
    lower_bound: float
    optimal: bool
    passes: int
    critical: tuple[int, ...] = ()  # the critical set the search ended with (to warm-start the next)
    work: int = 0  # pass_work spent


def pass_work(cm: CostModel, num_critical: int) -> int:
    """Upper bound on the array elements one `solve` pass touches (the search budget's unit)."""
    L = cm.num_layers
    return (1 << num_critical) * cm.num_peers * L * (L + 1) // 2


def window_starts(cm: CostModel, stage: np.ndarray, cap: float) -> np.ndarray:
    """(L+1, P): the smallest start a such that span [a, b) fits peer Y (memory, and cap)."""
    L = cm.num_layers
    need = cm.params[None, :] - cm.mem[:, None]  # (P, L+1): params[a] must be >= params[b] - mem
    lo = np.stack([np.searchsorted(cm.params, need[y], side="left") for y in range(cm.num_peers)])
    if np.isfinite(cap):
        lo_cap = np.stack([np.searchsorted(stage[y], stage[y] - cap, side="left") for y in range(cm.num_peers)])
        lo = np.maximum(lo, lo_cap)
    return np.ascontiguousarray(np.minimum(lo, np.arange(L + 1)[None, :]).T)


class _Pass:
    """One DP pass; arrays are indexed [boundary, subset, peer].

    `live` holds, per (start a, subset, peer), the value a span starting at a is compared by
    (sum: arrival minus cumulative stage; max: arrival); entries whose span would no longer fit
    the peer are set to inf as b grows (window starts only move right), so the window needs no
    mask.
    """

    def __init__(self, cm: CostModel, mode: Mode, critical: Sequence[int], cap: float) -> None:
        self.cm, self.mode, self.cap = cm, mode, cap
        L, P, ns = cm.num_layers, cm.num_peers, 1 << len(critical)
        self.bit = np.zeros(P, dtype=np.int64)
        for j, y in enumerate(critical):
            self.bit[y] = 1 << j
        self.critical = list(critical)
        self.noncrit = self.bit == 0
        self.all_noncrit = not critical
        # critical peer y_j starting at a moves subset s (without bit j) to s | bit j
        src = [np.array([s for s in range(ns) if not s & (1 << j)], dtype=np.int64) for j in range(len(critical))]
        self.crit_src = np.concatenate(src) if src else np.zeros(0, dtype=np.int64)
        self.crit_dst = np.concatenate([s | (1 << j) for j, s in enumerate(src)]) if src else self.crit_src
        self.crit_y = np.concatenate([np.full(len(s), y) for s, y in zip(src, critical)]) if src else self.crit_src
        self.stage_t = np.ascontiguousarray(cm.stage.T)  # (L+1, P)
        self.lo = window_starts(cm, cm.stage, cap)
        self.lo_min = self.lo.min(axis=1)
        self.expiry = _expiry_events(self.lo)
        self.order = np.argsort(cm.inv_up, kind="stable")
        self.u_sorted = cm.inv_up[self.order]
        self.pos = np.searchsorted(self.u_sorted, cm.inv_down, side="right")
        self.capped = bool(np.isfinite(cap))
        # per-boundary link terms, precomputed once: (L+1, P)
        self.bits_up = cm.bits[:, None] * cm.inv_up[None, :]
        self.bits_down = cm.bits[:, None] * cm.inv_down[None, :]
        self.bits_up_sorted = self.bits_up[:, self.order]
        self.lat_sorted = cm.lat[self.order]
        self.down_lat = self.bits_down + cm.lat[None, :]
        self.x_bad = self.bits_up_sorted > cap  # senders whose uplink breaks the cap (sorted order)
        self.y_bad = self.bits_down > cap
        self.IN = np.full((L + 1, ns, P), INF)
        self.V = np.full((L + 1, ns, P), INF)
        self.live = np.full((L + 1, ns, P), INF)
        self.pre = np.full((ns, P + 1), INF)
        self.suf = np.full((ns, P + 1), INF)

    def run(self) -> Solution | None:
        cm = self.cm
        first = cm.bits[0] * np.maximum(cm.src_inv_up, cm.inv_down)
        R = np.full(self.IN.shape[1:], INF)
        if self.mode == "sum":
            R[0] = np.where(first <= self.cap, cm.src_lat + cm.lat + first, INF)
        else:
            R[0] = first
        self._set_in(0, R)
        for b in range(1, cm.num_layers + 1):
            self._window(b)
            if b < cm.num_layers:
                self._set_in(b, self._transfer(b))
        return self._finish()

    def _set_in(self, a: int, R: np.ndarray) -> None:
        IN = self.IN[a]
        if self.all_noncrit:
            IN[:] = R
        else:
            IN[:, self.noncrit] = R[:, self.noncrit]
            IN[self.crit_dst, self.crit_y] = R[self.crit_src, self.crit_y]
        if self.mode == "sum":
            np.subtract(IN, self.stage_t[a], out=self.live[a])
        else:
            self.live[a] = IN

    def _transfer(self, a: int) -> np.ndarray:
        """(ns, P): best cost of arriving at boundary a on each peer Y, from any X at boundary a."""
        V = self.V[a]
        if self.mode == "max":
            W = np.min(np.maximum(V, self.bits_up[a]), axis=1)
            return np.maximum(W[:, None], self.bits_down[a])
        As = V[:, self.order]
        As += self.lat_sorted
        if self.capped:
            As[:, self.x_bad[a]] = INF
        np.minimum.accumulate(As, axis=1, out=self.pre[:, 1:])
        As += self.bits_up_sorted[a]
        np.minimum.accumulate(As[:, ::-1], axis=1, out=self.suf[:, -2::-1])
        R = np.minimum(self.pre[:, self.pos] + self.down_lat[a], self.suf[:, self.pos] + self.cm.lat)
        if self.capped:
            R[:, self.y_bad[a]] = INF
        return R

    def _window(self, b: int) -> None:
        """V[b] = best over span starts a of (arrive at a) then compute [a, b) on the same peer."""
        a_idx, y_idx = self.expiry[b]
        if len(a_idx):
            self.live[a_idx, :, y_idx] = INF
        a0 = int(self.lo_min[b])
        if a0 >= b:  # no peer can end a span at b
            return
        if self.mode == "sum":
            np.add(self.live[a0:b].min(axis=0), self.stage_t[b], out=self.V[b])
        else:
            span = self.stage_t[b] - self.stage_t[a0:b]
            self.V[b] = np.maximum(self.live[a0:b], span[:, None, :]).min(axis=0)

    def _start(self, b: int, s: int, y: int) -> int:
        """The span start that achieved V[b, s, y] (recomputed: first minimum)."""
        a = np.arange(int(self.lo[b, y]), b)
        st = self.stage_t[:, y]
        if self.mode == "sum":
            cand = self.IN[a, s, y] - st[a]
        else:
            cand = np.maximum(self.IN[a, s, y], st[b] - st[a])
        return int(a[int(cand.argmin())])

    def _finish(self) -> Solution | None:
        cm, L = self.cm, self.cm.num_layers
        bw = cm.bits[L] * np.maximum(cm.inv_up, cm.req_inv_down)
        if self.mode == "sum":
            tot = np.where(bw <= self.cap, self.V[L] + cm.lat[None, :] + cm.req_lat + bw[None, :], INF)
        else:
            tot = np.maximum(self.V[L], bw[None, :])
        s, y = np.unravel_index(int(tot.argmin()), tot.shape)
        if not np.isfinite(tot[s, y]):
            return None
        return Solution(float(tot[s, y]), self._path(int(s), int(y)))

    def _path(self, s: int, y: int) -> tuple[Span, ...]:
        cm, spans, b = self.cm, [], self.cm.num_layers
        while True:
            a = self._start(b, s, y)
            spans.append((y, a, b))
            if a == 0:
                return tuple(reversed(spans))
            s = s & ~int(self.bit[y])
            bw = cm.bits[a] * np.maximum(cm.inv_up, cm.inv_down[y])
            if self.mode == "sum":
                cost = np.where(bw <= self.cap, self.V[a, s] + cm.lat + cm.lat[y] + bw, INF)
            else:
                cost = np.maximum(self.V[a, s], bw)
            y, b = int(cost.argmin()), a


def _expiry_events(lo: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per b, the (start a, peer y) pairs whose span can no longer fit from b on (lo[b, y] > a)."""
    Lp1, P = lo.shape
    starts = np.arange(Lp1)
    # first b at which lo[b, y] > a; lo is non-decreasing in b for every peer
    exp = np.stack([np.searchsorted(lo[:, y], starts, side="right") for y in range(P)], axis=1)
    a_idx, y_idx = np.nonzero(exp < Lp1)
    when = exp[a_idx, y_idx]
    order = np.argsort(when, kind="stable")
    a_idx, y_idx, when = a_idx[order], y_idx[order], when[order]
    cuts = np.searchsorted(when, np.arange(Lp1 + 1))
    return [(a_idx[cuts[b]:cuts[b + 1]], y_idx[cuts[b]:cuts[b + 1]]) for b in range(Lp1)]


def solve(cm: CostModel, mode: Mode, critical: Sequence[int] = (), cap: float = INF) -> Solution | None:
    """Optimum of the relaxation where only `critical` peers are limited to one span."""
    if cm.num_peers == 0:
        return None
    return _Pass(cm, mode, critical, cap).run()


def peer_bounds(cm: CostModel, mode: Mode, cap: float = INF) -> np.ndarray:
    """(P,) lower bound on the objective of any plan that uses each peer (inf: none can).

    Forward relaxed DP (arrive at boundary a on Y) plus the same DP over the reversed chain
    (Y's span from a onwards and everything after it): a peer whose bound exceeds a known plan's
    value can be dropped without losing the optimum.
    """
    L = cm.num_layers
    fwd, bwd = _Pass(cm, mode, (), cap), _Pass(reversed_model(cm), mode, (), cap)
    fwd.run()
    bwd.run()
    arrive = fwd.IN[:L, 0, :]  # (L, P) at boundaries 0..L-1
    rest = bwd.V[L - np.arange(L), 0, :]  # (L, P): span from a to the end, then the result home
    total = arrive + rest if mode == "sum" else np.maximum(arrive, rest)
    return total.min(axis=0)


def repeated(spans: Sequence[Span]) -> list[int]:
    seen: set[int] = set()
    rep = {y for y, _, _ in spans if y in seen or seen.add(y)}  # type: ignore[func-returns-value]
    return sorted(rep)


def dssr(cm: CostModel, mode: Mode, *, cap: float = INF, budget: int, max_critical: int,
         critical: Sequence[int] = ()) -> SearchResult:
    """Exact search by growing the critical set; falls back to a repaired path past the budget.

    `budget` caps the summed `pass_work` of all passes (the first pass always runs);
    `critical` warm-starts the critical set (e.g. with the previous search's).
    """
    crit = list(critical)[:max_critical]
    lower, passes, spent = 0.0, 0, pass_work(cm, len(crit))
    while True:
        sol = solve(cm, mode, crit, cap)
        passes += 1
        if sol is None:  # relaxation infeasible: proven
            return SearchResult(None, INF, INF, True, passes, tuple(crit), spent)
        lower = max(lower, sol.value)
        rep = [y for y in repeated(sol.spans) if y not in crit]
        if not rep:
            return SearchResult(sol.spans, sol.value, sol.value, True, passes, tuple(crit), spent)
        grown = crit + rep
        if len(grown) > max_critical or spent + pass_work(cm, len(grown)) > budget:
            res = _repair(cm, mode, cap, sol.spans, lower, passes)
            return replace(res, critical=tuple(crit), work=spent + res.passes * pass_work(cm, 0))
        spent += pass_work(cm, len(grown))
        crit = grown


def _repair(cm: CostModel, mode: Mode, cap: float, spans: tuple[Span, ...], lower: float,
            passes: int) -> SearchResult:
    """Rolling repair: keep the path up to its first repeated peer, re-solve the rest without the
    peers already used, and repeat. Each round fixes at least one more hop."""
    fixed: list[Span] = []
    used: set[int] = set()
    while True:
        for y, a, b in spans:
            if y in used:
                break
            fixed.append((y, a, b))
            used.add(y)
        a = fixed[-1][2]
        if a == cm.num_layers:
            value = cm.evaluate(fixed, "latency")
            return SearchResult(tuple(fixed), value.predicted_latency_s if mode == "sum" else value.bottleneck_s,
                                lower, False, passes)
        keep = [i for i in range(cm.num_peers) if i not in used]
        sol = solve(suffix(cm, a, fixed[-1][0], keep), mode, (), cap) if keep else None
        passes += 1
        if sol is None:
            return SearchResult(None, INF, lower, False, passes)
        spans = tuple((keep[y], s + a, t + a) for y, s, t in sol.spans)
