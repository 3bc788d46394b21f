"""Replicated (multi-chain) throughput plans against brute force over partitions of peers."""

from __future__ import annotations

import random
from itertools import combinations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pinfer.core import planner
from p2pinfer.core.costs import build_costs
from p2pinfer.core.plan import PlannerOptions
from p2pinfer.core.profile import LayerProfile, ModelProfile
from p2pinfer.core.replica_bound import closed_form_bound, compute_lp_bound, lp_bound, requester_caps
from p2pinfer.core.replicas import ReplicaOptions, ReplicatedPlan, plan_replicated, plan_replicated_or_single
from p2pinfer.core.snapshot import PeerSpec, RequesterSpec, SwarmSnapshot
from p2pinfer.errors import InfeasiblePlanError
from tests.unit.core.planner_brute import brute_force, random_instance

OPTIONS = PlannerOptions()


def brute_total(profile: ModelProfile, snap: SwarmSnapshot, options: PlannerOptions) -> float:
    """Best summed rate over every partition of the usable peers into chains (each block's best
    chain by enumerating every chain of the block), before the requester's caps."""
    peers = [p for p in snap.peers if p.reputation >= options.exclusion_threshold]
    rate: dict[frozenset[int], float] = {}
    for k in range(1, len(peers) + 1):
        for block in combinations(range(len(peers)), k):
            found = brute_force(profile, SwarmSnapshot(snap.requester, tuple(peers[i] for i in block)), options)
            rate[frozenset(block)] = 1.0 / found.best_bottleneck if found else 0.0

    def best(rest: frozenset[int]) -> float:
        if not rest:
            return 0.0
        low, others = min(rest), sorted(rest - {min(rest)})
        value = best(rest - {low})
        for k in range(len(others) + 1):
            for extra in combinations(others, k):
                block = frozenset((low, *extra))
                value = max(value, rate[block] + best(rest - block))
        return value

    return best(frozenset(range(len(peers))))


def check_valid(rp: ReplicatedPlan, profile: ModelProfile, snap: SwarmSnapshot, options: PlannerOptions) -> None:
    """Disjoint chains, each a valid plan priced by the cost model, rates and total consistent."""
    cm = build_costs(profile, snap, options)
    index = {p.peer_id: i for i, p in enumerate(cm.peers)}
    peers = rp.peers
    assert len(peers) == len(set(peers)), "a peer in two chains"
    assert set(peers) <= set(index), "an excluded or unknown peer used"
    raw = []
    for chain in rp.chains:
        priced = cm.evaluate([(index[h.peer_id], h.start, h.stop) for h in chain.hops], "throughput")
        assert priced.bottleneck_s == pytest.approx(chain.bottleneck_s, rel=1e-9)
        raw.append(priced.throughput_rps)
    cap = min(requester_caps(cm).values())
    assert rp.throughput_rps == pytest.approx(min(sum(raw), cap), rel=1e-9)
    assert sum(rp.rates_rps) == pytest.approx(rp.throughput_rps, rel=1e-9)
    assert all(r <= c * (1 + 1e-9) for r, c in zip(rp.rates_rps, raw))
    assert rp.throughput_rps <= rp.upper_bound_rps * (1 + 1e-9)


def _instance(seed: int) -> tuple[ModelProfile, SwarmSnapshot]:
    return random_instance(random.Random(seed), max_layers=6, max_peers=5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_exact_on_small_instances(seed: int) -> None:
    """Up to exact_peers peers the plan is the optimum over every partition into chains, and the
    upper bound is above it."""
    profile, snap = _instance(seed)
    cm = build_costs(profile, snap, OPTIONS)
    truth = brute_total(profile, snap, OPTIONS)
    if truth == 0.0:
        with pytest.raises(InfeasiblePlanError):
            plan_replicated(profile, snap, options=OPTIONS)
        return
    rp = plan_replicated(profile, snap, options=OPTIONS)
    check_valid(rp, profile, snap, OPTIONS)
    cap = min(requester_caps(cm).values())
    assert rp.throughput_rps == pytest.approx(min(truth, cap), rel=1e-6)
    assert rp.optimal
    assert rp.upper_bound_rps >= min(truth, cap) * (1 - 1e-7)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), exact=st.integers(1, 3), budget=st.integers(1, 30))
def test_local_search_is_sound(seed: int, exact: int, budget: int) -> None:
    """The heuristic path (exact search disabled, tight budgets): valid, never better than the
    optimum, never worse than the best single chain, and honest about optimality."""
    profile, snap = _instance(seed)
    truth = brute_total(profile, snap, OPTIONS)
    if truth == 0.0:
        return
    rp = plan_replicated(profile, snap, options=OPTIONS, replicas=ReplicaOptions(exact_peers=exact, max_plans=budget))
    check_valid(rp, profile, snap, OPTIONS)
    cap = min(requester_caps(build_costs(profile, snap, OPTIONS)).values())
    assert rp.throughput_rps <= min(truth, cap) * (1 + 1e-6)
    single = planner.plan(profile, snap, objective="throughput", options=OPTIONS)
    assert rp.throughput_rps >= min(single.throughput_rps, cap) * (1 - 1e-9)
    if rp.optimal:
        assert rp.throughput_rps == pytest.approx(min(truth, cap), rel=1e-5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_bounds_are_upper_bounds(seed: int) -> None:
    profile, snap = _instance(seed)
    truth = brute_total(profile, snap, OPTIONS)
    cm = build_costs(profile, snap, OPTIONS)
    if cm.num_peers == 0:
        return
    lp = lp_bound(cm)
    assert lp is not None and lp >= truth * (1 - 1e-7)
    compute_only = compute_lp_bound(cm)
    assert compute_only is not None and compute_only >= lp * (1 - 1e-7)  # fewer rows: weaker, still a bound
    assert closed_form_bound(cm) >= compute_only * (1 - 1e-6) - 1e-9  # (the LPs are padded by 1e-7)


# ---- unit cases -------------------------------------------------------------------------------


def _layers(n: int, flops: int, out_bytes: int, params: int = 1000) -> tuple[LayerProfile, ...]:
    return tuple(LayerProfile(i, "x", flops, params, out_bytes) for i in range(n))


def _peer(name: str, gflops: float, mbps: float, mem: int = 10**9, **kw: float) -> PeerSpec:
    return PeerSpec(name, gflops, mem, mbps, mbps, 1.0, **kw)


def iot_like() -> tuple[ModelProfile, SwarmSnapshot]:
    """One strong node and four weak ones, every node holds the model, big activations: the
    best single chain spans several nodes, but all five alone do better."""
    profile = ModelProfile("toy", "toy-id", 600_000, _layers(10, 800_000_000, 400_000))
    peers = (_peer("jetson", 24.0, 50.0), *(_peer(f"rpi{i}", 12.0, 20.0) for i in range(4)))
    return profile, SwarmSnapshot(RequesterSpec(200.0, 200.0, 2.0), peers)


def test_uses_every_peer_where_the_best_chain_would_waste_them() -> None:
    profile, snap = iot_like()
    single = planner.plan(profile, snap, objective="throughput", options=OPTIONS)
    rp = plan_replicated(profile, snap, options=OPTIONS)
    alone = [planner.plan(profile, SwarmSnapshot(snap.requester, (p,)), objective="throughput", options=OPTIONS)
             for p in snap.peers]
    assert len(single.hops) >= 2  # the single-chain optimum spends several peers ...
    left = [p for p in snap.peers if p.peer_id not in {h.peer_id for h in single.hops}]
    peeled = single.throughput_rps + planner.plan(profile, SwarmSnapshot(snap.requester, tuple(left)),
                                                  objective="throughput", options=OPTIONS).throughput_rps
    assert sum(p.throughput_rps for p in alone) > peeled * 1.1  # greedy peeling is not enough
    assert rp.throughput_rps == pytest.approx(sum(p.throughput_rps for p in alone))  # ... all five alone beat it
    assert sorted(rp.peers) == sorted(p.peer_id for p in snap.peers)
    assert rp.limit == "chains" and rp.optimal
    assert rp.chains[0].hops[0].peer_id == "jetson"  # fastest first
    # the local search finds the same here
    heuristic = plan_replicated(profile, snap, options=OPTIONS, replicas=ReplicaOptions(exact_peers=2))
    assert heuristic.throughput_rps == pytest.approx(rp.throughput_rps)


def test_peers_that_cannot_hold_the_model_are_grouped() -> None:
    profile = ModelProfile("toy", "toy-id", 1000, _layers(4, 10**9, 1000, params=100))
    small = [_peer(f"s{i}", 10.0, 100.0, mem=200) for i in range(4)]  # two layers each
    rp = plan_replicated(profile, SwarmSnapshot(RequesterSpec(1000.0, 1000.0, 0.0), tuple(small)), options=OPTIONS)
    assert len(rp.chains) == 2 and all(len(c.hops) == 2 for c in rp.chains)
    assert rp.throughput_rps == pytest.approx(2 * 10.0 / 2.0)


def test_requester_link_caps_the_total_and_drops_chains_it_cannot_feed() -> None:
    profile = ModelProfile("toy", "toy-id", 1_000_000, _layers(2, 10**8, 1000))
    peers = tuple(_peer(f"p{i}", 100.0, 1000.0) for i in range(6))  # 500 rps each alone, compute-wise
    snap = SwarmSnapshot(RequesterSpec(80.0, 1000.0, 0.0), peers)  # uplink: 10 inputs/s
    rp = plan_replicated(profile, snap, options=OPTIONS)
    assert rp.throughput_rps == pytest.approx(10.0)
    assert rp.limit == "requester uplink" and rp.optimal
    assert len(rp.chains) == 1  # one chain already saturates the uplink
    cpu = plan_replicated(profile, SwarmSnapshot(RequesterSpec(1e5, 1e5, 0.0), peers), options=OPTIONS,
                          replicas=ReplicaOptions(requester_s_per_input=0.25))
    assert cpu.throughput_rps == pytest.approx(4.0) and cpu.limit == "requester cpu"


def test_excluded_peers_are_never_used() -> None:
    profile, snap = iot_like()
    bad = _peer("zz-bad", 500.0, 1000.0, reputation=0.1)
    rp = plan_replicated(profile, SwarmSnapshot(snap.requester, (*snap.peers, bad)), options=OPTIONS)
    assert "zz-bad" not in rp.peers and rp.excluded == ("zz-bad",)
    with pytest.raises(InfeasiblePlanError, match="excluded by reputation"):
        plan_replicated(profile, SwarmSnapshot(snap.requester, (bad,)), options=OPTIONS)


def test_max_chains() -> None:
    profile, snap = iot_like()
    one = plan_replicated_or_single(profile, snap, options=OPTIONS, replicas=ReplicaOptions(max_chains=1))
    single = planner.plan(profile, snap, objective="throughput", options=OPTIONS)
    assert one.chains == (single,) and one.method == "single-chain"
    two = plan_replicated(profile, snap, options=OPTIONS, replicas=ReplicaOptions(max_chains=2))
    assert len(two.chains) <= 2 and two.throughput_rps > single.throughput_rps
    assert two.upper_bound_rps <= 2 * one.upper_bound_rps * (1 + 1e-9)


def test_infeasible_and_bad_options() -> None:
    profile = ModelProfile("toy", "toy-id", 1000, _layers(3, 10**9, 1000, params=100))
    with pytest.raises(InfeasiblePlanError, match="no peers"):
        plan_replicated(profile, SwarmSnapshot(RequesterSpec(1.0, 1.0, 0.0), ()), options=OPTIONS)
    tiny = SwarmSnapshot(RequesterSpec(1.0, 1.0, 0.0), (_peer("a", 1.0, 1.0, mem=50),))
    with pytest.raises(InfeasiblePlanError, match="layer 0 needs"):
        plan_replicated(profile, tiny, options=OPTIONS)
    for bad in (dict(max_chains=0), dict(exact_peers=0), dict(max_plans=0), dict(requester_s_per_input=-1.0)):
        with pytest.raises(ValueError):
            ReplicaOptions(**bad)


def test_deterministic_and_json() -> None:
    profile, snap = iot_like()
    a = plan_replicated(profile, snap, options=OPTIONS)
    b = plan_replicated(profile, SwarmSnapshot(snap.requester, tuple(reversed(snap.peers))), options=OPTIONS)
    assert a == b
    doc = a.to_json_dict()
    assert set(doc) >= {"chains", "throughput_rps", "upper_bound_rps", "optimal", "limit"}
    assert [c["rate_rps"] for c in doc["chains"]] == list(a.rates_rps)
    assert doc["chains"][0]["hops"][0]["peer"] == "jetson"
