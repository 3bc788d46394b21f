"""Cost profile of a model's layer chain: what the planner needs to know about a model.

Produced by `p2pinfer.models` (FLOPs counted by torch's FlopCounterMode at the default input
shape) and consumed by the pure planner, so it lives in `core/` with no torch import.

Compute classes: every FLOP is attributed to one class of operator so that peers can advertise
a measured speed per class (a conv-heavy span runs at a different rate than an attention-heavy
one). Classes are the keys of `COMPUTE_CLASSES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

COMPUTE_CLASSES = ("linear", "conv", "attention", "other")


def _frozen_map(m: Mapping[str, int] | None) -> Mapping[str, int]:
    return MappingProxyType(dict(m or {}))


@dataclass(frozen=True)
class LayerProfile:
    """Cost of one layer at the model's default input shape (batch 1)."""

    index: int
    kind: str
    flops: int
    param_bytes: int
    out_bytes: int
    flops_by_class: Mapping[str, int] = field(default_factory=dict)
    # Content hash of this layer's weights (as in the signed manifest); "" when unknown. The
    # planner matches it against a peer's `holds` to decide whether the peer must fetch weights.
    weights_hash: str = ""

    def __post_init__(self) -> None:
        if min(self.flops, self.param_bytes, self.out_bytes, self.index) < 0:
            raise ValueError(f"layer {self.index}: costs must be non-negative")
        unknown = set(self.flops_by_class) - set(COMPUTE_CLASSES)
        if unknown:
            raise ValueError(f"layer {self.index}: unknown compute classes {sorted(unknown)}")
        object.__setattr__(self, "flops_by_class", _frozen_map(self.flops_by_class))


@dataclass(frozen=True)
class ModelProfile:
    """A model as the planner sees it: an ordered chain of layer costs."""

    name: str
    model_id: str
    input_bytes: int
    layers: tuple[LayerProfile, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise ValueError(f"model {self.name}: a profile needs at least one layer")
        for expected, layer in enumerate(self.layers):
            if layer.index != expected:
                raise ValueError(f"model {self.name}: layer indices must be 0..L-1 in order")

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def total_flops(self) -> int:
        return sum(layer.flops for layer in self.layers)

    @property
    def total_param_bytes(self) -> int:
        return sum(layer.param_bytes for layer in self.layers)
