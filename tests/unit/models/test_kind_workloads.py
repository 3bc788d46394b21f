"""The per-layer-kind speed table: its workloads are the zoo's layers, counted as profiles count
them, and the speeds it measures price real zoo layers better than the class speeds do."""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any, Callable

import torch

from p2pinfer.core.costs import span_seconds
from p2pinfer.core.snapshot import PeerSpec
from p2pinfer.models import profiling, zoo
from p2pinfer.models.calibrate import benchmark
from p2pinfer.models.executor import SpanExecutor
from p2pinfer.models.kind_workloads import KIND_INSTANCES, instance_flops
from p2pinfer.models.layers import REGISTRY
from p2pinfer.models.store import ModelStore

from .conftest import sample_input


def test_every_instance_is_a_registry_kind_with_its_textbook_flop_count() -> None:
    """The instances' FLOPs (the profiles' own counter) are the textbook counts: 2 per
    multiply-add, one per pooling window element; so a kind speed is in the profiles' units."""
    expected = {
        "conv_bn_act": 2 * 256 * 256 * 9 * 28 * 28,
        "bottleneck": sum(2 * size * size * (4 * mid * mid * 2 + mid * mid * 9) for mid, size in ((128, 28), (256, 14), (512, 7))),
        "linear": 2 * 4096 * 4096,
        "max_pool": 256 * 28 * 28 * 2 * 2,
    }
    for kind, instances in KIND_INSTANCES.items():
        assert kind in REGISTRY and all(i.kind == kind for i in instances)
        flops = sum(instance_flops(i) for i in instances)
        assert flops == expected.get(kind, flops) and flops > 0, kind


def _in_worker(fn: Callable[[], Any]) -> Any:
    """As a node computes: in a worker thread (trio.to_thread), one torch thread."""
    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(fn()))
    worker.start()
    worker.join()
    return out[0]


def _cpu_seconds(executor: SpanExecutor, manifest: Any, start: int, stop: int, x: Any) -> float:
    """Median CPU seconds of layers [start, stop) with one torch thread (restored after: other
    tests compare results across threads bit for bit)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        acts = executor.run(manifest, 0, start, x) if start else x
        executor.run(manifest, start, stop, acts)
        times = []
        for _ in range(3):
            began = time.thread_time()
            executor.run(manifest, start, stop, acts)
            times.append(time.thread_time() - began)
        return statistics.median(times)
    finally:
        torch.set_num_threads(previous)


def test_kind_speeds_price_resnet_blocks_better_than_the_conv_class(zoo_store: ModelStore, executor: SpanExecutor) -> None:
    """ResNet-50's sixteen bottleneck blocks, timed for real: the kind table's prediction is
    within 1.5x, and closer than the conv class speed's (which mixes VGG's faster convs in)."""
    calibration = _in_worker(lambda: benchmark(threads=1, budget_s=0.3))
    manifest = zoo.get_manifest("resnet50", store=zoo_store)
    layers = profiling.profile(manifest, zoo_store).layers[2:18]
    assert {layer.kind for layer in layers} == {"bottleneck"}
    measured = _in_worker(lambda: _cpu_seconds(executor, manifest, 2, 18, sample_input(manifest, zoo_store)))
    node = PeerSpec("node", calibration.gflops, 1, 1.0, 1.0, 0.0, dict(calibration.by_class))
    with_kinds = span_seconds(layers, PeerSpec("node", calibration.gflops, 1, 1.0, 1.0, 0.0, dict(calibration.by_class),
                                               gflops_by_kind=dict(calibration.by_kind)))
    assert measured / 1.5 < with_kinds < measured * 1.5, (with_kinds, measured)
    assert abs(with_kinds / measured - 1) < abs(span_seconds(layers, node) / measured - 1) + 0.05
