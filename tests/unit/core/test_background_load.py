"""The background-load estimate a node advertises as its record's load."""

from __future__ import annotations

import pytest

from p2pinfer.core.background_load import MAX_LOAD, LoadEstimate, worth_republishing


def test_idle_windows_give_the_cpu_share_of_the_usable_cores() -> None:
    est = LoadEstimate()
    assert est.observe(0.05, 5.0, 0.2, served=False) == pytest.approx(0.05)  # 10 ms/s of a 0.2-core quota


def test_windows_with_hop_work_are_skipped() -> None:
    est = LoadEstimate()
    assert est.observe(4.0, 5.0, 1.0, served=True) is None  # serving is work, not background
    est.observe(0.1, 5.0, 1.0, served=False)
    assert est.observe(4.0, 5.0, 1.0, served=True) == pytest.approx(0.02)


def test_the_estimate_follows_newer_windows_and_stays_below_one() -> None:
    est = LoadEstimate(weight=0.5)
    est.observe(1.0, 1.0, 1.0, served=False)
    assert est.value == MAX_LOAD  # a fully busy window is capped: a record's load must be < 1
    est.observe(0.0, 1.0, 1.0, served=False)
    assert est.value == pytest.approx(MAX_LOAD / 2)


@pytest.mark.parametrize("wall, cores", [(0.0, 1.0), (1.0, 0.0), (-1.0, 1.0)])
def test_degenerate_windows_change_nothing(wall: float, cores: float) -> None:
    est = LoadEstimate()
    assert est.observe(0.5, wall, cores, served=False) is None


@pytest.mark.parametrize("advertised, estimate, expected", [
    (0.0, 0.005, False),  # under the absolute step
    (0.0, 0.05, True),
    (0.10, 0.11, False),  # 10% relative change: not worth a signed record and a DHT put
    (0.10, 0.15, True),
    (0.15, 0.10, True),  # falls as well as rises
])
def test_republishing_needs_a_change_that_moves_plans(advertised: float, estimate: float, expected: bool) -> None:
    assert worth_republishing(advertised, estimate) is expected
