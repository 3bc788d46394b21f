"""Profiles: FLOPs from FlopCounterMode, split by compute class, byte sizes, and caching."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from p2pinfer.core.profile import COMPUTE_CLASSES, ModelProfile
from p2pinfer.models import profiling, zoo
from p2pinfer.models.executor import SpanExecutor
from p2pinfer.models.store import ModelStore

from .conftest import sample_input


@pytest.mark.parametrize(
    "name, low, high",
    [("resnet50", 8.0e9, 8.4e9), ("vgg16", 30.5e9, 31.5e9), ("mobilenetv2", 0.58e9, 0.62e9), ("minilm", 2.8e9, 3.0e9)],
)
def test_totals_match_the_published_architectures(name: str, low: float, high: float, zoo_store: ModelStore) -> None:
    p = profiling.profile(zoo.get_manifest(name, store=zoo_store), zoo_store)
    assert isinstance(p, ModelProfile) and low <= p.total_flops <= high  # 2 x the usual multiply-add counts


def test_every_layer_is_consistent(zoo_store: ModelStore) -> None:
    for name in zoo.names():
        manifest = zoo.get_manifest(name, store=zoo_store)
        p = profiling.profile(manifest, zoo_store)
        for layer in p.layers:
            assert set(layer.flops_by_class) == set(COMPUTE_CLASSES)
            assert sum(layer.flops_by_class.values()) == layer.flops
            assert layer.out_bytes > 0
            assert layer.weights_hash == (manifest.layers[layer.index].weights_hash or "")


def _pooling_windows(kind: str, config: dict, acts: dict, out: dict) -> int:
    """Window operations of a pooling layer (FlopCounterMode counts none): max_pool output
    elements x kernel area, adaptive average pool input elements."""
    if kind == "max_pool":
        return out["x"].numel() * config["kernel"] ** 2
    return acts["x"].numel() if kind == "avgpool_flatten" else 0


def test_flops_equal_a_real_flop_counter_run(zoo_store: ModelStore, executor: SpanExecutor) -> None:
    """The meta-device count equals FlopCounterMode around the real layers on real tensors, plus
    the pooling layers' window operations."""
    pooled = 0
    for name in ("mobilenetv2", "mlp", "resnet50"):
        manifest = zoo.get_manifest(name, store=zoo_store)
        p = profiling.profile(manifest, zoo_store)
        acts = sample_input(manifest, zoo_store)
        for index in range(manifest.num_layers):
            counter = FlopCounterMode(display=False)
            with counter, torch.inference_mode():
                out = executor.layer(manifest, index)(acts)
            spec = manifest.layers[index]
            windows = _pooling_windows(spec.kind, dict(spec.config), acts, out)
            pooled += windows > 0
            assert counter.get_total_flops() + windows == p.layers[index].flops, f"{name} layer {index}"
            assert sum(t.numel() * t.element_size() for t in out.values()) == p.layers[index].out_bytes
            acts = out
    assert pooled == 3  # mobilenetv2's average pool, resnet50's max pool and average pool


def test_compute_classes_and_sizes(zoo_store: ModelStore) -> None:
    minilm = profiling.profile(zoo.get_manifest("minilm", store=zoo_store), zoo_store)
    encoder = minilm.layers[1].flops_by_class
    assert encoder["attention"] == 2 * 2 * 128 * 128 * 384  # QK^T and PV at T=128, C=384
    assert encoder["linear"] == 2 * 128 * 384 * (4 * 384 + 2 * 1536) and encoder["conv"] == 0
    assert minilm.input_bytes == 2 * 128 * 8 and minilm.layers[-1].out_bytes == 384 * 4
    assert minilm.layers[1].out_bytes == 128 * 384 * 4 + 128 * 8  # hidden states + the travelling mask
    resnet = profiling.profile(zoo.get_manifest("resnet50", store=zoo_store), zoo_store)
    assert resnet.input_bytes == 3 * 224 * 224 * 4 and resnet.layers[0].out_bytes == 64 * 112 * 112 * 4
    assert resnet.layers[2].flops_by_class["conv"] == resnet.layers[2].flops > 0
    assert resnet.layers[-1].flops_by_class["linear"] == 2 * 2048 * 1000
    assert resnet.total_param_bytes == 25_557_032 * 4 + 2 * 26_560 * 4  # torchvision params + BN running stats


def test_profiles_are_cached_in_the_store(store: ModelStore) -> None:
    manifest = zoo.get_manifest("mlp", store=store)
    profiling._memo.clear()
    first = profiling.profile(manifest, store)
    cached = store.read_profile_text(manifest.model_id)
    assert cached is not None
    profiling._memo.clear()
    assert profiling.profile(manifest, store) == first
    store.write_profile_text(manifest.model_id, "{not json")  # a damaged cache is recomputed
    profiling._memo.clear()
    assert profiling.profile(manifest, store) == first
