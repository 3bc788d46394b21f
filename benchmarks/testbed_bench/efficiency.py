"""How fast each model really runs per FLOP, relative to what the compute calibration predicts.

    python -m benchmarks.testbed_bench.efficiency resnet50 vgg16 minilm   -> one JSON line

On one full core (run outside any cgroup), with one torch thread as the nodes compute: the
node calibration (models/calibrate, in a worker thread as in a node) and each whole model timed
with the nodes' executor in a worker thread, both in CPU seconds of that thread, so other work
on the host does not move the ratio (wall time did: the reference read 14.8 GFLOP/s once with
the testbed's nodes busy, 63 on a quiet host). The ratio predicted / measured is the model's
efficiency against the calibration kernels; the cost model assumes 1. It isolates one source of
cost-model error (the kernels' FLOP rate is not the model's) from the testbed's others (frame
handling on the quota, host contention).
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from typing import Callable, TypeVar

import torch

from p2pinfer.core.costs import build_costs
from p2pinfer.core.plan import PlannerOptions
from p2pinfer.core.snapshot import PeerSpec, RequesterSpec, SwarmSnapshot
from p2pinfer.models import profiling, zoo
from p2pinfer.models.calibrate import benchmark
from p2pinfer.models.executor import SpanExecutor
from p2pinfer.models.io import sample_input
from p2pinfer.models.store import store_for

T = TypeVar("T")


def in_worker_thread(fn: Callable[[], T]) -> T:
    """Run `fn` in a fresh thread, as a node runs its calibration and its spans (trio.to_thread).
    Why: the calibration's attention kernel ran 3x slower in a non-main thread than in the main
    thread here (13.8 vs 41.3 GFLOP/s, one core, no cgroup; whole MiniLM the same in both), so a
    main-thread reference would not be comparable with what the nodes measure."""
    out: list[T] = []
    worker = threading.Thread(target=lambda: out.append(fn()))
    worker.start()
    worker.join()
    if not out:
        raise RuntimeError("the worker thread failed; see its traceback above")
    return out[0]


def _cpu_times(executor: SpanExecutor, manifest: object, x: object, reps: int = 3) -> list[float]:
    """CPU seconds of this thread per whole-model run (after a build + warm-up run)."""
    torch.set_num_threads(1)
    executor.run(manifest, 0, manifest.num_layers, x)  # type: ignore[attr-defined]
    times = []
    for _ in range(reps):
        start = time.thread_time()
        executor.run(manifest, 0, manifest.num_layers, x)  # type: ignore[attr-defined]
        times.append(time.thread_time() - start)
    return times


def main(models: list[str]) -> dict[str, object]:
    torch.set_num_threads(1)
    store = store_for(None)
    calibration = in_worker_thread(lambda: benchmark(threads=1))
    peer = PeerSpec("full-core", gflops=calibration.gflops, gflops_by_class=dict(calibration.by_class),
                    gflops_by_kind=dict(calibration.by_kind), mem_bytes=1 << 40, up_mbps=1.0, down_mbps=1.0, latency_ms=0.0)
    out: dict[str, object] = {"gflops": calibration.gflops, "by_class": dict(calibration.by_class),
                              "by_kind": dict(calibration.by_kind), "models": {}}
    for name in models:
        manifest = zoo.get_manifest(name, store=store)
        times = in_worker_thread(lambda: _cpu_times(SpanExecutor(store, threads=1), manifest, sample_input(manifest, store)))
        swarm = SwarmSnapshot(RequesterSpec(1.0, 1.0, 0.0), (peer,))
        cm = build_costs(profiling.profile(manifest, store), swarm, PlannerOptions(amortize_requests=None))
        predicted = float(cm.compute[0, -1])  # the cost model's compute seconds for the whole model
        out["models"][name] = {"measured_s": statistics.median(times), "predicted_s": predicted,  # type: ignore[index]
                               "efficiency": predicted / statistics.median(times)}
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
