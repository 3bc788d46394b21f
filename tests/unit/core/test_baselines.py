"""Baselines follow their rules, are priced by the cost model, and never beat the planner."""

from __future__ import annotations

import random

import pytest

from p2pinfer.core.baselines import baseline_plans, best_baseline, even_split_k
from p2pinfer.core.costs import build_costs
from p2pinfer.core.plan import PlannerOptions
from p2pinfer.core.planner import plan
from p2pinfer.core.profile import LayerProfile, ModelProfile
from p2pinfer.core.snapshot import PeerSpec, RequesterSpec, SwarmSnapshot

from .planner_brute import brute_force, random_instance

OPTS = PlannerOptions(amortize_requests=None)
REQ = RequesterSpec(1000.0, 1000.0, 1.0)


def setup(mems: list[int], speeds: list[float], layers: int = 6):
    profile = ModelProfile("toy", "toy-id", 100, tuple(LayerProfile(i, "x", 10**9, 10, 100) for i in range(layers)))
    peers = tuple(PeerSpec(f"p{i}", g, m, 1000.0, 1000.0, 1.0) for i, (m, g) in enumerate(zip(mems, speeds)))
    snap = SwarmSnapshot(REQ, peers)
    return profile, snap, build_costs(profile, snap, OPTS)


def spans(p) -> list[tuple[str, int, int]]:
    return [(h.peer_id, h.start, h.stop) for h in p.hops]


def test_single_peer_picks_the_fastest_that_fits_and_none_when_nobody_fits() -> None:
    _, _, cm = setup([60, 60, 30], [5.0, 9.0, 100.0])
    assert spans(baseline_plans(cm, "latency")["single-peer"]) == [("p1", 0, 6)]
    _, _, cm = setup([30, 30], [5.0, 9.0])
    assert baseline_plans(cm, "latency")["single-peer"] is None


def test_even_split_uses_the_k_fastest_with_equal_layer_counts() -> None:
    _, _, cm = setup([60] * 4, [1.0, 4.0, 3.0, 2.0])
    assert spans(even_split_k(cm, "latency", 3)) == [("p1", 0, 2), ("p2", 2, 4), ("p3", 4, 6)]


def test_memory_proportional_shares_layers_by_memory() -> None:
    _, _, cm = setup([20, 40], [1.0, 1.0])
    assert spans(baseline_plans(cm, "latency")["memory-proportional"]) == [("p1", 0, 4), ("p0", 4, 6)]


def test_greedy_fastest_fills_memory_fastest_first() -> None:
    _, _, cm = setup([60, 30, 20], [1.0, 50.0, 10.0])
    assert spans(baseline_plans(cm, "latency")["greedy-fastest"]) == [("p1", 0, 3), ("p2", 3, 5), ("p0", 5, 6)]
    _, _, cm = setup([10, 10], [1.0, 2.0])
    assert baseline_plans(cm, "latency")["greedy-fastest"] is None


@pytest.mark.parametrize("objective", ["latency", "throughput"])
def test_planner_never_worse_than_any_baseline(objective: str) -> None:
    rng = random.Random(42)
    checked = 0
    for _ in range(60):
        profile, snap = random_instance(rng, 8, 5)
        if brute_force(profile, snap, PlannerOptions()) is None:
            continue
        cm = build_costs(profile, snap, PlannerOptions())
        best = plan(profile, snap, objective=objective)
        for name, other in baseline_plans(cm, objective).items():
            if other is not None:
                assert other.method == name
                assert best.value <= other.value * (1 + 1e-9), name
        checked += 1
    assert checked > 20


def test_best_baseline_is_the_minimum() -> None:
    _, _, cm = setup([60, 60, 60], [1.0, 2.0, 3.0])
    plans = [p for p in baseline_plans(cm, "throughput").values() if p is not None]
    assert best_baseline(cm, "throughput").value == min(p.value for p in plans)
