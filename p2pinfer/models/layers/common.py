"""Kinds shared by every model family: a dense layer with an optional activation."""

from __future__ import annotations

from torch import nn

from .base import ACT_NAMES, Activations, Choice, Int, RegistryLayer, activation


class Linear(RegistryLayer):
    """(..., in_features) -> (..., out_features), then the named activation. Dropout is an eval no-op."""

    kind = "linear"

    def __init__(self, *, in_features: int, out_features: int, act: str) -> None:
        super().__init__(in_features=in_features, out_features=out_features, act=act)
        self.fc = nn.Linear(in_features, out_features)
        self.act = activation(act)

    def forward(self, acts: Activations) -> Activations:
        return {"x": self.act(self.fc(acts["x"]))}


COMMON_FIELDS = {Linear: {"in_features": Int(1, 65536), "out_features": Int(1, 65536), "act": Choice(*ACT_NAMES)}}
