"""A proven upper bound on the total throughput of disjoint chains (core/replicas.py).

Any set of disjoint chains with rates r_i (chain i's peers each serve one span [a, b) at r_i)
satisfies, per peer y and layer l, with x[y, l] the rate at which y computes layer l:

- every layer is computed at the total rate R:       sum_y x[y, l] = R
- y's stages fit in its time:                          sum_l stage[y, l] * x[y, l] <= 1
- y's downlink carries the input of each span start:  sum_l bits[l] / down_y * s[y, l] <= 1,
  s[y, l] >= x[y, l] - x[y, l-1] (a span starting at l receives boundary l's bits)
- y's uplink carries the output of each span end:     sum_l bits[l+1] / up_y * e[y, l] <= 1,
  e[y, l] >= x[y, l] - x[y, l+1]
- x[y, l] = 0 where layer l alone exceeds y's memory.

(in a real plan x is r_i on y's span and 0 elsewhere, s and e are r_i at its ends.) Maximising R
over this LP is a relaxation (spans need not be contiguous, memory is counted per layer), so its
optimum bounds every replicated plan; so do the requester's shared links (`requester_caps`).
Solved with scipy's HiGHS within LP_SECONDS; above MAX_VARS variables (or out of time) the same LP
without the link rows (`compute_lp_bound`, up to MAX_COMPUTE_VARS), beyond that or without scipy
the weaker closed form
R <= sum_y rho_y / F (rho_y: y's fastest FLOP rate on any layer of the model, F: model FLOPs).
"""

from __future__ import annotations

import math

import numpy as np

from .costs import CostModel

MAX_VARS = 20_000  # 3 x layers x peers + 1 (100 layers x 100 peers: 11-25 s in HiGHS here; 50 x 30: 0.3 s)
MAX_COMPUTE_VARS = 60_000  # the compute-only LP (layers x peers + 1): 100 x 100 in 0.4 s, 50 x 200 in 0.3 s
LP_SECONDS = 5.0  # a safety net on a slow machine (the bound, never the plan, then depends on timing)


def requester_caps(cm: CostModel, requester_s_per_input: float = 0.0) -> dict[str, float]:
    """Requests/s the requester's shared access link (and CPU) can feed, whatever the chains."""
    L = cm.num_layers
    caps = {"requester uplink": 1.0 / (cm.bits[0] * cm.req_inv_up) if cm.bits[0] > 0 else math.inf,
            "requester downlink": 1.0 / (cm.bits[L] * cm.req_inv_down) if cm.bits[L] > 0 else math.inf}
    caps["requester cpu"] = 1.0 / requester_s_per_input if requester_s_per_input > 0 else math.inf
    return caps


def _stage_per_layer(cm: CostModel) -> tuple[np.ndarray, np.ndarray]:
    """(P, L) seconds of each layer on each peer, and (P, L) whether the layer alone fits."""
    stage = np.diff(cm.stage, axis=1)
    fits = np.diff(cm.params)[None, :] <= cm.mem[:, None]
    return stage, fits


def closed_form_bound(cm: CostModel) -> float:
    """R <= sum_y rho_y / F: each peer's FLOPs per second on its fastest layer of this model."""
    stage, fits = _stage_per_layer(cm)
    flops = cm.layer_flops
    total = float(flops.sum())
    if total <= 0:
        return math.inf
    ok = fits & (flops[None, :] > 0)
    if np.any(ok & (stage <= 0)):
        return math.inf
    rho = np.where(ok, flops[None, :] / np.where(stage > 0, stage, 1.0), 0.0).max(axis=1)
    return float(rho.sum()) / total


def lp_bound(cm: CostModel, time_limit_s: float = LP_SECONDS) -> float | None:
    """The LP of the module docstring (None: too big, out of time, or scipy/HiGHS unavailable or
    failing)."""
    P, L = cm.num_peers, cm.num_layers
    n = 1 + 3 * P * L
    if n > MAX_VARS:
        return None
    try:
        import scipy.sparse as sp
        from scipy.optimize import linprog
    except ImportError:
        return None
    stage, fits = _stage_per_layer(cm)
    X = 1 + np.arange(P * L).reshape(P, L)  # variable index of x[y, l]; s and e follow
    S, E = X + P * L, X + 2 * P * L
    peer_row = np.arange(P)[:, None] + np.zeros((1, L), dtype=np.int64)
    grid = np.arange(P * L).reshape(P, L)
    one, ones = np.ones((P, L)), np.ones((P, L - 1))
    # (row block offset, rows, columns, values); blocks: time, s >= dx, e >= -dx, downlink, uplink
    parts = [(0, peer_row, X, stage),
             (P, grid, X, one), (P, grid, S, -one), (P, grid[:, 1:], X[:, :-1], -ones),
             (P + P * L, grid, X, one), (P + P * L, grid, E, -one), (P + P * L, grid[:, :-1], X[:, 1:], -ones),
             (P + 2 * P * L, peer_row, S, cm.bits[None, :L] * cm.inv_down[:, None]),
             (2 * P + 2 * P * L, peer_row, E, cm.bits[None, 1:] * cm.inv_up[:, None])]
    m = 3 * P + 2 * P * L
    rows = np.concatenate([off + r.ravel() for off, r, _c, _v in parts])
    cols = np.concatenate([c.ravel() for _o, _r, c, _v in parts])
    vals = np.concatenate([np.broadcast_to(v, c.shape).ravel() for _o, _r, c, v in parts])
    b_ub = np.concatenate([np.ones(P), np.zeros(2 * P * L), np.ones(2 * P)])
    A_ub = sp.csr_matrix((vals, (rows, cols)), shape=(m, n))
    eq_rows = np.concatenate([np.broadcast_to(np.arange(L), (P, L)).ravel(), np.arange(L)])
    eq_cols = np.concatenate([X.ravel(), np.zeros(L, dtype=np.int64)])
    eq_vals = np.concatenate([np.ones(P * L), -np.ones(L)])  # sum_y x[y, l] - R = 0
    A_eq = sp.csr_matrix((eq_vals, (eq_rows, eq_cols)), shape=(L, n))
    upper = np.full(n, np.inf)
    upper[X.ravel()] = np.where(fits.ravel(), np.inf, 0.0)
    c = np.zeros(n)
    c[0] = -1.0
    res = linprog(c, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=np.zeros(L), bounds=np.stack([np.zeros(n), upper], axis=1),
                  method="highs", options={"time_limit": time_limit_s})
    if res.status == 3:  # unbounded: zero-cost layers and links
        return math.inf
    if res.status != 0:
        return None
    return float(-res.fun) * (1 + 1e-7) + 1e-12  # HiGHS' feasibility tolerance, on the safe side


def compute_lp_bound(cm: CostModel, time_limit_s: float = LP_SECONDS) -> float | None:
    """The LP without its link rows (a further relaxation, much cheaper): max R with
    sum_y x[y, l] = R and sum_l stage[y, l] x[y, l] <= 1 (None: too big, out of time, no scipy)."""
    P, L = cm.num_peers, cm.num_layers
    n = 1 + P * L
    if n > MAX_COMPUTE_VARS:
        return None
    try:
        import scipy.sparse as sp
        from scipy.optimize import linprog
    except ImportError:
        return None
    stage, fits = _stage_per_layer(cm)
    X = 1 + np.arange(P * L).reshape(P, L)
    A_ub = sp.csr_matrix((stage.ravel(), (np.repeat(np.arange(P), L), X.ravel())), shape=(P, n))
    eq_rows = np.concatenate([np.broadcast_to(np.arange(L), (P, L)).ravel(), np.arange(L)])
    eq_cols = np.concatenate([X.ravel(), np.zeros(L, dtype=np.int64)])
    A_eq = sp.csr_matrix((np.concatenate([np.ones(P * L), -np.ones(L)]), (eq_rows, eq_cols)), shape=(L, n))
    upper = np.full(n, np.inf)
    upper[X.ravel()] = np.where(fits.ravel(), np.inf, 0.0)
    c = np.zeros(n)
    c[0] = -1.0
    res = linprog(c, A_ub=A_ub, b_ub=np.ones(P), A_eq=A_eq, b_eq=np.zeros(L), bounds=np.stack([np.zeros(n), upper], axis=1),
                  method="highs", options={"time_limit": time_limit_s})
    if res.status == 3:
        return math.inf
    if res.status != 0:
        return None
    return float(-res.fun) * (1 + 1e-7) + 1e-12


def upper_bound(cm: CostModel, max_chains: int | None = None, best_chain_rps: float | None = None,
                reached: float = math.inf) -> float:
    """A proven bound on the summed rate of disjoint chains (before the requester's caps);
    with max_chains, also max_chains x a bound on the best single chain when one is given.
    `reached`: a total already achieved that is itself proven optimal (the requester's cap):
    the LP is then not needed."""
    if reached < math.inf:
        return reached
    found = lp_bound(cm)
    if found is None:
        found = compute_lp_bound(cm)
    bound = closed_form_bound(cm) if found is None else found
    if max_chains is not None and best_chain_rps is not None:
        bound = min(bound, max_chains * best_chain_rps)
    return bound
