"""The exact throughput search on few peers (core/few_peers.py) against brute force.

Brute force enumerates allowed spans straight from the cost model's arrays and every chain of
distinct peers (helpers shared with test_planner_threshold.py), so each piece is checked from
first principles: the span costs, the counting bound, the decider (also across smaller bounds
with the failed states carried over, as the descent does), the re-cut DP, and solve_few with
and without budget.
"""

from __future__ import annotations

import itertools
import math
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pinfer.core import bottleneck, few_peers
from p2pinfer.core.costs import build_costs
from p2pinfer.core.few_peers import Decider, counting_bound, solve_few, span_costs
from p2pinfer.core.plan import PlannerOptions
from p2pinfer.core.planner import plan
from p2pinfer.core.threshold import CAP_SLACK

from .planner_brute import brute_force, random_instance
from .test_planner_threshold import allowed, best_bottleneck, chains, instance, thresholds

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def full(cm) -> int:
    return (1 << cm.num_peers) - 1


def spans_max(sc, chain) -> float:
    """The largest span cost of a chain (what the decider bounds; the floor is apart)."""
    return max(float(sc.cost[b, y, a]) for y, a, b in chain)


def best_spans_max(cm, sc) -> float:
    return min((spans_max(sc, c) for c in chains(cm, math.inf)), default=math.inf)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_span_costs_are_the_allowed_spans(seed: int) -> None:
    """c(y, a, b) <= t exactly when the span is allowed at t (stage, both link parts, memory);
    every chain's value is max(floor, its span costs) = the cost model's bottleneck."""
    cm = instance(seed)
    if cm.num_peers == 0:
        return
    sc = span_costs(cm)
    L = cm.num_layers
    for t in thresholds(cm, seed):
        tt = t * (1 + CAP_SLACK)
        for y in range(cm.num_peers):
            for a in range(L):
                for b in range(a + 1, L + 1):
                    inner = tt >= max(cm.bits[0] * cm.src_inv_up if a == 0 else 0.0,
                                      cm.bits[L] * cm.req_inv_down if b == L else 0.0)
                    assert (sc.cost[b, y, a] <= tt and inner) == allowed(cm, t, y, a, b), (t, y, a, b)
    for c in itertools.islice(chains(cm, math.inf), 50):
        assert math.isclose(few_peers.chain_value(sc, c), cm.evaluate(c, "throughput").bottleneck_s, rel_tol=1e-12)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_counting_bound_is_a_lower_bound(seed: int) -> None:
    cm = instance(seed)
    if cm.num_peers == 0:
        return
    bound, best = counting_bound(span_costs(cm)), best_bottleneck(cm)
    if math.isinf(bound):
        assert math.isinf(best)
    assert bound <= best * (1 + 1e-12)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_decider_decides_exactly(seed: int) -> None:
    """With budget to spare: a chain within t iff brute force has one, and it is within t."""
    cm = instance(seed)
    if cm.num_peers == 0:
        return
    sc = span_costs(cm)
    best = best_spans_max(cm, sc)
    for t in thresholds(cm, seed) + ([best, best * (1 - 1e-6)] if math.isfinite(best) else []):
        chain, proven = Decider(sc, t).search(10**6, full(cm))
        assert proven and (chain is not None) == (best <= t), (t, best)
        if chain is not None:
            assert spans_max(sc, chain) <= t
            cm.evaluate(chain, "throughput")  # a valid chain (raises otherwise)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_failed_states_carry_over_to_smaller_bounds(seed: int) -> None:
    """The descent's reuse is sound: after deciding t1, deciding t2 < t1 with the same failed
    states (re-targeted or recompiled) still agrees with brute force."""
    cm = instance(seed, max_layers=7, max_peers=5)
    if cm.num_peers == 0:
        return
    sc = span_costs(cm)
    values = sorted({spans_max(sc, c) for c in itertools.islice(chains(cm, math.inf), 300)})
    for t1, t2 in zip(values[::-1], values[-2::-1]):
        dec = Decider(sc, t1)
        dec.search(10**6, full(cm))
        t2 = t2 * (1 - 1e-12)
        exists = best_spans_max(cm, sc) <= t2
        for second in (Decider(sc, t2, dec.failed), dec):
            if second is dec:
                dec.retarget(t2)
            chain, proven = second.search(10**6, full(cm))
            assert proven and (chain is not None) == exists, (t1, t2)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_recut_is_the_best_cut_for_the_peer_order(seed: int) -> None:
    cm = instance(seed, max_layers=7, max_peers=4)
    if cm.num_peers == 0:
        return
    sc, L = span_costs(cm), cm.num_layers
    for chain in itertools.islice(chains(cm, math.inf), 20):
        order = [y for y, _, _ in chain]
        brute = math.inf
        for k in range(1, len(order) + 1):
            for peers in itertools.combinations(order, k):  # a subsequence, in order
                for cuts in itertools.combinations(range(1, L), k - 1):
                    bounds = (0, *cuts, L)
                    spans = [(y, a, b) for y, a, b in zip(peers, bounds, bounds[1:])]
                    if all(math.isfinite(sc.cost[b, y, a]) for y, a, b in spans):
                        brute = min(brute, few_peers.chain_value(sc, spans))
        got, value = few_peers.recut(sc, list(chain))
        assert math.isclose(value, brute, rel_tol=1e-12)
        assert math.isclose(few_peers.chain_value(sc, got), value, rel_tol=1e-12)
        assert [y for y, _, _ in got] == [y for y in order if y in {z for z, _, _ in got}]


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_solve_few_is_exact(seed: int) -> None:
    cm = instance(seed, max_layers=8, max_peers=5)
    if cm.num_peers == 0:
        return
    res, best = solve_few(cm, 10**6), best_bottleneck(cm)
    assert res.decided
    if math.isinf(best):
        assert res.best is None and math.isinf(res.lower_bound)
        return
    assert math.isclose(cm.evaluate(res.best, "throughput").bottleneck_s, best, rel_tol=1e-9)
    assert res.lower_bound <= best * (1 + 1e-9)
    if res.few_hops is not None:
        assert cm.evaluate(res.few_hops, "throughput").bottleneck_s <= res.hi * (1 + 2 * CAP_SLACK)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), budget=st.integers(0, 30))
def test_out_of_budget_is_honest_and_the_planner_falls_back(seed: int, budget: int) -> None:
    """With a few nodes only, solve_few claims nothing false; the planner then finishes with the
    general search (seeded with what was found and proved) and is still exact."""
    rng = random.Random(seed)
    profile, snap = random_instance(rng, 9, 5)
    options = PlannerOptions()
    ref = brute_force(profile, snap, options)
    if ref is None:
        return
    cm = build_costs(profile, snap, options)
    res = solve_few(cm, budget)
    assert res.lower_bound <= ref.best_bottleneck * (1 + 1e-9)
    if res.best is not None:
        assert cm.evaluate(res.best, "throughput").bottleneck_s >= ref.best_bottleneck * (1 - 1e-9)
    if res.decided:
        assert math.isclose(res.hi, ref.best_bottleneck, rel_tol=1e-9)
    saved = bottleneck._FEW_NODES
    bottleneck._FEW_NODES = budget
    try:
        p = plan(profile, snap, objective="throughput", options=options)
    finally:
        bottleneck._FEW_NODES = saved
    assert p.optimal and math.isclose(p.bottleneck_s, ref.best_bottleneck, rel_tol=1e-9)


def test_bench_sized_instances_use_the_few_peers_search() -> None:
    """50 layers on 10 peers (the benchmark's small size) takes this path; 100 peers does not."""
    from benchmarks.bench_planner import instances_of

    (profile, snap), = instances_of(50, 10, 1, 60)
    cm = build_costs(profile, snap, PlannerOptions())
    assert few_peers.fits(cm)
    res = solve_few(cm, 30_000)
    assert res.decided and res.best is not None
    (profile, snap), = instances_of(20, 100, 1, 120)
    assert not few_peers.fits(build_costs(profile, snap, PlannerOptions()))
