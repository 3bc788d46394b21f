"""Measure this machine's compute speed (GFLOP/s): overall, per compute class and per layer kind.

A short, real micro-benchmark with torch on the node's own thread count, at the shapes the model
zoo actually runs (small-batch inference, not peak-FLOPs GEMMs), so the planner's cost model
predicts real span times:
- linear:    (128 x 384) @ (384 x 1536), a MiniLM feed-forward matmul
- conv:      the zoo's two conv layer families, FLOP-weighted: one ResNet-50 bottleneck block
             (1x1, 3x3, 1x1 convs with batch norm, ReLU and the residual add; 512 -> 128 -> 512
             channels at 28 x 28) and one VGG-style 3x3 conv + batch norm + ReLU (256 channels at
             14 x 14). Per CPU-second a bottleneck block runs at ~0.7x a plain 3x3 conv here (its
             1x1 convs and elementwise work), VGG's layers at ~1.0x; no single kernel is within
             15% of both, the mix puts each within ~15% (docs/testbed.md).
- attention: scaled_dot_product_attention for 12 heads, 128 tokens, 32 dims (MiniLM's kernel);
             only the two matmuls' FLOPs are credited, as FlopCounterMode credits them in profiles.
             (A hand-written bmm/softmax/bmm ran 1.5-3x slower in a worker thread than in the main
             thread, and nodes calibrate in a worker thread; SDPA did not, and it is what runs.)
- other:     no dedicated kernel; advertised as the overall figure
The overall figure is the harmonic mean of linear, conv and attention: the rate at which an
equal-FLOP mix of the three runs. Per layer kind (the speed table the planner prefers where it
has an entry): the real registry layers at zoo shapes, models/kind_workloads.py; each call
repeats its layers to at least ~10 ms of CPU (two slices of the testbed's quotas), so that calls
pay the cold caches of throttled periods as spans do.

Speed = FLOPs per CPU-second x the cores we may use (`cpu_quota.usable_cores`: one per thread,
capped by the cgroup CPU quota and the CPU affinity). The kernels are timed in CPU seconds of the
computing thread(s), not wall time: wall time also counts every moment the host gave the CPU to
someone else, so a node that calibrated while its neighbours did (the testbed starts 8 at once)
advertised 0.6-0.9 of what its quota then delivered, and that figure was cached for good. CPU
time under a quota still includes what throttling costs per CPU-second (cold caches after each
throttled period), because the kernels run inside the group. Each rate is the mean over the
fastest three quarters of its calls in CPU seconds (robust to bursts of neighbours thrashing the
shared caches, which slow calls even in CPU time, yet paying the throttled periods' cold caches
as a long span does). Inside a quota a kernel's rate drifts for a while (measured, 0.4 core:
a bottleneck block at 41 GFLOP/s over the first 0.3 s, 60 over the next 1.5 s), and a short box
leaves a sub-core node a handful of calls per kind, so each class and kind is timed for a box of
its own CPU time, not wall time: budget_s / 8 CPU seconds per thread per class and
budget_s * 3/4 / len(KIND_INSTANCES) per kind (default 3 s: 0.375 s per kind; 3 s of wall time on a
free core, 15 s at start on a 0.2-core node, then cached). The box was once wall time (5 s): eight
nodes calibrating at once inside the testbed's quotas then gave 0.2-core nodes ~0.12 s of CPU per
kind, and their bottleneck rate came out 45-61 GFLOP/s per CPU-second from process to process
(nodes of one class, two runs); with 0.375 s of CPU per kind, 61-64 over three runs
(docs/testbed.md). A box never runs past 50x its CPU time in wall time (a process starved below
2% of a core stops early, after at least 3 calls). Results are cached as JSON (the
per-CPU-second rates, keyed by torch version, thread count and CPU model; any other key, or a
corrupt file, triggers a new measurement); the usable cores are read again at every start.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F

from .cpu_quota import QuotaUnknown, usable_cores
from .kind_workloads import KIND_INSTANCES, kind_workload

logger = logging.getLogger(__name__)

CALIBRATION_VERSION = 8  # 2: work / wall time, was: median call; 3: SDPA attention; 4: CPU time x usable cores, zoo conv mix; 5: median call; 6: layer kinds; 7: trimmed mean, 5 s; 8: boxes of CPU time
DEFAULT_BUDGET_S = 3.0  # CPU seconds per thread for the whole calibration (see the module doc)
_MAX_WALL_PER_CPU = 50.0  # a box stops after this many wall seconds per CPU second of its box
KIND_KEY = "kind:"  # prefix of the layer kinds' rates among the classes' (cache and per_cpu_second)
_MIN_CALL_CPU_S = 0.010  # a timed call repeats its workload to at least this much CPU time
CALIBRATION_FILE = "calibration.json"  # in the node's data dir
_MIN_CALLS = 3


@dataclass(frozen=True)
class ComputeCalibration:
    """Measured speeds in GFLOP/s; `from_cache` says whether this run measured anything."""

    gflops: float
    by_class: Mapping[str, float]
    threads: int
    from_cache: bool = False
    by_kind: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_class", MappingProxyType(dict(self.by_class)))
        object.__setattr__(self, "by_kind", MappingProxyType(dict(self.by_kind)))


def _linear_workload() -> tuple[Callable[[], Any], float]:
    x, w = torch.randn(128, 384), torch.randn(384, 1536)
    return (lambda: x @ w), 2.0 * 128 * 384 * 1536


def _bn_relu(x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """Inference batch norm (identity statistics, real arithmetic), optional residual add, ReLU."""
    ch = x.shape[1]
    y = F.batch_norm(x, torch.zeros(ch), torch.ones(ch), torch.ones(ch), torch.zeros(ch), False)
    return F.relu(y if residual is None else y + residual)


def _conv_workload() -> tuple[Callable[[], Any], float]:
    x = torch.randn(1, 512, 28, 28)  # (B, C, H, W): a ResNet-50 stage-3 bottleneck's input
    w1, w2, w3 = torch.randn(128, 512, 1, 1), torch.randn(128, 128, 3, 3), torch.randn(512, 128, 1, 1)
    v, wv = torch.randn(1, 256, 14, 14), torch.randn(256, 256, 3, 3)  # a VGG-16 conv_bn_act layer's input

    def run() -> Any:
        y = _bn_relu(F.conv2d(x, w1))
        y = _bn_relu(F.conv2d(y, w2, padding=1))
        _bn_relu(F.conv2d(y, w3), residual=x)
        return _bn_relu(F.conv2d(v, wv, padding=1))

    bottleneck = 2.0 * 28 * 28 * (512 * 128 + 128 * 128 * 9 + 128 * 512)
    return run, bottleneck + 2.0 * 256 * 256 * 9 * 14 * 14


def _attention_workload() -> tuple[Callable[[], Any], float]:
    heads, tokens, dim = 12, 128, 32
    q, k, v = (torch.randn(1, heads, tokens, dim) for _ in range(3))  # (B, H, T, D), as MiniLM's layer calls it

    def run() -> Any:  # softmax(Q K^T / sqrt(D)) V by the kernel the model zoo uses
        return F.scaled_dot_product_attention(q, k, v)

    return run, 2 * 2.0 * heads * tokens * tokens * dim


_WORKLOADS = {"linear": _linear_workload, "conv": _conv_workload, "attention": _attention_workload}
_RATE_KEYS = set(_WORKLOADS) | {KIND_KEY + kind for kind in KIND_INSTANCES}


def _timed(workload: Callable[[], Any], cpu_box_s: float, cpu_clock: Callable[[], float], *,
           threads: int = 1, wall_clock: Callable[[], float] = time.perf_counter) -> tuple[float, float, float]:
    """Calls made until they used `cpu_box_s` CPU seconds per thread (after one warm-up call; a
    call repeats the workload to at least _MIN_CALL_CPU_S of CPU as the warm-up timed it): the
    CPU seconds per workload call (mean of the fastest three quarters), the CPU time they all
    used and the wall time they spanned. Not the plain mean: a burst of neighbours thrashing the
    shared caches slows a few calls even in CPU time; not the fastest calls: inside a quota most
    calls straddle a throttled period and restart with cold caches, and a span pays that too
    (measured: the lower quartile over-rated the 0.4-core node by ~1.3x against its ResNet-50 span)."""
    cpu0 = cpu_clock()
    workload()
    repeat = max(1, min(64, math.ceil(_MIN_CALL_CPU_S / max(cpu_clock() - cpu0, 1e-6))))
    per_call: list[float] = []
    box = cpu_box_s * threads
    used = 0.0
    began = wall_clock()
    wall_deadline = began + cpu_box_s * _MAX_WALL_PER_CPU
    while len(per_call) < _MIN_CALLS or (used < box and wall_clock() < wall_deadline):
        cpu0 = cpu_clock()
        for _ in range(repeat):
            workload()
        spent = cpu_clock() - cpu0
        used += spent
        per_call.append(spent / repeat)
    per_call.sort()
    kept = per_call[: max(1, (3 * len(per_call) + 3) // 4)]
    return sum(kept) / len(kept), used, wall_clock() - began


def _cores(threads: int, measured_share: float | None) -> float:
    """The cores we may use; if our cgroup's quota cannot be read, the CPU share measured during
    the calibration (CPU time / wall time: the old, contention-sensitive figure, but never above
    the quota). None: no measurement at hand (a cache read), so QuotaUnknown propagates."""
    try:
        return usable_cores(threads)
    except QuotaUnknown as exc:
        if measured_share is None:
            raise
        logger.warning("%s; using the CPU share measured during calibration (%.3f)", exc, measured_share)
        return min(float(threads), measured_share)


def _scaled(per_cpu_s: Mapping[str, float], threads: int, *, measured_share: float | None = None,
            from_cache: bool = False) -> ComputeCalibration:
    """Per-CPU-second rates (classes and kinds) -> what this process delivers with `threads`
    threads on the cores it may use."""
    cores = _cores(threads, measured_share)
    by_class = {name: per_cpu_s[name] * cores for name in _WORKLOADS}  # fixed order: same float sum from a cache
    overall = len(by_class) / sum(1.0 / r for r in by_class.values())
    by_class["other"] = overall
    by_kind = {kind: per_cpu_s[KIND_KEY + kind] * cores for kind in KIND_INSTANCES}
    return ComputeCalibration(gflops=overall, by_class=by_class, threads=threads, from_cache=from_cache, by_kind=by_kind)


def kind_box_s(budget_s: float = DEFAULT_BUDGET_S) -> float:
    """CPU seconds (per thread) one layer kind is timed for: three quarters of the budget, shared."""
    return budget_s * 3 / 4 / len(KIND_INSTANCES)


def one_box(workload: Callable[[], Any], cpu_box_s: float) -> float:
    """CPU seconds per call of `workload` as one calibration box on the calling thread reports it
    (benchmarks/bench_host_noise.py repeats this to see how much the answer moves over time)."""
    return _timed(workload, cpu_box_s, time.thread_time)[0]


def per_cpu_second(*, threads: int, budget_s: float = DEFAULT_BUDGET_S) -> tuple[dict[str, float], float]:
    """GFLOP per CPU-second of each class's kernel and each layer kind's workload (keys: class
    names, and KIND_KEY + kind name: "linear" is both a class and a kind) with `threads` torch
    threads (about `budget_s` CPU seconds per thread, a quarter for the classes, the rest for the
    kinds), and the CPU share they got (CPU / wall time). One thread: the
    calling thread's CPU time (other threads of a node, its event loop, do not count); several:
    the whole process's."""
    if threads < 1:
        raise ValueError("threads must be >= 1")
    clock = time.thread_time if threads == 1 else time.process_time
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        with torch.inference_mode():
            workloads = {name: make() for name, make in _WORKLOADS.items()}
            workloads.update({KIND_KEY + kind: kind_workload(kind) for kind in KIND_INSTANCES})
            timed = {name: _timed(fn, budget_s / 8 if name in _WORKLOADS else kind_box_s(budget_s), clock, threads=threads)
                     for name, (fn, _flops) in workloads.items()}
    finally:
        torch.set_num_threads(previous)
    rates = {name: workloads[name][1] / max(per_call, 1e-9) / 1e9 for name, (per_call, _cpu, _wall) in timed.items()}
    share = sum(cpu for _, cpu, _ in timed.values()) / max(sum(wall for _, _, wall in timed.values()), 1e-9)
    return rates, share


def benchmark(*, threads: int, budget_s: float = DEFAULT_BUDGET_S) -> ComputeCalibration:
    """Run the micro-benchmark now (about `budget_s` CPU seconds per thread) with `threads` torch threads."""
    rates, share = per_cpu_second(threads=threads, budget_s=budget_s)
    return _scaled(rates, threads, measured_share=share)


def cache_key(threads: int) -> dict[str, Any]:
    """What a cached calibration must match to be reused."""
    return {"version": CALIBRATION_VERSION, "torch": torch.__version__, "threads": threads,
            "cpu": _cpu_model(), "machine": platform.machine(), "cpus": os.cpu_count()}


def measure_compute(*, threads: int, cache_path: Path | None, budget_s: float = DEFAULT_BUDGET_S,
                    force: bool = False) -> ComputeCalibration:
    """The cached calibration for this machine and thread count, measuring it if needed."""
    key = cache_key(threads)
    if cache_path is not None and not force:
        cached = _read_cache(Path(cache_path), key)
        if cached is not None:
            return cached
    rates, share = per_cpu_second(threads=threads, budget_s=budget_s)
    result = _scaled(rates, threads, measured_share=share)
    logger.info("compute calibration (%d threads, CPU share measured %.3f): %.1f GFLOP/s %s, by kind %s", threads,
                share, result.gflops, {k: round(v, 1) for k, v in result.by_class.items()},
                {k: round(v, 2) for k, v in result.by_kind.items()})
    if cache_path is not None:
        _write_cache(Path(cache_path), key, rates)
    return result


def _read_cache(path: Path, key: dict[str, Any]) -> ComputeCalibration | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("key") != key:
            return None
        rates = {str(k): float(v) for k, v in doc["per_cpu_second"].items()}
        if set(rates) != _RATE_KEYS or not all(0 < v < float("inf") for v in rates.values()):
            raise ValueError(f"bad per-CPU-second rates {rates}")
        return _scaled(rates, key["threads"], from_cache=True)  # QuotaUnknown: measure again
    except FileNotFoundError:
        return None
    except QuotaUnknown:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.warning("ignoring unreadable calibration cache %s (%s); measuring again", path, exc)
        return None


def _write_cache(path: Path, key: dict[str, Any], rates: Mapping[str, float]) -> None:
    doc = {"key": key, "per_cpu_second": dict(rates), "measured_at": time.time()}
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
