"""Shape propagation on torch's meta device: boundary tensor specs without allocating weights.

`boundaries(manifest)[i]` describes what flows into layer i (and `[L]` the model output), so a
hop can reject a wrongly shaped input before computing, and profiles know every `out_bytes`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch

from p2pinfer.errors import ModelError

from .layers import build_layer
from .manifest import LayerSpec, Manifest, TensorSpec

TORCH_DTYPES = {"float32": torch.float32, "int64": torch.int64}
DTYPE_NAMES = {v: k for k, v in TORCH_DTYPES.items()}
Boundary = tuple[TensorSpec, ...]


def meta_inputs(specs: Sequence[TensorSpec]) -> dict[str, torch.Tensor]:
    return {s.name: torch.empty(s.shape, dtype=TORCH_DTYPES[s.dtype], device="meta") for s in specs}


def specs_of(acts: dict[str, torch.Tensor], where: str) -> Boundary:
    out = []
    for name in sorted(acts):
        t = acts[name]
        if t.dtype not in DTYPE_NAMES:
            raise ModelError(f"{where}: tensor {name!r} has unsupported dtype {t.dtype}")
        out.append(TensorSpec(name, DTYPE_NAMES[t.dtype], tuple(t.shape)))
    return tuple(out)


def propagate(layers: Sequence[LayerSpec], inputs: Sequence[TensorSpec], *, name: str = "model") -> list[Boundary]:
    """Specs at every boundary 0..L, by running the chain on meta tensors."""
    result = [tuple(sorted(inputs, key=lambda s: s.name))]
    acts = meta_inputs(inputs)
    with torch.inference_mode():
        for index, layer in enumerate(layers):
            module = build_layer(layer.kind, layer.config, device="meta")
            try:
                acts = module(acts)
            except (RuntimeError, ValueError, IndexError, KeyError) as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise ModelError(f"{name}: layer {index} ({layer.kind}) cannot take {[s.to_obj() for s in result[-1]]}: {first}") from None
            result.append(specs_of(acts, f"{name} layer {index}"))
    return result


@lru_cache(maxsize=64)
def boundaries(manifest: Manifest) -> tuple[Boundary, ...]:
    """Boundary specs of a manifest, checked against its declared output."""
    specs = propagate(manifest.layers, manifest.inputs, name=manifest.name)
    if specs[-1] != tuple(sorted(manifest.outputs, key=lambda s: s.name)):
        raise ModelError(f"{manifest.name}: declared output {[s.to_obj() for s in manifest.outputs]} "
                         f"does not match the computed {[s.to_obj() for s in specs[-1]]}")
    return tuple(specs)
