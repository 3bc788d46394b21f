"""The window form of the flow LP (core/flow_lp.py) and threshold slicing, against brute force.

The window LP may call T infeasible only through a certificate it checks itself; these tests
check that such a certificate is never produced for a T some chain meets, at T itself and at
every larger T it is claimed for (`certifies_at`), and that the windows contain every span.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pinfer.core.costs import restrict
from p2pinfer.core.flow_lp import arcs, certifies, certifies_at, solve_windows, windows
from p2pinfer.core.threshold import CAP_SLACK, at, columns

from .test_planner_threshold import chains, instance, thresholds

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def best_bottleneck(cm) -> float:
    return min((cm.evaluate(c, "throughput").bottleneck_s for c in chains(cm, math.inf)), default=math.inf)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_every_allowed_span_lies_in_a_window_of_its_peer(seed: int) -> None:
    cm = instance(seed)
    if cm.num_peers == 0:
        return
    for t in thresholds(cm, seed):
        th = at(cm, t)
        wy, wa, we = windows(th)
        for y, a, b in zip(*arcs(th)):
            assert np.any((wy == y) & (wa <= a) & (we >= b)), (y, a, b)
        for y, a, e in zip(wy, wa, we):  # and every window is itself an allowed span
            assert np.any((arcs(th)[0] == y) & (arcs(th)[1] == a) & (arcs(th)[2] == e))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_window_lp_is_a_relaxation_and_its_certificates_are_sound(seed: int) -> None:
    """Infeasible (with a certificate) only where no chain exists, also at the larger T the
    planner extends a certificate to; feasible wherever a chain exists."""
    cm = instance(seed, max_layers=6, max_peers=4)
    if cm.num_peers == 0:
        return
    best = best_bottleneck(cm)
    for t in thresholds(cm, seed):
        got = solve_windows(cm, at(cm, t))
        assert got is not None
        exists = math.isfinite(best) and best <= t * (1 + CAP_SLACK)
        if exists:
            assert got[0]
        if not got[0] and got[2] is not None:
            for f in (1.0, 1.001, 1.01, 1.1, 2.0):
                if certifies_at(at(cm, t * f), got[2]):
                    assert not (math.isfinite(best) and best <= t * f * (1 + CAP_SLACK))


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), weights=st.lists(st.floats(0, 10), min_size=7, max_size=7))
def test_any_certificate_that_checks_is_a_proof(seed: int, weights: list[float]) -> None:
    """`certifies` with arbitrary non-negative weights never rules out a T some chain meets."""
    cm = instance(seed)
    if cm.num_peers == 0:
        return
    best = best_bottleneck(cm)
    w = np.array(weights[:cm.num_layers])
    for t in thresholds(cm, seed):
        y, a, e = windows(at(cm, t))
        if len(y) and certifies(w, y, a, e):
            assert not (math.isfinite(best) and best <= t * (1 + CAP_SLACK))


def test_certificate_rejects_negative_or_empty_weights() -> None:
    y, a, e = np.array([0]), np.array([0]), np.array([2])
    assert not certifies(np.array([1.0, -1.0]), y, a, e)
    assert not certifies(np.zeros(2), y, a, e)
    assert certifies(np.array([1.0, 1.0, 1.0]), y, a, e)  # layer 2 is in no window


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_columns_equals_compiling_the_restricted_model(seed: int, data) -> None:
    """Slicing a compiled threshold to some peers is the same as compiling it over just them."""
    cm = instance(seed)
    if cm.num_peers == 0:
        return
    keep = sorted(data.draw(st.sets(st.integers(0, cm.num_peers - 1), min_size=1)))
    for t in thresholds(cm, seed):
        full, sub = columns(at(cm, t), np.array(keep)), at(restrict(cm, keep), t)
        for name in ("lo", "start_ok", "end_ok", "alive", "first", "hi_end"):
            assert np.array_equal(getattr(full, name), getattr(sub, name)), name
