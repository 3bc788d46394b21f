"""How the testbed benchmark measures a replicated stream's steady rate (pure functions)."""

from __future__ import annotations

import pytest

from benchmarks.testbed_bench.requester import replicated_inputs, steady_replicated


def test_steady_rate_is_the_sum_of_each_chains_own_rate() -> None:
    # chain 0 delivers every 0.5 s, chain 1 every 2 s; the queue ran dry at 10 s
    fast = [(1.0 + 0.5 * i, 0) for i in range(19)]
    slow = [(3.0 + 2.0 * i, 1) for i in range(5)]
    done = sorted(fast + slow)
    rate = steady_replicated([t for t, _ in done], [c for _, c in done], last_dispatch=10.0)
    assert rate == pytest.approx(2.0 + 0.5)


def test_a_slow_chains_single_result_does_not_swing_the_rate() -> None:
    # the same fast chain, and a slow chain with one result inside the busy span or none
    fast = [(1.0 + 0.5 * i, 0) for i in range(19)]
    with_one = sorted(fast + [(9.0, 1), (15.0, 1)])
    rate = steady_replicated([t for t, _ in with_one], [c for _, c in with_one], last_dispatch=10.0)
    assert rate == pytest.approx(2.0 + 1 / 6.0)  # the slow chain from its two results


def test_enough_inputs_for_the_slowest_chain() -> None:
    assert replicated_inputs([1.0, 0.5, 0.25], frames=12) == 35  # 5 for the 0.25-input/s chain
    assert replicated_inputs([1.0, 1.0], frames=12) == 12
    assert replicated_inputs([10.0, 0.01], frames=12) == 200  # capped
