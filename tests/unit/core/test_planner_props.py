"""Property tests: the planner's optimum equals brute force on random small instances."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pinfer.core.plan import PlannerOptions
from p2pinfer.core.planner import plan
from p2pinfer.errors import InfeasiblePlanError, PlanError

from .planner_brute import brute_force, random_instance

REL = 1e-9
OPTIONS = (PlannerOptions(), PlannerOptions(amortize_requests=None), PlannerOptions(amortize_requests=3))


def close(a: float, b: float) -> bool:
    return abs(a - b) <= REL * max(abs(a), abs(b), 1e-12)


def check_against_brute(seed: int, max_layers: int, max_peers: int) -> None:
    rng = random.Random(seed)
    profile, snap = random_instance(rng, max_layers, max_peers)
    options = OPTIONS[seed % len(OPTIONS)]
    ref = brute_force(profile, snap, options)
    if ref is None:
        for objective in ("latency", "throughput"):
            with pytest.raises(InfeasiblePlanError):
                plan(profile, snap, objective=objective, options=options)
        return
    lat = plan(profile, snap, objective="latency", options=options)
    assert lat.optimal and close(lat.predicted_latency_s, ref.best_latency), (lat, ref)
    assert close(lat.lower_bound, lat.predicted_latency_s)
    thr = plan(profile, snap, objective="throughput", options=options)
    assert thr.optimal and close(thr.bottleneck_s, ref.best_bottleneck), (thr, ref)
    # among bottleneck-optimal plans it is the fastest one for a single request
    assert close(thr.predicted_latency_s, ref.latency_at_best_bottleneck), (thr, ref)
    assert thr.lower_bound <= thr.bottleneck_s * (1 + REL)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_optimal_on_small_instances(seed: int) -> None:
    check_against_brute(seed, max_layers=7, max_peers=4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_optimal_up_to_twelve_layers_five_peers(seed: int) -> None:
    check_against_brute(seed, max_layers=12, max_peers=5)


@pytest.mark.parametrize("seed", range(6))
def test_plans_priced_by_brute_formulas(seed: int) -> None:
    """The numbers on the plan (not only its value) match an independent recomputation."""
    from .planner_brute import layer_seconds, transfer

    rng = random.Random(1000 + seed)
    profile, snap = random_instance(rng, 6, 4)
    options = PlannerOptions(amortize_requests=None)
    if brute_force(profile, snap, options) is None:
        return
    p = plan(profile, snap, objective="latency", options=options)
    peers = {q.peer_id: q for q in snap.peers}
    req, prev = snap.requester, None
    for hop in p.hops:
        y = peers[hop.peer_id]
        assert close(hop.compute_s, sum(layer_seconds(y, lay) for lay in profile.layers[hop.start:hop.stop]))
        nbytes = profile.input_bytes if hop.start == 0 else profile.layers[hop.start - 1].out_bytes
        src = (req.latency_ms, req.up_mbps) if prev is None else (prev.latency_ms, prev.up_mbps)
        assert close(hop.transfer_in_s, transfer(src[0], src[1], y.latency_ms, y.down_mbps, nbytes)[0])
        prev = y


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), max_critical=st.integers(0, 2))
def test_starved_search_stays_sound(seed: int, max_critical: int) -> None:
    """With almost no search budget the planner falls back to repair, baselines and peer
    pruning: its plan must still be valid, its lower bound a true bound, its `optimal` honest."""
    rng = random.Random(seed)
    profile, snap = random_instance(rng, 9, 5)
    options = PlannerOptions(search_budget=1, max_critical=max_critical)
    ref = brute_force(profile, snap, options)
    if ref is None:
        return
    for objective, best in (("latency", ref.best_latency), ("throughput", ref.best_bottleneck)):
        try:
            p = plan(profile, snap, objective=objective, options=options)
        except InfeasiblePlanError:
            pytest.fail("feasible instance reported infeasible")
        except PlanError:
            continue  # budget exhausted without a plan: allowed, and says so
        assert p.value >= best * (1 - REL)
        assert p.lower_bound <= best * (1 + REL)
        if p.optimal:
            assert close(p.value, best)
