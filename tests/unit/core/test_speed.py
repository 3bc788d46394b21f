"""Measured vs advertised speed: over-claimers are planned at their measured speed."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pinfer.core.speed import (
    ALL,
    SpeedParams,
    SpeedState,
    effective_by_kind,
    effective_gflops,
    hop_deadline_s,
    is_overclaimed,
    measured_gflops,
    observe,
)

GFLOP = 10**9


def hop(state, *, true_gflops, adv, flops=4 * GFLOP, jitter=1.0, by_class=None, adv_by_class=None):
    return observe(state, flops=flops, measured_s=flops / (true_gflops * 1e9) * jitter, advertised_gflops=adv,
                   flops_by_class=by_class, advertised_by_class=adv_by_class)


def test_no_samples_means_the_advertisement_is_used():
    assert effective_gflops(SpeedState(), 100.0, {"conv": 50.0}) == (100.0, {"conv": 50.0})
    assert measured_gflops(SpeedState()) is None and not is_overclaimed(SpeedState(), 100.0)


def test_ten_x_overclaimer_is_planned_at_its_true_speed_after_three_hops():
    rng = random.Random(1)
    state, history = SpeedState(), []
    for _ in range(5):
        state = hop(state, true_gflops=10.0, adv=100.0, jitter=math.exp(rng.gauss(0, 0.2)))
        history.append(effective_gflops(state, 100.0)[0])
    assert history[0] == history[1] == 100.0  # fewer than min_samples: still the advertisement
    assert all(10.0 / 1.5 < g < 10.0 * 1.5 for g in history[2:])  # within its jitter of the truth
    assert is_overclaimed(state, 100.0)


def test_one_stall_among_three_samples_does_not_move_the_estimate():
    state = SpeedState()
    for jitter in (1.0, 20.0, 1.0):  # a 20x GC pause in the middle
        state = hop(state, true_gflops=50.0, adv=50.0, jitter=jitter)
    assert effective_gflops(state, 50.0)[0] == pytest.approx(50.0)
    assert not is_overclaimed(state, 50.0)


def test_per_class_estimates_catch_a_peer_that_overclaims_only_conv():
    state = SpeedState()
    for _ in range(3):  # conv spans run 10x slower than advertised, linear spans as advertised
        state = hop(state, true_gflops=10.0, adv=100.0, by_class={"conv": 4 * GFLOP}, adv_by_class={"conv": 100.0})
        state = hop(state, true_gflops=100.0, adv=100.0, by_class={"linear": 4 * GFLOP}, adv_by_class={"linear": 100.0})
    _, by_class = effective_gflops(state, 100.0, {"conv": 100.0, "linear": 100.0})
    assert by_class["conv"] == pytest.approx(10.0)
    assert by_class["linear"] == pytest.approx(100.0)


def test_unattributed_flops_count_as_other_and_small_shares_are_not_attributed():
    state = observe(SpeedState(), flops=10 * GFLOP, measured_s=1.0, advertised_gflops=10.0,
                    flops_by_class={"attention": GFLOP // 10})
    assert set(state.samples) == {ALL, "other"}


def test_measured_speed_is_never_above_the_claim():
    state = SpeedState()
    for _ in range(3):
        state = hop(state, true_gflops=400.0, adv=100.0)
    assert effective_gflops(state, 100.0)[0] == 100.0


def test_estimate_is_absolute_so_a_raised_claim_gains_nothing():
    state = SpeedState()
    for _ in range(3):
        state = hop(state, true_gflops=10.0, adv=100.0)
    assert effective_gflops(state, 1000.0)[0] == pytest.approx(10.0)  # claims 10x more later


def test_window_keeps_only_recent_hops():
    state = SpeedState()
    for _ in range(5):
        state = hop(state, true_gflops=10.0, adv=100.0)
    for _ in range(3):  # upgraded hardware: the new speed wins after a majority of the window
        state = hop(state, true_gflops=100.0, adv=100.0)
    assert len(state.samples[ALL]) == SpeedParams().window
    assert effective_gflops(state, 100.0)[0] == pytest.approx(100.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(1 / 3.9, 3.9), min_size=1, max_size=30))
def test_honest_jitter_below_the_overclaim_factor_is_never_flagged(jitters):
    state = SpeedState()
    for j in jitters:
        state = hop(state, true_gflops=25.0, adv=25.0, jitter=j)
        assert not is_overclaimed(state, 25.0)


def test_json_roundtrip_and_bad_state():
    state = hop(SpeedState(), true_gflops=10.0, adv=100.0)
    assert SpeedState.from_json(state.to_json()).samples == state.samples
    with pytest.raises(ValueError):
        SpeedState({"gpu": (1.0,)})
    with pytest.raises(ValueError):
        SpeedState.from_json([1, 2])


@pytest.mark.parametrize("kwargs", [
    {"flops": -1, "measured_s": 1.0, "advertised_gflops": 1.0},
    {"flops": 1, "measured_s": 0.0, "advertised_gflops": 1.0},
    {"flops": 1, "measured_s": math.inf, "advertised_gflops": 1.0},
    {"flops": 1, "measured_s": 1.0, "advertised_gflops": 0.0},
    {"flops": 1, "measured_s": 1.0, "advertised_gflops": 1.0, "flops_by_class": {"gpu": 1}},
    {"flops": 1, "measured_s": 1.0, "advertised_gflops": 1.0, "advertised_by_class": {"conv": -2.0}},
    {"flops": 1, "measured_s": 1.0, "advertised_gflops": 1.0, "predicted_s": -1.0},
    {"flops": 1, "measured_s": 1.0, "advertised_gflops": 1.0, "predicted_s": math.nan},
])
def test_bad_observations_are_rejected(kwargs):
    with pytest.raises(ValueError):
        observe(SpeedState(), **kwargs)


def test_hop_deadline_covers_jitter_up_to_the_slack():
    assert hop_deadline_s(1.5, slack=4.0, grace_s=2.0) == 8.0
    with pytest.raises(ValueError):
        hop_deadline_s(-1.0)
    with pytest.raises(ValueError):
        hop_deadline_s(1.0, slack=0.5)
    with pytest.raises(ValueError):
        SpeedParams(min_samples=6, window=5)


def test_the_planners_prediction_replaces_the_class_sum_and_kind_speeds_follow_the_scalar():
    """A peer advertises 100 GFLOP/s, but 20 for the layer kind of its span, and runs the span
    as that kind table predicts: with the planner's prediction it is honest (effective speed
    stays 100); judged by the class sum alone it would look 5x slow. A peer that runs half as
    fast as its kind table says is planned at half its advertised kind speeds."""
    flops, adv, kinds = 4 * GFLOP, 100.0, {"bert_layer": 20.0, "linear": 5.0}
    predicted = flops / (kinds["bert_layer"] * 1e9)
    honest = slow = by_class_only = SpeedState()
    for _ in range(3):
        honest = observe(honest, flops=flops, measured_s=predicted, advertised_gflops=adv, predicted_s=predicted)
        by_class_only = observe(by_class_only, flops=flops, measured_s=predicted, advertised_gflops=adv)
        slow = observe(slow, flops=flops, measured_s=2 * predicted, advertised_gflops=adv, predicted_s=predicted)
    assert effective_gflops(honest, adv)[0] == pytest.approx(adv)
    assert effective_gflops(by_class_only, adv)[0] == pytest.approx(20.0)
    assert effective_by_kind(adv, effective_gflops(honest, adv)[0], kinds) == pytest.approx(kinds)
    assert effective_by_kind(adv, effective_gflops(slow, adv)[0], kinds) == pytest.approx({k: v / 2 for k, v in kinds.items()})
    assert observe(SpeedState(), flops=flops, measured_s=1.0, advertised_gflops=adv, predicted_s=0.0) == SpeedState()
