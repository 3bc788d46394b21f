"""The closed registry of layer kinds. A manifest may only name kinds listed in `REGISTRY`.

To add a kind: write a `RegistryLayer` subclass (forward maps Activations -> Activations), give
it a config schema below, and bump `p2pinfer.models.manifest.FORMAT` if old peers must refuse it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Mapping

import torch

from p2pinfer.errors import ModelError

from .base import Activations, ConfigValue, Field, LayerKind, RegistryLayer
from .common import COMMON_FIELDS
from .text import TEXT_FIELDS, TEXT_IO
from .vision import VISION_FIELDS, VISION_INIT_SCALE


def _make_registry() -> dict[str, LayerKind]:
    registry: dict[str, LayerKind] = {}
    for module, fields in {**COMMON_FIELDS, **VISION_FIELDS, **TEXT_FIELDS}.items():
        inputs, outputs = TEXT_IO.get(module, (("x",), ("x",)))
        registry[module.kind] = LayerKind(module.kind, fields, module, inputs, outputs, VISION_INIT_SCALE.get(module, {}))
    return registry


REGISTRY: Mapping[str, LayerKind] = _make_registry()


def get_kind(name: str) -> LayerKind:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown layer kind {name!r}; known kinds: {', '.join(sorted(REGISTRY))}") from None


def build_layer(kind: str, config: Mapping[str, ConfigValue], *, device: str | torch.device = "cpu") -> RegistryLayer:
    """Build a registry module (in eval mode) after validating its config."""
    spec = get_kind(kind)
    spec.check_config(config)
    with torch.device(device):
        module = spec.module(**config)
    return module.eval()


@lru_cache(maxsize=4096)
def _param_specs(kind: str, frozen: tuple[tuple[str, ConfigValue], ...]) -> tuple[tuple[str, tuple[int, ...], torch.dtype], ...]:
    module = build_layer(kind, dict(frozen), device="meta")
    return tuple((name, tuple(t.shape), t.dtype) for name, t in module.state_dict().items())


def param_specs(kind: str, config: Mapping[str, ConfigValue]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Names, shapes and dtypes of the weights a layer of this kind and config must have (no allocation)."""
    specs = _param_specs(kind, tuple(sorted(config.items())))
    return {name: (shape, dtype) for name, shape, dtype in specs}


def param_bytes(kind: str, config: Mapping[str, ConfigValue]) -> int:
    total = 0
    for shape, dtype in param_specs(kind, config).values():
        numel = 1
        for dim in shape:
            numel *= dim
        total += numel * dtype.itemsize
    return total


__all__ = ["REGISTRY", "Activations", "Field", "LayerKind", "RegistryLayer", "build_layer", "get_kind", "param_bytes", "param_specs"]
