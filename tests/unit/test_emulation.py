"""Device emulation: the executor wrapper waits (slowdown - 1) x the real compute, and the
uplink shaper queues frames behind each other at the configured rate plus latency."""

from __future__ import annotations

import pytest

from p2pinfer.config import EmulationSection
from p2pinfer.emulation import SlowedExecutor, UplinkShaper, send_delay_for, slowed


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_slowed_executor_waits_slowdown_minus_one_times_the_compute() -> None:
    clock, slept = FakeClock(), []

    def compute(x: int) -> int:
        clock.now += 0.1  # the real work takes 100 ms
        return x * 2

    run = SlowedExecutor(compute, 4.0, sleep=slept.append, clock=clock)
    assert run(21) == 42
    assert slept == [pytest.approx(0.3)]


def test_slowdown_one_is_not_wrapped_and_bad_slowdowns_are_refused() -> None:
    def fn(x: int) -> int:
        return x

    assert slowed(fn, EmulationSection()) is fn
    assert isinstance(slowed(fn, EmulationSection(compute_slowdown=2.0)), SlowedExecutor)
    with pytest.raises(ValueError, match="slowdown must be >= 1"):
        SlowedExecutor(fn, 0.5)


def test_uplink_shaper_queues_frames_at_the_link_rate_plus_latency() -> None:
    clock = FakeClock()
    shaper = UplinkShaper(8.0, 5.0, clock=clock)  # 8 Mbit/s = 1 MB/s, 5 ms one way
    assert shaper(1_000_000) == pytest.approx(1.0 + 0.005)
    assert shaper(500_000) == pytest.approx(1.5 + 0.005)  # waits behind the first frame
    clock.now += 10.0  # the link drained meanwhile
    assert shaper(1_000) == pytest.approx(0.001 + 0.005)


def test_send_delay_only_when_the_link_is_shaped() -> None:
    assert send_delay_for(EmulationSection()) is None
    latency_only = send_delay_for(EmulationSection(latency_ms=20.0))
    assert latency_only is not None and latency_only(10**9) == pytest.approx(0.02)
    with pytest.raises(ValueError):
        UplinkShaper(0.0, 1.0)
