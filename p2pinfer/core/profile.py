"""Cost profile of a model's layer chain: what the planner needs to know about a model.

Produced by `p2pinfer.models` (FLOPs counted by torch's FlopCounterMode at the default input
shape) and consumed by the pure planner, so it lives in `core/` with no torch import.

Compute classes: every FLOP is attributed to one class of operator so that peers can advertise
a measured speed per class (a conv-heavy span runs at a different rate than an attention-heavy
one). Classes are the keys of `COMPUTE_CLASSES`.

Layer kinds: a peer may also advertise a speed per layer kind (`LayerProfile.kind`, e.g.
"bottleneck", "bert_layer"), measured on the real layers; it overrides the class speeds for
layers of that kind. `check_kind_speeds` is the one validation of such a map.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

COMPUTE_CLASSES = ("linear", "conv", "attention", "other")
MAX_KIND_SPEEDS = 32
_KIND_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


def check_kind_speeds(speeds: object, what: str = "gflops_by_kind") -> dict[str, float]:
    """A {layer kind: GFLOP/s} map as a plain dict; ValueError naming the fault otherwise.
    Kind names are lowercase identifiers (at most 40 characters, at most MAX_KIND_SPEEDS kinds);
    speeds are finite and > 0. Unknown kinds are allowed: they simply match no layer."""
    if not isinstance(speeds, Mapping):
        raise ValueError(f"{what} must be a map of layer kind to GFLOP/s")
    if len(speeds) > MAX_KIND_SPEEDS:
        raise ValueError(f"{what} has {len(speeds)} kinds, at most {MAX_KIND_SPEEDS} allowed")
    out: dict[str, float] = {}
    for kind, speed in speeds.items():
        if not isinstance(kind, str) or not _KIND_NAME.fullmatch(kind):
            raise ValueError(f"{what}: bad layer kind name {kind!r:.50} (lowercase identifier, <= 40 characters)")
        if type(speed) not in (int, float) or not math.isfinite(speed) or not speed > 0:
            raise ValueError(f"{what}.{kind} must be a finite number > 0, got {speed!r:.40}")
        out[kind] = float(speed)
    return out


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
