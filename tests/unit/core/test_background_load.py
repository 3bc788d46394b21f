"""The background-load estimate a node advertises as its record's load."""

from __future__ import annotations

import pytest

from p2pinfer.core.background_load import MAX_LOAD, LoadEstimate, worth_republishing


def test_idle_windows_give_the_cpu_share_of_the_usable_cores_once_enough_were_seen() -> None:
    est = LoadEstimate(min_windows=2)
    assert est.observe(0.05, 5.0, 0.2, served=False) is None  # one window is not an estimate
    assert est.observe(0.05, 5.0, 0.2, served=False) == pytest.approx(0.05)  # 10 ms/s of a 0.2-core quota


def test_windows_with_hop_work_are_skipped() -> None:
    est = LoadEstimate(min_windows=1)
    assert est.observe(4.0, 5.0, 1.0, served=True) is None  # serving is work, not background
    est.observe(0.1, 5.0, 1.0, served=False)
    assert est.observe(4.0, 5.0, 1.0, served=True) == pytest.approx(0.02)


def test_a_burst_in_one_window_does_not_carry_and_old_windows_age_out() -> None:
    est = LoadEstimate(window=3, min_windows=1)
    for cpu in (0.1, 0.1, 3.0):  # a DHT put in the third window
        est.observe(cpu, 10.0, 1.0, served=False)
    assert est.value == pytest.approx(0.01)
    for _ in range(3):
        est.observe(2.0, 10.0, 1.0, served=False)
    assert est.value == pytest.approx(0.2)
    est.observe(20.0, 10.0, 1.0, served=False)
    assert max(est.shares) == MAX_LOAD  # a record's load must be < 1


@pytest.mark.parametrize("wall, cores", [(0.0, 1.0), (1.0, 0.0), (-1.0, 1.0)])
def test_degenerate_windows_change_nothing(wall: float, cores: float) -> None:
    est = LoadEstimate(min_windows=1)
    assert est.observe(0.5, wall, cores, served=False) is None


@pytest.mark.parametrize("advertised, estimate, expected", [
    (0.0, 0.005, False),  # under the absolute step
    (0.0, 0.05, True),
    (0.10, 0.11, False),  # 10% relative change: not worth a signed record
    (0.10, 0.15, True),
    (0.15, 0.10, True),  # falls as well as rises
])
def test_republishing_needs_a_change_that_moves_plans(advertised: float, estimate: float, expected: bool) -> None:
    assert worth_republishing(advertised, estimate) is expected
