"""Image layer kinds: conv-bn-act, pooling, ResNet bottleneck, MobileNetV2 inverted residual.

All map {"x": (B, C, H, W) float32} -> {"x": ...}; `avgpool_flatten` ends the spatial part with
(B, C*s*s). Batch norm is kept in eval mode (not folded), see `base.BatchNorm2d`.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .base import ACT_NAMES, BOOL, Activations, BatchNorm2d, Choice, Int, RegistryLayer, activation

CHANNELS = Int(1, 8192)


class ConvBNAct(RegistryLayer):
    """conv (k x k, stride, padding, groups) -> optional eval BN -> activation. VGG uses bn=False."""

    kind = "conv_bn_act"

    def __init__(self, *, in_ch: int, out_ch: int, kernel: int, stride: int, padding: int, groups: int, bn: bool, act: str) -> None:
        super().__init__(in_ch=in_ch, out_ch=out_ch, kernel=kernel, stride=stride, padding=padding, groups=groups, bn=bn, act=act)
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, groups=groups, bias=not bn)
        self.bn = BatchNorm2d(out_ch) if bn else None
        self.act = activation(act)

    @classmethod
    def cross_check(cls, config: Mapping[str, object]) -> str | None:
        g, i, o = config["groups"], config["in_ch"], config["out_ch"]
        if i % g or o % g:  # type: ignore[operator]
            return f"groups={g} must divide in_ch={i} and out_ch={o}"
        return None

    def forward(self, acts: Activations) -> Activations:
        x = self.conv(acts["x"])
        if self.bn is not None:
            x = self.bn(x)
        return {"x": self.act(x)}


class MaxPool(RegistryLayer):
    kind = "max_pool"

    def __init__(self, *, kernel: int, stride: int, padding: int) -> None:
        super().__init__(kernel=kernel, stride=stride, padding=padding)

    @classmethod
    def cross_check(cls, config: Mapping[str, object]) -> str | None:
        if 2 * config["padding"] > config["kernel"]:  # type: ignore[operator]
            return "padding must be at most half the kernel size"
        return None

    def forward(self, acts: Activations) -> Activations:
        c = self.config
        return {"x": nn.functional.max_pool2d(acts["x"], c["kernel"], c["stride"], c["padding"])}


class AvgPoolFlatten(RegistryLayer):
    """Adaptive average pool to size x size, then flatten to (B, C*size*size)."""

    kind = "avgpool_flatten"

    def __init__(self, *, size: int) -> None:
        super().__init__(size=size)

    def forward(self, acts: Activations) -> Activations:
        return {"x": torch.flatten(nn.functional.adaptive_avg_pool2d(acts["x"], self.config["size"]), 1)}


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False), BatchNorm2d(out_ch))


class Bottleneck(RegistryLayer):
    """ResNet v1.5 bottleneck: 1x1 -> 3x3 (stride here) -> 1x1, projection shortcut when shapes change."""

    kind = "bottleneck"

    def __init__(self, *, in_ch: int, mid_ch: int, out_ch: int, stride: int) -> None:
        super().__init__(in_ch=in_ch, mid_ch=mid_ch, out_ch=out_ch, stride=stride)
        self.reduce = _conv_bn(in_ch, mid_ch, 1)
        self.spatial = _conv_bn(mid_ch, mid_ch, 3, stride)
        self.expand = _conv_bn(mid_ch, out_ch, 1)
        needs_proj = stride != 1 or in_ch != out_ch
        self.shortcut = _conv_bn(in_ch, out_ch, 1, stride) if needs_proj else None

    def forward(self, acts: Activations) -> Activations:
        x = acts["x"]
        y = torch.relu(self.reduce(x))
        y = torch.relu(self.spatial(y))
        y = self.expand(y)
        identity = self.shortcut(x) if self.shortcut is not None else x
        return {"x": torch.relu(y + identity)}


class InvertedResidual(RegistryLayer):
    """MobileNetV2 block: 1x1 expand (relu6) -> 3x3 depthwise (relu6) -> 1x1 linear project (+ skip)."""

    kind = "inverted_residual"

    def __init__(self, *, in_ch: int, out_ch: int, stride: int, expand: int) -> None:
        super().__init__(in_ch=in_ch, out_ch=out_ch, stride=stride, expand=expand)
        hidden = in_ch * expand
        self.expand_conv = _conv_bn(in_ch, hidden, 1) if expand != 1 else None
        self.depthwise = _conv_bn(hidden, hidden, 3, stride, groups=hidden)
        self.project = _conv_bn(hidden, out_ch, 1)
        self.use_skip = stride == 1 and in_ch == out_ch

    def forward(self, acts: Activations) -> Activations:
        x = acts["x"]
        y = x
        if self.expand_conv is not None:
            y = torch.clamp(self.expand_conv(y), 0.0, 6.0)
        y = torch.clamp(self.depthwise(y), 0.0, 6.0)
        y = self.project(y)
        return {"x": x + y if self.use_skip else y}


VISION_FIELDS = {
    ConvBNAct: {"in_ch": CHANNELS, "out_ch": CHANNELS, "kernel": Int(1, 11), "stride": Int(1, 4), "padding": Int(0, 5),
                "groups": CHANNELS, "bn": BOOL, "act": Choice(*ACT_NAMES)},
    MaxPool: {"kernel": Int(1, 7), "stride": Int(1, 4), "padding": Int(0, 3)},
    AvgPoolFlatten: {"size": Int(1, 16)},
    Bottleneck: {"in_ch": CHANNELS, "mid_ch": CHANNELS, "out_ch": CHANNELS, "stride": Int(1, 2)},
    InvertedResidual: {"in_ch": CHANNELS, "out_ch": CHANNELS, "stride": Int(1, 2), "expand": Int(1, 8)},
}
# Damp the last BN of residual branches so seeded (untrained) deep nets keep activations bounded.
VISION_INIT_SCALE = {Bottleneck: {"expand.1.weight": 0.2}}
