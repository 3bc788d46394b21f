"""A node's frame handling cost: the fit, the real loopback measurement and its cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2pinfer.models.cpu_quota import usable_cores
from p2pinfer.net.frame_cost import LARGE_BYTES, SMALL_BYTES, fit, measure_frame_cost, scaled


def test_fit_splits_a_fixed_and_a_per_mib_cost() -> None:
    # 1 ms fixed + 4 ms per MiB moved; the measured hop reads and sends the same size
    small, large = 1.0 + 4.0 * 2 * SMALL_BYTES / 2**20, 1.0 + 4.0 * 2 * LARGE_BYTES / 2**20
    assert fit(small, large) == pytest.approx((1.0, 4.0))
    assert fit(5.0, 4.0) == (5.0, 0.0)  # noise that makes large frames look cheaper: no negative slope


def test_wall_costs_divide_by_the_cores_and_stay_positive() -> None:
    cost = scaled(2.0, 5.0, 0.25)
    assert (cost.fixed_ms, cost.ms_per_mib) == (8.0, 20.0)
    assert min(scaled(0.0, 0.0, 1.0).fixed_ms, scaled(0.0, 0.0, 1.0).ms_per_mib) > 0  # a record carries them > 0


def test_measured_on_a_real_loopback_connection_and_cached(tmp_path: Path) -> None:
    cache = tmp_path / "frame_cost.json"
    first = measure_frame_cost(cache_path=cache)
    assert not first.from_cache and 0.05 < first.fixed_ms < 100 and 0.1 < first.ms_per_mib < 200
    stored = json.loads(cache.read_text())
    cores = usable_cores(1)
    assert first.fixed_ms == pytest.approx(max(stored["fixed_cpu_ms"], 1e-3) / cores)
    again = measure_frame_cost(cache_path=cache)
    assert again.from_cache and (again.fixed_ms, again.ms_per_mib) == (first.fixed_ms, first.ms_per_mib)
    stored["key"]["version"] = -1  # another version (or machine): measured again
    cache.write_text(json.dumps(stored))
    assert not measure_frame_cost(cache_path=cache).from_cache
    cache.write_text("{corrupt")
    assert not measure_frame_cost(cache_path=cache).from_cache
