"""Compute calibration: real measurement, cache reuse and invalidation."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest
import torch

from p2pinfer.core.profile import COMPUTE_CLASSES
from p2pinfer.models.calibrate import ComputeCalibration, _timed, benchmark, cache_key, measure_compute
from p2pinfer.models.kind_workloads import KIND_INSTANCES

BUDGET = 0.1


def test_benchmark_measures_every_class_and_restores_threads() -> None:
    before = torch.get_num_threads()
    result = benchmark(threads=1, budget_s=BUDGET)
    assert torch.get_num_threads() == before
    assert set(result.by_class) == set(COMPUTE_CLASSES)
    assert all(0.05 < speed < 1e6 for speed in result.by_class.values()), dict(result.by_class)
    main = [result.by_class[c] for c in ("linear", "conv", "attention")]
    assert min(main) <= result.gflops <= max(main)  # harmonic mean lies between
    assert result.by_class["other"] == result.gflops and not result.from_cache
    assert set(result.by_kind) == set(KIND_INSTANCES) and all(0 < s < 1e6 for s in result.by_kind.values())
    with pytest.raises(ValueError):
        benchmark(threads=0)


def test_measured_linear_rate_predicts_a_bigger_matmul() -> None:
    """The figure is a usable cost-model input: it predicts a 4x bigger matmul within 4x.

    Medians on both sides, so a burst of load from a neighbour does not decide the outcome."""
    speed = benchmark(threads=1, budget_s=BUDGET).by_class["linear"]
    x, w = torch.randn(256, 768), torch.randn(768, 1536)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            x @ w
            times = []
            for _ in range(15):
                start = time.perf_counter()
                x @ w
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    predicted = 2 * 256 * 768 * 1536 / (speed * 1e9)
    assert predicted / 4 < statistics.median(times) < predicted * 4, (predicted, sorted(times))


def test_cache_is_written_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "calibration.json"
    first = measure_compute(threads=1, cache_path=path, budget_s=BUDGET)
    assert not first.from_cache and path.exists()
    doc = json.loads(path.read_text())
    assert doc["key"] == cache_key(1) and doc["key"]["torch"] == torch.__version__
    start = time.perf_counter()
    again = measure_compute(threads=1, cache_path=path, budget_s=BUDGET)
    assert time.perf_counter() - start < 0.05
    assert again == ComputeCalibration(first.gflops, first.by_class, 1, from_cache=True, by_kind=first.by_kind)
    assert not measure_compute(threads=1, cache_path=path, budget_s=BUDGET, force=True).from_cache


def test_cache_for_other_threads_or_torch_is_not_reused(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    measure_compute(threads=1, cache_path=path, budget_s=BUDGET)
    assert not measure_compute(threads=2, cache_path=path, budget_s=BUDGET).from_cache
    doc = json.loads(path.read_text())
    assert doc["key"]["threads"] == 2
    doc["key"]["torch"] = "0.0.1"
    path.write_text(json.dumps(doc))
    assert not measure_compute(threads=2, cache_path=path, budget_s=BUDGET).from_cache


@pytest.mark.parametrize("content", ["{not json", "[]", '{"key": null}', "__KEY__"])
def test_corrupt_cache_is_measured_again(tmp_path: Path, content: str) -> None:
    path = tmp_path / "calibration.json"
    if content == "__KEY__":  # right key, poisoned numbers
        content = json.dumps({"key": cache_key(1), "gflops": -1.0, "by_class": {"linear": 1.0}})
    path.write_text(content)
    result = measure_compute(threads=1, cache_path=path, budget_s=BUDGET)
    assert not result.from_cache and result.gflops > 0
    assert measure_compute(threads=1, cache_path=path, budget_s=BUDGET).from_cache


def test_no_cache_path_always_measures() -> None:
    assert not measure_compute(threads=1, cache_path=None, budget_s=BUDGET).from_cache


def test_timed_counts_the_cpu_of_every_repeated_workload() -> None:
    """The CPU total behind the fallback CPU share counts each call's repeats, not one workload
    per call (it once did, and a 0.2-core quota read as ~0.12). A fake CPU clock: each workload is 1 ms."""
    clock = [0.0]
    runs = [0]

    def workload() -> None:
        clock[0] += 0.001
        runs[0] += 1

    per_call, used, _wall = _timed(workload, 0.0, lambda: clock[0])
    assert per_call == pytest.approx(0.001)
    assert used == pytest.approx(0.001 * (runs[0] - 1))  # all but the untimed warm-up
    assert runs[0] - 1 > 3  # several workloads per call: the case the old sum got wrong


def test_timed_box_is_cpu_time_not_wall_time() -> None:
    """A sub-core node gets the same number of samples as a free core: the box closes on the CPU
    the calls used, however long the wall clock ran (here 1 s of wall per ms of CPU), up to the
    wall cap, and never before _MIN_CALLS calls."""
    cpu, wall = [0.0], [0.0]

    def workload() -> None:
        cpu[0] += 0.001
        wall[0] += 0.01  # a 10% share of a core

    _per_call, used, spanned = _timed(workload, 0.05, lambda: cpu[0], wall_clock=lambda: wall[0])
    assert 0.05 <= used < 0.05 + 0.011  # closes within one call of the box
    assert spanned == pytest.approx(10 * used)

    def starved() -> None:
        cpu[0] += 0.001
        wall[0] += 1.0  # 0.1% of a core: the wall cap ends the box early

    per_call, used, _ = _timed(starved, 0.05, lambda: cpu[0], wall_clock=lambda: wall[0])
    assert per_call == pytest.approx(0.001) and used < 0.05
