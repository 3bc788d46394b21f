"""Local search on a throughput chain: valid, never worse, and it fixes an obvious imbalance."""

from __future__ import annotations

import random

from p2pinfer.core.baselines import baseline_plans, plan_spans
from p2pinfer.core.costs import build_costs
from p2pinfer.core.plan import PlannerOptions
from p2pinfer.core.polish import polish
from p2pinfer.core.profile import LayerProfile, ModelProfile
from p2pinfer.core.snapshot import PeerSpec, RequesterSpec, SwarmSnapshot

from .planner_brute import brute_force, random_instance


def test_polish_rebalances_a_lopsided_chain() -> None:
    profile = ModelProfile("toy", "toy-id", 10, tuple(LayerProfile(i, "x", 10**9, 1, 10) for i in range(6)))
    peers = tuple(PeerSpec(f"p{i}", 10.0, 10**6, 1000.0, 1000.0, 1.0) for i in range(3))
    cm = build_costs(profile, SwarmSnapshot(RequesterSpec(1000.0, 1000.0, 1.0), peers), PlannerOptions())
    lopsided = ((0, 0, 4), (1, 4, 5), (2, 5, 6))  # 0.4 s on p0, 0.1 s on the others
    better = polish(cm, lopsided)
    assert cm.evaluate(better, "throughput").bottleneck_s < 0.21
    assert [a for _, a, _ in better] == [0, 2, 4]


def test_polish_never_worse_and_always_valid() -> None:
    rng = random.Random(3)
    for _ in range(40):
        profile, snap = random_instance(rng, 9, 5)
        if brute_force(profile, snap, PlannerOptions()) is None:
            continue
        cm = build_costs(profile, snap, PlannerOptions())
        for p in baseline_plans(cm, "throughput").values():
            if p is not None:
                out = cm.evaluate(polish(cm, plan_spans(cm, p)), "throughput")  # evaluate validates
                assert out.bottleneck_s <= p.bottleneck_s * (1 + 1e-12)
