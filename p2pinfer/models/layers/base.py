"""The layer-kind contract: what a peer is willing to build from a manifest.

A peer never runs code it was sent. A manifest names a *kind* from the closed registry in
`p2pinfer.models.layers` plus a small config; the peer builds the module from its own code and
loads weights whose names and shapes it derives itself from that config.

Span interface: every layer takes and returns `dict[str, torch.Tensor]` (an `Activations`) with
fixed names declared by its kind (`inputs` / `outputs`), e.g. vision layers map {"x"} -> {"x"},
a BERT encoder layer maps {"hidden", "attention_mask"} -> the same names. Consecutive layers must
agree on names, so a span's output dict is exactly what the next hop's span takes as input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import nn

from p2pinfer.errors import ModelError

Activations = dict[str, torch.Tensor]
ConfigValue = int | float | bool | str


@dataclass(frozen=True)
class Field:
    """One config field of a layer kind: its type and allowed values (bounds are inclusive)."""

    type: type
    lo: float | None = None
    hi: float | None = None
    choices: tuple[Any, ...] | None = None

    def check(self, kind: str, name: str, value: object) -> None:
        # bool is a subclass of int: reject it where an int is expected and vice versa.
        ok = type(value) is self.type or (self.type is float and type(value) is int)
        if not ok:
            raise ModelError(f"layer kind {kind!r}: config {name!r} must be {self.type.__name__}, got {type(value).__name__}")
        if self.choices is not None and value not in self.choices:
            raise ModelError(f"layer kind {kind!r}: config {name!r} must be one of {list(self.choices)}, got {value!r}")
        if self.lo is not None and value < self.lo or self.hi is not None and value > self.hi:  # type: ignore[operator]
            raise ModelError(f"layer kind {kind!r}: config {name!r}={value!r} is outside [{self.lo}, {self.hi}]")


def Int(lo: int, hi: int) -> Field:
    return Field(int, lo, hi)


def Float(lo: float, hi: float) -> Field:
    return Field(float, lo, hi)


def Choice(*choices: str) -> Field:
    return Field(str, choices=choices)


BOOL = Field(bool)


@dataclass(frozen=True)
class LayerKind:
    """A registered layer kind: config schema, tensor names in and out, and the module class."""

    name: str
    fields: Mapping[str, Field]
    module: type["RegistryLayer"]
    inputs: tuple[str, ...] = ("x",)
    outputs: tuple[str, ...] = ("x",)
    # Scales applied to seeded weights by name (e.g. damp the last BN of a residual branch).
    init_scale: Mapping[str, float] = field(default_factory=dict)

    def check_config(self, config: Mapping[str, object]) -> None:
        missing = set(self.fields) - set(config)
        extra = set(config) - set(self.fields)
        if missing or extra:
            raise ModelError(
                f"layer kind {self.name!r}: config keys must be {sorted(self.fields)}"
                f" (missing {sorted(missing)}, unexpected {sorted(map(str, extra))})"
            )
        for key, spec in self.fields.items():
            spec.check(self.name, key, config[key])
        problem = self.module.cross_check(config)
        if problem:
            raise ModelError(f"layer kind {self.name!r}: {problem}")


class RegistryLayer(nn.Module):
    """Base of every registry module: built from `config` only, forward maps Activations -> Activations.

    Instances remember their config so a `torch.nn.Sequential` of them can be turned back into a
    manifest (see `p2pinfer.models.importers.manifest_from_sequential`).
    """

    kind: ClassVar[str]

    def __init__(self, **config: ConfigValue) -> None:
        super().__init__()
        self.config: dict[str, ConfigValue] = dict(config)

    @classmethod
    def cross_check(cls, config: Mapping[str, object]) -> str | None:
        """Constraints between fields (e.g. groups divides channels); returns a problem or None."""
        return None

    def forward(self, acts: Activations) -> Activations:  # pragma: no cover - abstract
        raise NotImplementedError


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The closed set of pointwise activations a config may name."""
    return _ACTS[name]


_ACTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "none": lambda t: t,
    "relu": torch.relu,
    "relu6": lambda t: torch.clamp(t, 0.0, 6.0),
    "gelu": torch.nn.functional.gelu,
}
ACT_NAMES = tuple(_ACTS)


class BatchNorm2d(nn.Module):
    """Eval-mode batch norm (running statistics), without the training-only counter buffer.

    We keep BN unfolded so checkpoints in the usual conv/bn layout import as they are.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
