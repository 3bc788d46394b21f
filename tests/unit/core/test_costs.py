"""The cost model's formulas and its guard rails (the reference model of docs/cost-model.md)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from p2pinfer.core.costs import REQUESTER, advertised_seconds, build_costs, span_seconds, suffix
from p2pinfer.core.plan import PlannerOptions
from p2pinfer.core.profile import LayerProfile, ModelProfile
from p2pinfer.core.snapshot import PeerSpec, RequesterSpec, SwarmSnapshot

PROFILE = ModelProfile("toy", "toy-id", 1_000_000, tuple(
    LayerProfile(i, "x", 2 * 10**9, 100, 500_000 * (i + 1)) for i in range(3)))
SNAP = SwarmSnapshot(RequesterSpec(up_mbps=50.0, down_mbps=200.0, latency_ms=10.0), (
    PeerSpec("a", 20.0, 10**6, up_mbps=100.0, down_mbps=40.0, latency_ms=5.0),
    PeerSpec("b", 40.0, 150, up_mbps=10.0, down_mbps=400.0, latency_ms=20.0),
))
CM = build_costs(PROFILE, SNAP, PlannerOptions(amortize_requests=None))


def test_transfer_is_star_model() -> None:
    # requester -> a: (10 + 5) ms + 8 Mbit / min(50, 40) Mbit/s
    assert CM.transfer_s(REQUESTER, 0, 0) == pytest.approx(0.015 + 8e6 / 40e6)
    # a -> b after layer 1 (1 MB): (5 + 20) ms + 8 Mbit / min(100, 400)
    assert CM.transfer_s(0, 1, 2) == pytest.approx(0.025 + 8e6 / 100e6)
    # b -> requester, last layer's 1.5 MB: min(10, 200)
    assert CM.bandwidth_s(1, REQUESTER, 3) == pytest.approx(12e6 / 10e6)


def test_evaluate_latency_and_bottleneck() -> None:
    p = CM.evaluate([(0, 0, 2), (1, 2, 3)], "latency")
    t_in = 0.015 + 8e6 / 40e6
    t_ab = 0.025 + 8e6 / 100e6
    t_out = 0.030 + 12e6 / 10e6
    assert [h.compute_s for h in p.hops] == pytest.approx([4e9 / 20e9, 2e9 / 40e9])
    assert p.predicted_latency_s == pytest.approx(t_in + 0.2 + t_ab + 0.05 + t_out)
    assert p.bottleneck_s == pytest.approx(12e6 / 10e6)
    assert p.transfer_out_s == pytest.approx(t_out)


@pytest.mark.parametrize("spans, why", [
    ([], "cover"), ([(0, 0, 2)], "cover"), ([(0, 0, 2), (0, 2, 3)], "one span"),
    ([(0, 0, 1), (1, 2, 3)], "contiguous"), ([(1, 0, 3)], "does not fit"), ([(0, 0, 0), (1, 0, 3)], "contiguous"),
])
def test_evaluate_rejects_bad_chains(spans, why) -> None:
    with pytest.raises(ValueError, match=why):
        CM.evaluate(spans, "latency")


def test_suffix_model_matches_the_full_model() -> None:
    sub = suffix(CM, 2, 0, [1])
    assert sub.num_layers == 1 and sub.num_peers == 1
    assert sub.compute[0, 1] == pytest.approx(CM.compute[1, 3] - CM.compute[1, 2])
    assert sub.src_lat == CM.lat[0] and sub.src_inv_up == CM.inv_up[0]
    assert sub.bits[0] == CM.bits[2]


def test_excluded_peers_are_listed() -> None:
    snap = SwarmSnapshot(SNAP.requester, (SNAP.peers[0], PeerSpec("c", 1.0, 1, 1.0, 1.0, 1.0, reputation=0.1)))
    cm = build_costs(PROFILE, snap, PlannerOptions())
    assert cm.excluded == ("c",) and [p.peer_id for p in cm.peers] == ["a"]


def test_a_listed_layer_kind_overrides_the_class_speeds() -> None:
    """Peer "k" lists "conv_bn_act" at 8 GFLOP/s: its conv layers cost flops / 8e9, its other
    layers keep the class speeds; a peer without a kind table is priced by class as before;
    load and reputation derate both alike."""
    layers = (LayerProfile(0, "conv_bn_act", 4 * 10**9, 0, 1, {"conv": 4 * 10**9}),
              LayerProfile(1, "bottleneck", 2 * 10**9, 0, 1, {"conv": 2 * 10**9}),
              LayerProfile(2, "max_pool", 10**6, 0, 1, {"other": 10**6}))
    profile = ModelProfile("kinds", "kinds-id", 1, layers)
    peers = (PeerSpec("k", 10.0, 10**6, 1.0, 1.0, 0.0, {"conv": 20.0}, load=0.5,
                      gflops_by_kind={"conv_bn_act": 8.0, "max_pool": 0.1, "bert_layer": 3.0}),
             PeerSpec("plain", 10.0, 10**6, 1.0, 1.0, 0.0, {"conv": 20.0}))
    seconds = advertised_seconds(layers, peers)
    assert seconds[0].tolist() == pytest.approx([4 / 8, 2 / 20, 1e-3 / 0.1])
    assert seconds[1].tolist() == pytest.approx([4 / 20, 2 / 20, 1e-3 / 10])
    assert span_seconds(layers[:2], peers[0]) == pytest.approx(0.5 + 0.1) and span_seconds((), peers[0]) == 0.0
    cm = build_costs(profile, SwarmSnapshot(SNAP.requester, peers), PlannerOptions(amortize_requests=None))
    assert cm.compute[0, 3] == pytest.approx((0.5 + 0.1 + 0.01) / 0.5)  # load 0.5 doubles the expected cost
    assert cm.compute[1, 3] == pytest.approx(0.2 + 0.1 + 1e-4)


def test_a_hop_pays_its_frame_handling_on_its_own_cpu() -> None:
    """frame_ms per input plus frame_ms_per_mib per MiB in and out, derated like compute: part
    of the stage (so of the bottleneck and the latency), never of the compute prediction."""
    a = PeerSpec("a", 20.0, 10**6, up_mbps=100.0, down_mbps=40.0, latency_ms=5.0, frame_ms=2.0,
                 frame_ms_per_mib=4.0, load=0.5)
    snap = SwarmSnapshot(SNAP.requester, (a, SNAP.peers[1]))
    cm = build_costs(PROFILE, snap, PlannerOptions(amortize_requests=None))
    plain = CM.evaluate([(0, 0, 2), (1, 2, 3)], "latency")
    p = cm.evaluate([(0, 0, 2), (1, 2, 3)], "latency")
    frames = (0.002 + 0.004 * (1_000_000 + 1_000_000) / 2**20) / 0.5  # input 1 MB, output of layer 1 1 MB
    assert p.hops[0].frame_s == pytest.approx(frames) and p.hops[1].frame_s == 0.0
    assert p.hops[0].compute_s == pytest.approx(plain.hops[0].compute_s / 0.5)
    assert p.hops[0].stage_s == pytest.approx(p.hops[0].compute_s + frames)
    assert p.predicted_latency_s == pytest.approx(plain.predicted_latency_s + p.hops[0].compute_s / 2 + frames)
    assert cm.latency_s([(0, 0, 2), (1, 2, 3)]) == pytest.approx(p.predicted_latency_s)
    assert cm.search_model().evaluate([(0, 0, 2), (1, 2, 3)], "latency").hops[0].frame_s == 0.0


@pytest.mark.parametrize("field", ["frame_ms", "frame_ms_per_mib"])
def test_a_negative_frame_cost_is_refused(field: str) -> None:
    with pytest.raises(ValueError, match="frame_ms"):
        PeerSpec("a", 1.0, 1, 1.0, 1.0, 1.0, **{field: -1.0})


def test_a_quota_saves_a_lone_request_up_to_a_period_less_its_quota() -> None:
    """Peer a (0.2 s of compute on [0, 2)) under 5 ms per 25 ms: its work is longer than a period,
    so a lone request saves P - q = 20 ms; peer b's 50 ms under 40 ms per 200 ms is shorter than
    the period, so it runs at full speed: 50 ms * 0.2 = 10 ms, a saving of 40 ms."""
    a = replace(SNAP.peers[0], cpu_quota_ms=5.0, cpu_period_ms=25.0)
    b = replace(SNAP.peers[1], cpu_quota_ms=40.0, cpu_period_ms=200.0)
    cm = build_costs(PROFILE, SwarmSnapshot(SNAP.requester, (a, b)), PlannerOptions(amortize_requests=None))
    plain = CM.evaluate([(0, 0, 2), (1, 2, 3)], "latency")
    p = cm.evaluate([(0, 0, 2), (1, 2, 3)], "latency")
    assert [h.lone_saving_s for h in p.hops] == pytest.approx([0.020, 0.040])
    assert p.predicted_latency_s == pytest.approx(plain.predicted_latency_s - 0.060)
    assert cm.latency_s([(0, 0, 2), (1, 2, 3)]) == pytest.approx(p.predicted_latency_s)
    assert p.bottleneck_s == plain.bottleneck_s and cm.max_lone_saving_s == pytest.approx(0.020 + 0.160)
    assert cm.search_model().evaluate([(0, 0, 2), (1, 2, 3)], "latency").predicted_latency_s == pytest.approx(
        plain.predicted_latency_s)


def test_a_quota_of_a_core_or_more_is_refused() -> None:
    with pytest.raises(ValueError, match="cpu_quota_ms"):
        PeerSpec("a", 1.0, 1, 1.0, 1.0, 1.0, cpu_quota_ms=25.0, cpu_period_ms=25.0)
