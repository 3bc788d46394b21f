"""Assemble a manifest from (kind, config, tensors) layers, storing each layer's weights blob."""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import torch

from .layers import param_specs
from .manifest import LayerSpec, Manifest, TensorSpec
from .shapes import propagate
from .store import ModelStore
from .weights import encode

WeightsFn = Callable[[int, str, Mapping[str, object]], Mapping[str, torch.Tensor]]


def store_layer(store: ModelStore, kind: str, config: Mapping[str, object], tensors: Mapping[str, torch.Tensor]) -> LayerSpec:
    """Encode one layer's tensors canonically, store the blob, and return its LayerSpec."""
    if not param_specs(kind, config):  # type: ignore[arg-type]
        return LayerSpec(kind, config, None)
    return LayerSpec(kind, config, store.add_blob(encode(tensors)))


def build_manifest(
    *,
    name: str,
    layers: Iterable[tuple[str, Mapping[str, object]]],
    inputs: Sequence[TensorSpec],
    weights: WeightsFn,
    store: ModelStore,
    preprocess: str = "tensor",
    tokenizer_hash: str | None = None,
) -> Manifest:
    """Build, store and index a manifest; its output spec is computed by shape propagation."""
    specs = [store_layer(store, kind, config, weights(i, kind, config)) for i, (kind, config) in enumerate(layers)]
    outputs = propagate(specs, inputs, name=name)[-1]
    manifest = Manifest(name, tuple(specs), tuple(inputs), outputs, preprocess, tokenizer_hash)
    store.put_manifest(manifest, name=name)
    return manifest
