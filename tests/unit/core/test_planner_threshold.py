"""The throughput threshold oracle (core/threshold.py, core/flow_lp.py) against brute force.

Brute force here enumerates allowed spans straight from the cost model's arrays (stage, params,
bits, 1/up, 1/down) and every chain of distinct peers, so `at`, the proofs, the chain search and
the LP are each checked against first principles on small random instances.
"""

from __future__ import annotations

import math
import random

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pinfer.core.bottleneck import candidates_between, trivial_lower_bound
from p2pinfer.core.chain_dp import solve
from p2pinfer.core.costs import CostModel, build_costs
from p2pinfer.core.flow_lp import solve_flow
from p2pinfer.core.plan import PlannerOptions
from p2pinfer.core.threshold import (CAP_SLACK, ChainSearch, at, can_finish, capacity_short, proven_infeasible,
                                     relaxed_reach, span_capacity)

from .planner_brute import random_instance

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def allowed(cm: CostModel, t: float, y: int, a: int, b: int) -> bool:
    """Span [a, b) on peer y keeps its stage and both transfers' own parts within t."""
    tt, L = t * (1 + CAP_SLACK), cm.num_layers
    up_in = cm.src_inv_up if a == 0 else 0.0
    down_out = cm.req_inv_down if b == L else 0.0
    return (a < b and cm.fits(y, a, b) and cm.stage[y, b] - cm.stage[y, a] <= tt
            and cm.bits[a] * max(up_in, cm.inv_down[y]) <= tt and cm.bits[b] * max(cm.inv_up[y], down_out) <= tt)


def chains(cm: CostModel, t: float, a: int = 0, used: frozenset[int] = frozenset()):
    """Every chain of distinct peers within t covering [a, L)."""
    if a == cm.num_layers:
        yield ()
        return
    for y in range(cm.num_peers):
        if y in used:
            continue
        for b in range(a + 1, cm.num_layers + 1):
            if allowed(cm, t, y, a, b):
                for rest in chains(cm, t, b, used | {y}):
                    yield ((y, a, b), *rest)


def instance(seed: int, max_layers: int = 7, max_peers: int = 4) -> CostModel:
    profile, snap = random_instance(random.Random(seed), max_layers, max_peers)
    return build_costs(profile, snap, PlannerOptions(amortize_requests=[None, 3][seed % 2]))


def thresholds(cm: CostModel, seed: int) -> list[float]:
    """Interesting T: every term value of some chains, their neighbours, and random ones."""
    rng = random.Random(seed)
    vals = sorted({float(cm.evaluate(c, "throughput").bottleneck_s) for c in _some_chains(cm)})
    out = [v * f for v in vals[:4] for f in (1 - 1e-6, 1.0)]
    lo = trivial_lower_bound(cm)
    return out + ([lo * rng.uniform(0.5, 20) for _ in range(3)] if math.isfinite(lo) else [1e-3, 1.0])


def _some_chains(cm: CostModel, limit: int = 200) -> list[tuple]:
    out = []
    for c in chains(cm, math.inf):
        out.append(c)
        if len(out) >= limit:
            break
    return out


def best_bottleneck(cm: CostModel) -> float:
    vals = [cm.evaluate(c, "throughput").bottleneck_s for c in chains(cm, math.inf)]
    return min(vals) if vals else math.inf


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_chain_search_decides_exactly(seed: int) -> None:
    """With budget to spare the search is exact: a chain within T iff brute force has one."""
    cm = instance(seed)
    if cm.num_peers == 0:
        return
    best = best_bottleneck(cm)
    for t in thresholds(cm, seed) + ([best, best * (1 - 1e-6)] if math.isfinite(best) else []):
        th = at(cm, t)
        spans, proven = ChainSearch(cm, th).run(10**6)
        exists = math.isfinite(best) and best <= t * (1 + CAP_SLACK)
        assert proven
        assert (spans is not None) == exists, (t, best)
        if spans is not None:
            assert cm.evaluate(spans, "throughput").bottleneck_s <= t * (1 + CAP_SLACK) * (1 + 1e-12)
        if proven_infeasible(cm, th):
            assert not exists  # the proofs are sound


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_relaxed_reach_and_finish_match_repeating_brute_force(seed: int) -> None:
    cm = instance(seed)
    if cm.num_peers == 0:
        return
    L = cm.num_layers
    relaxed = solve(cm, "max")
    for t in thresholds(cm, seed):
        th = at(cm, t)
        # boundaries reachable from 0 (forward) and that reach L (backward), peers reusable
        fwd = [True] + [False] * L
        for b in range(1, L + 1):
            fwd[b] = any(fwd[a] and allowed(cm, t, y, a, b) for a in range(b) for y in range(cm.num_peers))
        bwd = [False] * L + [True]
        for a in range(L - 1, -1, -1):
            bwd[a] = any(bwd[b] and allowed(cm, t, y, a, b) for b in range(a + 1, L + 1) for y in range(cm.num_peers))
        assert relaxed_reach(th).tolist() == fwd
        assert can_finish(th).tolist() == bwd
        # and the relaxed min-max DP of chain_dp agrees on the end
        assert fwd[L] == (relaxed is not None and relaxed.value <= t * (1 + CAP_SLACK)), (t, relaxed)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_span_capacity_is_the_best_allowed_span(seed: int) -> None:
    cm = instance(seed)
    if cm.num_peers == 0:
        return
    rng = np.random.default_rng(seed)
    w = rng.uniform(0, 5, cm.num_layers)
    for t in thresholds(cm, seed):
        th = at(cm, t)
        got = span_capacity(th, w)
        for y in range(cm.num_peers):
            spans = [w[a:b].sum() for a in range(cm.num_layers) for b in range(a + 1, cm.num_layers + 1)
                     if allowed(cm, t, y, a, b)]
            assert math.isclose(got[y], max(spans, default=0.0), rel_tol=1e-9, abs_tol=1e-12)
            assert th.alive[y] == bool(spans)
        if capacity_short(cm, th):
            assert best_bottleneck(cm) > t * (1 + CAP_SLACK)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_flow_lp_is_a_relaxation(seed: int) -> None:
    """An infeasible LP proves T out of reach; a feasible T always has a feasible LP."""
    cm = instance(seed, max_layers=6, max_peers=4)
    if cm.num_peers == 0:
        return
    best = best_bottleneck(cm)
    for t in thresholds(cm, seed):
        got = solve_flow(cm, at(cm, t))
        assert got is not None  # scipy is installed here
        exists = math.isfinite(best) and best <= t * (1 + CAP_SLACK)
        if exists:
            assert got[0]
        if not got[0]:
            assert not exists


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_candidates_between_lists_every_term_value(seed: int) -> None:
    cm = instance(seed, max_layers=6)
    if cm.num_peers == 0:
        return
    L = cm.num_layers
    terms = {float(cm.stage[y, b] - cm.stage[y, a]) for y in range(cm.num_peers)
             for a in range(L) for b in range(a + 1, L + 1)}
    terms |= {float(cm.bits[a] * u) for a in range(L + 1) for u in (*cm.inv_up, *cm.inv_down)}
    terms |= {float(cm.bits[0] * cm.src_inv_up), float(cm.bits[L] * cm.req_inv_down)}
    vals = sorted(terms)
    lo, hi = vals[len(vals) // 4], vals[3 * len(vals) // 4]
    got = candidates_between(cm, lo, hi, 10**6)
    assert got is not None
    assert got.tolist() == [v for v in vals if lo < v < hi]
    assert candidates_between(cm, lo, hi, 0) is None or len(got) == 0


def test_chain_search_budget_says_undecided() -> None:
    """Out of nodes, the search claims nothing (no chain, not proven)."""
    for seed in range(50):
        cm = instance(seed, max_layers=7, max_peers=4)
        if cm.num_peers < 2:
            continue
        best = best_bottleneck(cm)
        if not math.isfinite(best):
            continue
        th = at(cm, best)
        spans, proven = ChainSearch(cm, th).run(0)
        assert spans is None and not proven
        return
    raise AssertionError("no instance with a chain")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_restarts_are_deterministic_and_sound(seed: int) -> None:
    """Perturbed restarts (tiny budgets) give the same answer twice and never claim falsely;
    the trivial bound is a bound."""
    cm = instance(seed, max_layers=8, max_peers=5)
    if cm.num_peers == 0:
        return
    best = best_bottleneck(cm)
    assert trivial_lower_bound(cm) <= best * (1 + 1e-12)
    for t in thresholds(cm, seed):
        th = at(cm, t)
        first = ChainSearch(cm, th).run(3, restarts=4)
        assert ChainSearch(cm, th).run(3, restarts=4) == first
        spans, proven = first
        exists = math.isfinite(best) and best <= t * (1 + CAP_SLACK)
        if spans is not None:
            assert cm.evaluate(spans, "throughput").bottleneck_s <= t * (1 + CAP_SLACK) * (1 + 1e-12)
        elif proven:
            assert not exists
