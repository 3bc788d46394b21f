"""The flow LP of a bottleneck threshold: a stronger proof than counting, and a guide for search.

At threshold T (core/threshold.py) a chain is a path from boundary 0 to L over arcs (peer y,
a -> b), one per allowed span, using each peer at most once. Relaxing "path" to a unit flow with
every peer's arcs sharing capacity 1 gives an LP: if it is infeasible, so is T. Its dual is the
counting bound with the best per-layer weights (any signs), so it is never weaker than
`capacity_short` and on many-hop instances much stronger. A feasible LP is nearly integral in
practice; its arc values order the chain search's moves.

Solved with scipy's HiGHS when scipy is importable; without it these functions answer None.
"""

from __future__ import annotations

import numpy as np

from .costs import CostModel
from .threshold import Threshold

MAX_ARCS = 400_000  # larger LPs are not attempted (time)


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


Guide = tuple[np.ndarray, np.ndarray]


def solve_flow(cm: CostModel, th: Threshold) -> tuple[bool, Guide | None] | None:
    """(feasible, guide) for the flow LP at th; None when it cannot be solved here.

    guide is two (L+1, P) arrays: the LP flow leaving boundary a on peer y (higher: try first)
    and the end of that peer's heaviest arc from a (-1: none).
    """
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
    x = res.x
    pref = np.zeros((L + 1, P))
    np.add.at(pref, (a, y), x)
    end = np.full((L + 1, P), -1, dtype=np.int64)
    for i in np.flatnonzero(x > 1e-6)[np.argsort(x[x > 1e-6], kind="stable")]:  # heaviest last wins
        end[a[i], y[i]] = b[i]
    return True, (pref, end)
