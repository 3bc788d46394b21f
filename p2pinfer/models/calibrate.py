"""Measure this machine's compute speed (GFLOP/s), overall and per compute class.

A short, real micro-benchmark with torch on the node's own thread count, at the shapes the model
zoo actually runs (small-batch inference, not peak-FLOPs GEMMs), so the planner's cost model
predicts real span times:
- linear:    (128 x 384) @ (384 x 1536), a MiniLM feed-forward matmul
- conv:      3x3 conv, 64 -> 64 channels on 56 x 56 (a ResNet stage)
- attention: scaled_dot_product_attention for 12 heads, 128 tokens, 32 dims (MiniLM's kernel);
             only the two matmuls' FLOPs are credited, as FlopCounterMode credits them in profiles.
             (A hand-written bmm/softmax/bmm ran 1.5-3x slower in a worker thread than in the main
             thread, and nodes calibrate in a worker thread; SDPA did not, and it is what runs.)
- other:     no dedicated kernel; advertised as the overall figure
The overall figure is the harmonic mean of linear, conv and attention: the rate at which an
equal-FLOP mix of the three runs. Each class runs for budget_s / 3 and reports the FLOPs it did
divided by the wall time they took, not the median call: inside a cgroup with a CPU quota of 0.2
of a core, calls of a few ms run at full speed within a 5 ms slice and then the thread waits
20 ms, so median calls read nearly the full core (measured in the testbed's 0.4-core group:
72 GFLOP/s conv by median, 4x its share), while work / wall time over many periods reads the
quota (docs/testbed.md). 0.5 s per class covers 10 periods of a 0.1-core group (50 ms period).
Results are cached as JSON keyed by torch
version, thread count and CPU model; any other key, or a corrupt file, triggers a new measurement.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

CALIBRATION_VERSION = 3  # 2: work / wall time (quota-aware), was: median call; 3: SDPA attention kernel
CALIBRATION_FILE = "calibration.json"  # in the node's data dir
_MIN_CALLS = 3


@dataclass(frozen=True)
class ComputeCalibration:
    """Measured speeds in GFLOP/s; `from_cache` says whether this run measured anything."""

    gflops: float
    by_class: Mapping[str, float]
    threads: int
    from_cache: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_class", MappingProxyType(dict(self.by_class)))


def _linear_workload() -> tuple[Callable[[], Any], float]:
    x, w = torch.randn(128, 384), torch.randn(384, 1536)
    return (lambda: x @ w), 2.0 * 128 * 384 * 1536


def _conv_workload() -> tuple[Callable[[], Any], float]:
    x, w = torch.randn(1, 64, 56, 56), torch.randn(64, 64, 3, 3)
    return (lambda: F.conv2d(x, w, padding=1)), 2.0 * 64 * 64 * 9 * 56 * 56


def _attention_workload() -> tuple[Callable[[], Any], float]:
    heads, tokens, dim = 12, 128, 32
    q, k, v = (torch.randn(1, heads, tokens, dim) for _ in range(3))  # (B, H, T, D), as MiniLM's layer calls it

    def run() -> Any:  # softmax(Q K^T / sqrt(D)) V by the kernel the model zoo uses
        return F.scaled_dot_product_attention(q, k, v)

    return run, 2 * 2.0 * heads * tokens * tokens * dim


_WORKLOADS = {"linear": _linear_workload, "conv": _conv_workload, "attention": _attention_workload}


def _timed(workload: Callable[[], Any], seconds: float) -> tuple[int, float]:
    """Calls made within a time box (after one warm-up call), and the wall time they spanned
    (throttled time included: that is the point)."""
    workload()
    calls = 0
    began = time.perf_counter()
    deadline = began + seconds
    while calls < _MIN_CALLS or time.perf_counter() < deadline:
        workload()
        calls += 1
    return calls, time.perf_counter() - began


def benchmark(*, threads: int, budget_s: float = 1.5) -> ComputeCalibration:
    """Run the micro-benchmark now (about `budget_s` seconds) with `threads` torch threads."""
    if threads < 1:
        raise ValueError("threads must be >= 1")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        with torch.inference_mode():
            workloads = {name: make() for name, make in _WORKLOADS.items()}
            timed = {name: _timed(fn, budget_s / len(workloads)) for name, (fn, _flops) in workloads.items()}
    finally:
        torch.set_num_threads(previous)
    by_class = {name: workloads[name][1] * calls / max(wall, 1e-9) / 1e9 for name, (calls, wall) in timed.items()}
    overall = len(by_class) / sum(1.0 / r for r in by_class.values())
    by_class["other"] = overall
    return ComputeCalibration(gflops=overall, by_class=by_class, threads=threads)


def cache_key(threads: int) -> dict[str, Any]:
    """What a cached calibration must match to be reused."""
    return {"version": CALIBRATION_VERSION, "torch": torch.__version__, "threads": threads,
            "cpu": _cpu_model(), "machine": platform.machine(), "cpus": os.cpu_count()}


def measure_compute(*, threads: int, cache_path: Path | None, budget_s: float = 1.5,
                    force: bool = False) -> ComputeCalibration:
    """The cached calibration for this machine and thread count, measuring it if needed."""
    key = cache_key(threads)
    if cache_path is not None and not force:
        cached = _read_cache(Path(cache_path), key)
        if cached is not None:
            return cached
    result = benchmark(threads=threads, budget_s=budget_s)
    logger.info("compute calibration (%d threads): %.1f GFLOP/s %s", threads, result.gflops,
                {k: round(v, 1) for k, v in result.by_class.items()})
    if cache_path is not None:
        _write_cache(Path(cache_path), key, result)
    return result


def _read_cache(path: Path, key: dict[str, Any]) -> ComputeCalibration | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("key") != key:
            return None
        by_class = {str(k): float(v) for k, v in doc["by_class"].items()}
        gflops = float(doc["gflops"])
        if not (gflops > 0 and all(v > 0 for v in by_class.values()) and gflops < float("inf")):
            raise ValueError("non-positive speed")
        return ComputeCalibration(gflops=gflops, by_class=by_class, threads=key["threads"], from_cache=True)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.warning("ignoring unreadable calibration cache %s (%s); measuring again", path, exc)
        return None


def _write_cache(path: Path, key: dict[str, Any], result: ComputeCalibration) -> None:
    doc = {"key": key, "gflops": result.gflops, "by_class": dict(result.by_class), "measured_at": time.time()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("cannot write calibration cache %s: %s", path, exc)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
