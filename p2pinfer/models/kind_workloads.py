"""The layer kinds a node times for its per-kind speed table: real registry layers at zoo shapes.

Why per kind: one FLOP rate per compute class cannot price every layer of that class. Measured on
one core here (CPU seconds, one torch thread): a VGG-16 3x3 conv runs at ~89 GFLOP/s, a ResNet-50
bottleneck at ~71 (its 1x1 convs, batch norms and residual add), a batch-1 fully connected layer
at ~13 (a matrix-vector product streams its weights from memory), a MiniLM encoder layer at ~76,
and max pooling does ~0.2 G window operations/s; the class kernels put VGG-16 at 1.4x and MiniLM
at 0.8x their measured time. So each kind is timed on the real module (`build_layer`, random
weights: speed does not depend on their values) at shapes the zoo runs, and its FLOPs are counted
by the profiles' own counter (`profiling.layer_flops`), so that calibration and profiles agree on
what one FLOP of the kind is.

Instances were picked so that their rate is that of the whole zoo's layers of the kind (FLOP-
weighted, measured here): conv_bn_act 256 channels at 28x28 (VGG-16's own 3x3 convs span
84-92 GFLOP/s); one bottleneck of each of ResNet-50's stages 2-4 (together ~65 GFLOP/s, as the
model's sixteen blocks in a model run; stage 1's block, timed alone, flips between ~6.5 and
~13 ms a call: its 3 MB activations make glibc return and re-fault its heap on every call, which
a run of the whole model does not, so it would misstate the kind); the 4096 -> 4096 classifier layer of VGG-16; its third pool;
one MiniLM encoder layer (128 tokens); one MobileNetV2 inverted residual block.
Kinds without an entry (embeddings, pooling heads, flatten) take microseconds and keep the class
speeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from .layers import build_layer
from .profiling import layer_flops


@dataclass(frozen=True)
class KindInstance:
    """One layer of `kind` with `config`, called on inputs of the given shapes (batch 1)."""

    kind: str
    config: Mapping[str, Any]
    inputs: Mapping[str, tuple[tuple[int, ...], torch.dtype]]


def _image(channels: int, size: int) -> Mapping[str, tuple[tuple[int, ...], torch.dtype]]:
    return {"x": ((1, channels, size, size), torch.float32)}


_TOKENS = {"hidden": ((1, 128, 384), torch.float32), "attention_mask": ((1, 128), torch.int64)}

KIND_INSTANCES: Mapping[str, tuple[KindInstance, ...]] = {
    "conv_bn_act": (KindInstance("conv_bn_act", dict(in_ch=256, out_ch=256, kernel=3, stride=1, padding=1, groups=1,
                                                     bn=False, act="relu"), _image(256, 28)),),
    "bottleneck": tuple(KindInstance("bottleneck", dict(in_ch=4 * mid, mid_ch=mid, out_ch=4 * mid, stride=1), _image(4 * mid, size))
                        for mid, size in ((128, 28), (256, 14), (512, 7))),
    "linear": (KindInstance("linear", dict(in_features=4096, out_features=4096, act="relu"),
                            {"x": ((1, 4096), torch.float32)}),),
    "max_pool": (KindInstance("max_pool", dict(kernel=2, stride=2, padding=0), _image(256, 56)),),
    "bert_layer": (KindInstance("bert_layer", dict(hidden=384, heads=12, intermediate=1536, eps=1e-12, act="gelu"),
                                _TOKENS),),
    "inverted_residual": (KindInstance("inverted_residual", dict(in_ch=32, out_ch=32, stride=1, expand=6),
                                       _image(32, 28)),),
}


def _tensor(shape: tuple[int, ...], dtype: torch.dtype, device: str) -> torch.Tensor:
    if device == "meta":
        return torch.empty(shape, dtype=dtype, device="meta")
    return torch.ones(shape, dtype=dtype) if dtype == torch.int64 else torch.randn(shape, dtype=dtype)


def instance_flops(instance: KindInstance) -> int:
    """FLOPs of one call, counted on meta tensors as the profiles count them."""
    module = build_layer(instance.kind, instance.config, device="meta")
    inputs = {name: _tensor(shape, dtype, "meta") for name, (shape, dtype) in instance.inputs.items()}
    return sum(layer_flops(instance.kind, dict(instance.config), module, inputs).values())


def kind_workload(kind: str) -> tuple[Callable[[], Any], float]:
    """(one call of every instance of `kind`, the FLOPs of that call), ready to time."""
    calls = []
    for instance in KIND_INSTANCES[kind]:
        module = build_layer(instance.kind, instance.config)
        inputs = {name: _tensor(shape, dtype, "cpu") for name, (shape, dtype) in instance.inputs.items()}
        calls.append((module, inputs))

    def run() -> Any:
        return [module(inputs) for module, inputs in calls]

    return run, float(sum(instance_flops(i) for i in KIND_INSTANCES[kind]))
