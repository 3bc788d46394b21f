"""Planner unit tests: infeasibility causes, reputation, load, weight fetches, determinism."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from p2pinfer.core.plan import MAX_PIPELINE_WINDOW, Plan, PlannerOptions, pipeline_window
from p2pinfer.core.planner import plan
from p2pinfer.core.profile import LayerProfile, ModelProfile
from p2pinfer.core.snapshot import PeerSpec, RequesterSpec, SwarmSnapshot
from p2pinfer.errors import InfeasiblePlanError, PlanError

from .planner_brute import brute_force, random_instance

G = 10**9
REQ = RequesterSpec(up_mbps=1000.0, down_mbps=1000.0, latency_ms=1.0)
NO_FETCH = PlannerOptions(amortize_requests=None)


def chain(params: list[int], flops: int = G, out: int = 1000, hashes: bool = False) -> ModelProfile:
    layers = tuple(LayerProfile(i, "linear", flops, p, out, weights_hash=f"h{i}" if hashes else "")
                   for i, p in enumerate(params))
    return ModelProfile("toy", "toy-id", 1000, layers)


def peer(pid: str, gflops: float = 10.0, mem: int = 10**9, **kw) -> PeerSpec:
    kw.setdefault("up_mbps", 1000.0)
    kw.setdefault("down_mbps", 1000.0)
    kw.setdefault("latency_ms", 1.0)
    return PeerSpec(pid, gflops, mem, **kw)


def snap(*peers: PeerSpec) -> SwarmSnapshot:
    return SwarmSnapshot(REQ, tuple(peers))


@pytest.mark.parametrize("objective", ["latency", "throughput"])
def test_no_peers(objective: str) -> None:
    with pytest.raises(InfeasiblePlanError, match="no peers"):
        plan(chain([1]), snap(), objective=objective)


def test_all_peers_excluded_by_reputation() -> None:
    with pytest.raises(InfeasiblePlanError, match=r"all 2 peers excluded by reputation .*0\.2"):
        plan(chain([1]), snap(peer("a", reputation=0.1), peer("b", reputation=0.19)))


def test_layer_larger_than_every_peer_names_layer_and_sizes() -> None:
    profile = chain([10, 10, 1_200_000_000, 10])
    with pytest.raises(InfeasiblePlanError, match=r"layer 2 needs 1\.2 GB but the largest peer offers 0\.5 GB"):
        plan(profile, snap(peer("a", mem=500_000_000), peer("b", mem=400_000_000)))


def test_total_memory_too_small() -> None:
    with pytest.raises(InfeasiblePlanError, match=r"model needs 3\.0 kB of memory but all 2 usable peers together offer 2\.0 kB"):
        plan(chain([1000, 1000, 1000]), snap(peer("a", mem=1000), peer("b", mem=1000)))


@pytest.mark.parametrize("objective", ["latency", "throughput"])
def test_one_span_per_peer_makes_it_infeasible(objective: str) -> None:
    # every layer fits a peer and memory suffices in total, but no chain of distinct peers does
    with pytest.raises(InfeasiblePlanError, match="more peers than available given memory"):
        plan(chain([3, 3, 3]), snap(peer("a", mem=5), peer("b", mem=4)), objective=objective)


def test_unknown_objective() -> None:
    with pytest.raises(PlanError, match="unknown objective 'fastest'"):
        plan(chain([1]), snap(peer("a")), objective="fastest")


def test_peer_below_threshold_is_never_chosen_even_if_fastest() -> None:
    s = snap(peer("fast", gflops=1000.0, reputation=0.1), peer("slow", gflops=1.0))
    for objective in ("latency", "throughput"):
        assert {h.peer_id for h in plan(chain([1] * 4), s, objective=objective).hops} == {"slow"}
    lenient = PlannerOptions(exclusion_threshold=0.05)
    assert {h.peer_id for h in plan(chain([1] * 4), s, options=lenient).hops} == {"fast"}


def test_lower_reputation_and_load_make_a_peer_costlier() -> None:
    profile = chain([1], flops=10 * G)
    base = plan(profile, snap(peer("a", gflops=10.0)), options=NO_FETCH).hops[0].compute_s
    assert base == pytest.approx(1.0)
    assert plan(profile, snap(peer("a", gflops=10.0, reputation=0.5)), options=NO_FETCH).hops[0].compute_s == pytest.approx(2.0)
    assert plan(profile, snap(peer("a", gflops=10.0, load=0.75)), options=NO_FETCH).hops[0].compute_s == pytest.approx(4.0)
    # equal advertised speed: the more reputable peer wins
    s = snap(peer("a", gflops=10.0, reputation=0.6), peer("b", gflops=10.0, reputation=0.9))
    assert plan(profile, s).hops[0].peer_id == "b"


def test_per_class_speed_refines_the_scalar() -> None:
    layer = LayerProfile(0, "conv", 10 * G, 1, 1, {"conv": 8 * G})
    profile = ModelProfile("toy", "toy-id", 1, (layer,))
    p = plan(profile, snap(peer("a", gflops=1.0, gflops_by_class={"conv": 8.0})), options=NO_FETCH)
    assert p.hops[0].compute_s == pytest.approx(8 * G / 8e9 + 2 * G / 1e9)


def test_per_kind_speed_decides_the_split() -> None:
    """Two peers equal by class, but "b" runs bottlenecks 4x faster than "a" and "a" runs plain
    convs 4x faster: the throughput plan gives each peer the kind it is fast at."""
    kinds = ["conv_bn_act"] * 4 + ["bottleneck"] * 4
    profile = ModelProfile("mix", "mix-id", 1, tuple(LayerProfile(i, k, G, 1, 1, {"conv": G}) for i, k in enumerate(kinds)))
    a = peer("a", gflops=10.0, gflops_by_kind={"conv_bn_act": 40.0, "bottleneck": 10.0})
    b = peer("b", gflops=10.0, gflops_by_kind={"conv_bn_act": 10.0, "bottleneck": 40.0})
    p = plan(profile, snap(a, b), objective="throughput", options=NO_FETCH)
    assert [(h.peer_id, h.start, h.stop) for h in p.hops] == [("a", 0, 4), ("b", 4, 8)]
    assert max(h.compute_s for h in p.hops) == pytest.approx(4 * G / 40e9)


def test_weight_fetch_is_amortised_and_skipped_for_held_weights() -> None:
    profile = chain([125_000_000, 125_000_000], hashes=True)  # 2 Gbit of weights
    lonely = snap(peer("a", down_mbps=100.0))
    # 2e9 bits over min(1000, 100) Mbit/s = 20 s once, over 100 requests = 0.2 s per request
    hop = plan(profile, lonely).hops[0]
    assert hop.weight_fetch_s == pytest.approx(0.2)
    assert plan(profile, lonely, options=PlannerOptions(amortize_requests=10)).hops[0].weight_fetch_s == pytest.approx(2.0)
    assert plan(profile, lonely, options=NO_FETCH).hops[0].weight_fetch_s == 0.0
    half = snap(peer("a", down_mbps=100.0, holds=frozenset({"h0"})))
    assert plan(profile, half).hops[0].weight_fetch_s == pytest.approx(0.1)
    whole = snap(peer("a", down_mbps=100.0, holds=frozenset({"toy-id"})))
    assert plan(profile, whole).hops[0].weight_fetch_s == 0.0


def test_holder_beats_a_faster_peer_that_must_fetch() -> None:
    profile = chain([125_000_000], flops=G, hashes=True)
    s = snap(peer("fresh", gflops=100.0, down_mbps=100.0), peer("holder", gflops=20.0, holds=frozenset({"h0"})))
    # fresh: 0.01 s compute + 0.1 s amortised fetch; holder: 0.05 s compute
    assert plan(profile, s).hops[0].peer_id == "holder"
    assert plan(profile, s, options=NO_FETCH).hops[0].peer_id == "fresh"


def test_throughput_splits_where_latency_does_not() -> None:
    profile = chain([1] * 4, flops=10 * G)
    s = snap(*(peer(f"p{i}", gflops=10.0) for i in range(4)))
    lat = plan(profile, s, objective="latency")
    thr = plan(profile, s, objective="throughput")
    assert len(lat.hops) == 1 and len(thr.hops) == 4
    assert thr.bottleneck_s == pytest.approx(1.0, rel=1e-3) and thr.throughput_rps == pytest.approx(1.0, rel=1e-3)
    assert lat.predicted_latency_s < thr.predicted_latency_s


def test_deterministic_and_independent_of_peer_order() -> None:
    rng = random.Random(5)
    for _ in range(20):
        profile, s = random_instance(rng, 8, 5)
        if brute_force(profile, s, PlannerOptions()) is None:
            continue
        shuffled = SwarmSnapshot(s.requester, tuple(reversed(s.peers)))
        for objective in ("latency", "throughput"):
            assert plan(profile, s, objective=objective) == plan(profile, shuffled, objective=objective)


def test_plan_json_contract() -> None:
    p = plan(chain([1, 1]), snap(peer("a"), peer("b")), objective="throughput")
    d = p.to_json_dict()
    assert list(d)[:5] == ["objective", "hops", "predicted_latency_s", "bottleneck_s", "throughput_rps"]
    assert d["objective"] == "throughput" and d["throughput_rps"] == pytest.approx(1 / d["bottleneck_s"])
    for hop in d["hops"]:
        assert set(hop) >= {"peer", "layers", "compute_s", "transfer_in_s"}
        assert isinstance(hop["layers"], list) and len(hop["layers"]) == 2
    assert [h["layers"][0] for h in d["hops"]][0] == 0 and d["hops"][-1]["layers"][1] == 2
    assert isinstance(d["optimal"], bool)


def test_large_instance_gives_valid_plan_with_bound() -> None:
    rng = random.Random(11)
    layers = tuple(LayerProfile(i, "x", rng.randint(G, 5 * G), rng.randint(10**6, 10**7), rng.randint(10**4, 10**6))
                   for i in range(60))
    profile = ModelProfile("big", "big-id", 10**5, layers)
    peers = tuple(peer(f"p{j:02d}", gflops=rng.uniform(5, 500), mem=rng.randint(3 * 10**7, 2 * 10**8),
                       up_mbps=rng.uniform(10, 1000), down_mbps=rng.uniform(10, 1000),
                       latency_ms=rng.uniform(1, 50)) for j in range(40))
    for objective in ("latency", "throughput"):
        p = plan(profile, snap(*peers), objective=objective)
        assert p.hops[0].start == 0 and p.hops[-1].stop == 60
        assert all(a.stop == b.start for a, b in zip(p.hops, p.hops[1:]))
        assert len({h.peer_id for h in p.hops}) == len(p.hops)
        assert 0 < p.lower_bound <= p.value * (1 + 1e-9)


def test_pipeline_window_keeps_every_stage_busy() -> None:
    """Little's law on the plan's own numbers: latency / bottleneck inputs in flight, plus one."""
    def with_times(latency_s: float, bottleneck_s: float) -> Plan:
        return Plan("throughput", (), 0.0, latency_s, bottleneck_s)

    assert pipeline_window(with_times(4.5, 0.68)) == 8  # the testbed's 4-hop VGG-16 split: 4 starved it
    assert pipeline_window(with_times(0.4, 0.4)) == 2  # one stage: one computing, one arriving
    assert pipeline_window(with_times(1e6, 1.0)) == MAX_PIPELINE_WINDOW
    assert pipeline_window(with_times(1.0, 0.0)) == 2 and pipeline_window(with_times(float("inf"), 1.0)) == 2
    p = plan(chain([1, 1, 1, 1]), snap(peer("a"), peer("b")), objective="throughput", options=NO_FETCH)
    assert pipeline_window(p) == max(2, math.ceil(p.predicted_latency_s / p.bottleneck_s) + 1)


@pytest.mark.parametrize("objective", ["latency", "throughput"])
def test_frame_costs_are_priced_and_can_make_a_split_not_worth_it(objective: str) -> None:
    """4 layers of 1 s on 10 GFLOP/s peers with 100 MiB activations between them. Without frame
    costs, throughput splits in four (1 s per stage). With 15 ms per MiB in or out, an inner hop
    of that split pays 3 s of frames (4 s in all), while two hops of two layers pay 1.5 s each
    (3.5 s): the planner must merge. For latency every cut costs 3 s: one peer (4 s)."""
    mib = 2**20
    layers = tuple(LayerProfile(i, "linear", 10 * G, 1, 100 * mib if i < 3 else 1000) for i in range(4))
    profile = ModelProfile("toy", "toy-id", 1000, layers)
    peers = [peer(f"p{i}", frame_ms=1.0, frame_ms_per_mib=15.0, up_mbps=1e7, down_mbps=1e7) for i in range(4)]
    p = plan(profile, snap(*peers), objective=objective, options=NO_FETCH)
    frames = [h.frame_s for h in p.hops]
    assert all(f > 0 for f in frames) and p.lower_bound <= (p.bottleneck_s if objective == "throughput"
                                                            else p.predicted_latency_s)
    if objective == "latency":
        assert len(p.hops) == 1 and p.predicted_latency_s == pytest.approx(4.0 + 0.001 + 0.004, rel=1e-3)
    else:
        assert len(p.hops) == 2 and p.bottleneck_s == pytest.approx(2.0 + 0.001 + 0.015 * 100, rel=1e-3)
        assert not p.optimal  # the search's bound (1 s, frames unseen) is not met: no false claim
    bare = plan(profile, snap(*(peer(f"p{i}", up_mbps=1e7, down_mbps=1e7) for i in range(4))), objective=objective,
                options=NO_FETCH)
    assert all(h.frame_s == 0 for h in bare.hops) and len(bare.hops) == (1 if objective == "latency" else 4)


def test_a_quota_shortens_lone_latency_and_the_latency_bound_stays_valid() -> None:
    """Peers under CPU quotas (of periods as long as a layer's work or longer): the latency plan
    is priced with the quota saving (the brute force prices every chain the same way), never
    claims more than it proved, and its lower bound never exceeds the true optimum."""
    rng = random.Random(7)
    found_optimum = checked = 0
    for _ in range(300):
        profile, s = random_instance(rng, 6, 4)
        peers = tuple(replace(p, cpu_quota_ms=rng.uniform(1, 400), cpu_period_ms=1000.0) if rng.random() < 0.7 else p
                      for p in s.peers)
        s = SwarmSnapshot(s.requester, peers)
        ref = brute_force(profile, s, PlannerOptions())
        if ref is None:
            continue
        p = plan(profile, s, objective="latency")
        checked += 1
        assert p.lower_bound <= ref.best_latency * (1 + 1e-9) + 1e-12
        assert p.predicted_latency_s >= ref.best_latency * (1 - 1e-9) - 1e-12
        assert not p.optimal or math.isclose(p.predicted_latency_s, ref.best_latency, rel_tol=1e-9, abs_tol=1e-12)
        saving = sum(h.lone_saving_s for h in p.hops)
        assert p.predicted_latency_s == pytest.approx(
            sum(h.transfer_in_s + h.stage_s for h in p.hops) + p.transfer_out_s - saving)
        found_optimum += math.isclose(p.predicted_latency_s, ref.best_latency, rel_tol=1e-6)
    assert checked >= 100 and found_optimum >= 0.8 * checked
    # the pipeline bottleneck is a busy peer's: no saving there
    quota = peer("q", cpu_quota_ms=2.0, cpu_period_ms=10.0)
    lone = plan(chain([1]), snap(quota), objective="latency")
    busy = plan(chain([1]), snap(peer("q")), objective="latency")
    assert lone.hops[0].lone_saving_s == pytest.approx(0.010 * 0.8)  # 0.1 s of work > the 10 ms period
    assert lone.predicted_latency_s == pytest.approx(busy.predicted_latency_s - 0.008)
    assert lone.bottleneck_s == busy.bottleneck_s
