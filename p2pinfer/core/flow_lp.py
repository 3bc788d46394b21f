"""The flow LP of a bottleneck threshold: a stronger proof than counting, and a guide for search.

At threshold T (core/threshold.py) a chain is a path from boundary 0 to L over arcs (peer y,
a -> b), one per allowed span, using each peer at most once. Relaxing "path" to a unit flow with
every peer's arcs sharing capacity 1 gives an LP: if it is infeasible, so is T.

Solved here in its *window* form (`solve_flow`): spans may also overlap (free arcs b -> b-1), so
of a peer's spans from a start only the furthest-reaching one matters, and of the starts with the
same furthest end only the earliest ("windows": about one arc per (peer, start) instead of one per
(peer, start, end), and a much smaller LP; HiGHS took ~100 ms per LP on the 100-layer / 100-peer
benchmark's full arc sets, ~15-40 ms on the windows). Its Farkas certificate is a per-layer weight
w >= 0 with sum(w) > sum over peers of the heaviest window: capacity counting with the best
non-negative weights. The certificate is *checked here* on every window (exact sums, relative
slack 1e-9) before T is called infeasible, so the proof does not rest on the solver's tolerances.
On the benchmark's instances the window LP's value equalled the full arc LP's (its dual allows
weights of any sign, `solve_full`, kept as the fallback when the certificate does not check).
A feasible LP is nearly integral in practice; its arc values order the chain search's moves.

Solved with scipy's HiGHS when scipy is importable; without it these functions answer None.
"""

from __future__ import annotations

import numpy as np

from .costs import CostModel
from .threshold import Threshold, _last_true

MAX_ARCS = 400_000  # larger LPs are not attempted (time)
_SLACK = 1e-9  # a certificate must beat the windows' capacity by this much (relative)

Guide = tuple[np.ndarray, np.ndarray]


def arcs(th: Threshold) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(peer, start, end) of every span allowed at the threshold."""
    Lp1 = th.lo.shape[0]
    aa, bb = np.triu_indices(Lp1, k=1)
    ys, as_, bs = [], [], []
    for y in np.flatnonzero(th.alive):
        ok = th.start_ok[aa, y] & th.end_ok[bb, y] & (th.lo[bb, y] <= aa)
        ys.append(np.full(int(ok.sum()), y))
        as_.append(aa[ok])
        bs.append(bb[ok])
    if not ys:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(ys), np.concatenate(as_), np.concatenate(bs)


def windows(th: Threshold) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(peer, start, end) of every maximal allowed span: per peer and start the furthest allowed
    end, and of the starts sharing that end only the earliest (every allowed span lies in one)."""
    Lp1 = th.lo.shape[0]
    far = np.take_along_axis(_last_true(th.end_ok), np.clip(th.hi_end, 0, Lp1 - 1), axis=0)  # (L+1, P)
    a_idx = np.arange(Lp1)[:, None]
    ok = th.start_ok & (far > a_idx)
    ys, as_ = np.nonzero(ok.T)  # grouped by peer, starts ascending
    es = far[as_, ys]
    # furthest ends are non-decreasing in the start: keep a start unless the previous kept one
    # of the same peer reaches as far
    keep = np.ones(len(ys), dtype=bool)
    keep[1:] = (ys[1:] != ys[:-1]) | (es[1:] != es[:-1])
    return ys[keep].astype(np.int64), as_[keep].astype(np.int64), es[keep].astype(np.int64)


def certifies(w: np.ndarray, y: np.ndarray, a: np.ndarray, e: np.ndarray) -> bool:
    """True when weights w >= 0 (per layer) prove the windows cannot cover the chain: every
    chain's spans lie in windows of distinct peers and cover each layer once, so sum(w) is at most
    the sum over peers of their heaviest window's weight."""
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        return False
    total = float(w.sum())
    if total <= 0:
        return False
    cum = np.concatenate([[0.0], np.cumsum(w)])
    best = np.zeros(int(y.max()) + 1 if len(y) else 0)
    np.maximum.at(best, y, cum[e] - cum[a])
    return float(best.sum()) < total * (1 - _SLACK)


def solve_flow(cm: CostModel, th: Threshold) -> tuple[bool, Guide | None] | None:
    """(feasible, guide) for the flow LP at th; None when it cannot be solved here.

    guide is two (L+1, P) arrays: the LP flow leaving boundary a on peer y (higher: try first)
    and the end of that peer's heaviest arc from a (-1: none). Infeasible only with a checked
    certificate; otherwise the full arc LP (`solve_full`) decides.
    """
    got = solve_windows(cm, th)
    return None if got is None else got[:2]


def solve_windows(cm: CostModel, th: Threshold) -> tuple[bool, Guide | None, np.ndarray | None] | None:
    """`solve_flow` plus, when infeasible by the window LP, its checked certificate w (per-layer
    weights; `certifies_at` tells up to which larger T the same w still proves infeasibility)."""
    try:
        import scipy.sparse as sp
        from scipy.optimize import linprog
    except ImportError:
        return None
    y, a, e = windows(th)
    n, L, P = len(y), cm.num_layers, cm.num_peers
    if n == 0:
        return False, None, None
    if n > MAX_ARCS:
        return None
    # max F: window arcs a -> e (peer capacity 1), free back arcs l -> l-1, F out of 0 into L
    back = np.arange(1, L + 1)
    m = len(back)
    cols = np.arange(n + m + 1)
    rows = np.concatenate([e, a, back - 1, back, [0, L]])
    col_of = np.concatenate([cols[:n], cols[:n], cols[n:n + m], cols[n:n + m], [n + m, n + m]])
    vals = np.concatenate([np.ones(n), -np.ones(n), np.ones(m), -np.ones(m), [1.0, -1.0]])
    eq = sp.csc_matrix((vals, (rows, col_of)), shape=(L + 1, n + m + 1))
    cap = sp.csc_matrix((np.ones(n), (y, cols[:n])), shape=(P, n + m + 1))
    c = np.zeros(n + m + 1)
    c[-1] = -1.0
    res = linprog(c, A_ub=cap, b_ub=np.ones(P), A_eq=eq, b_eq=np.zeros(L + 1), bounds=(0, None),
                  method="highs-ipm", options={"presolve": False})
    if res.status == 0 and -res.fun < 1 - 1e-7:  # F < 1: the duals should certify it
        d = np.diff(np.asarray(res.eqlin.marginals, dtype=float))
        for w in (np.maximum(d, 0.0), np.maximum(-d, 0.0)):
            if certifies(w, y, a, e):
                return False, None, w
    if res.status != 0 or -res.fun < 1 - 1e-7:
        full = solve_full(cm, th)
        return None if full is None else (*full, None)
    x = np.asarray(res.x[:n]) / max(-res.fun, 1.0)
    return True, _guide(x, y, a, _cuts(x, a, e, L), L, P), None


def _cuts(x: np.ndarray, a: np.ndarray, e: np.ndarray, L: int) -> np.ndarray:
    """Where each window's flow really hands over: the flow runs back from the window's end to
    the start of a next window, so its span ends at the furthest start of a window in use (or L)
    within it; the chain search tries that end first (the window's own end is its furthest)."""
    starts = np.unique(np.concatenate([a[x > 1e-6], [L]]))
    pick = starts[np.maximum(np.searchsorted(starts, e, side="right") - 1, 0)]
    return np.where(pick > a, pick, e)


def certifies_at(th: Threshold, w: np.ndarray) -> bool:
    """True when the weights w prove that no chain is within th's T (see `certifies`)."""
    y, a, e = windows(th)
    return len(y) == 0 or certifies(w, y, a, e)


def _guide(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray, L: int, P: int) -> Guide:
    pref = np.zeros((L + 1, P))
    np.add.at(pref, (a, y), x)
    end = np.full((L + 1, P), -1, dtype=np.int64)
    for i in np.flatnonzero(x > 1e-6)[np.argsort(x[x > 1e-6], kind="stable")]:  # heaviest last wins
        end[a[i], y[i]] = b[i]
    return pref, end


def solve_full(cm: CostModel, th: Threshold) -> tuple[bool, Guide | None] | None:
    """The flow LP over every allowed arc (its dual: counting with weights of any sign); decided
    by HiGHS's status (feasibility tolerance 1e-7)."""
    try:
        import scipy.sparse as sp
        from scipy.optimize import linprog
    except ImportError:
        return None
    y, a, b = arcs(th)
    n, L, P = len(y), cm.num_layers, cm.num_peers
    if n == 0:
        return False, None
    if n > MAX_ARCS:
        return None
    idx = np.arange(n)
    # flow conservation: out of 0 is 1, into L is 1, in = out elsewhere
    eq = sp.csr_matrix((np.concatenate([np.ones(n), -np.ones(n)]), (np.concatenate([b, a]), np.concatenate([idx, idx]))),
                       shape=(L + 1, n))
    rhs = np.zeros(L + 1)
    rhs[0], rhs[L] = -1.0, 1.0
    cap = sp.csr_matrix((np.ones(n), (y, idx)), shape=(P, n))
    res = linprog(np.ones(n), A_ub=cap, b_ub=np.ones(P), A_eq=eq, b_eq=rhs, bounds=(0, 1), method="highs-ipm")
    if res.status == 2:
        return False, None
    if res.status != 0:
        return None
    return True, _guide(res.x, y, a, b, L, P)
