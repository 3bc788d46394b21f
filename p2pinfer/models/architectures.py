"""The zoo's architectures as plain (kind, config) chains, readable in one sitting.

Standard definitions: ResNet-50 v1.5 (stride on the 3x3 conv), VGG-16 (configuration D, no BN),
MobileNetV2 (width 1.0), all for 3x224x224 inputs and 1000 classes; a small MLP for fast tests.
Finer layers give the planner more cut points: every conv of VGG and every block of ResNet and
MobileNetV2 is its own layer.
"""

from __future__ import annotations

from typing import Any

LayerDef = tuple[str, dict[str, Any]]
ZOO_NAMES = ("minilm", "resnet50", "vgg16", "mobilenetv2", "mlp")  # reserved: imports may not take them
IMAGE_INPUT = (1, 3, 224, 224)


def conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, *, groups: int = 1, bn: bool = True, act: str = "relu") -> LayerDef:
    return ("conv_bn_act", dict(in_ch=in_ch, out_ch=out_ch, kernel=kernel, stride=stride, padding=kernel // 2,
                                groups=groups, bn=bn, act=act))


def linear(in_features: int, out_features: int, act: str = "none") -> LayerDef:
    return ("linear", dict(in_features=in_features, out_features=out_features, act=act))


def head(channels: int, classes: int = 1000) -> list[LayerDef]:
    return [("avgpool_flatten", dict(size=1)), linear(channels, classes)]


def resnet50() -> list[LayerDef]:
    layers = [conv(3, 64, 7, 2), ("max_pool", dict(kernel=3, stride=2, padding=1))]
    in_ch = 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for b in range(blocks):
            layers.append(("bottleneck", dict(in_ch=in_ch, mid_ch=width, out_ch=4 * width, stride=stride if b == 0 else 1)))
            in_ch = 4 * width
    return layers + head(2048)


def vgg16() -> list[LayerDef]:
    layers: list[LayerDef] = []
    in_ch = 3
    for item in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if item == "M":
            layers.append(("max_pool", dict(kernel=2, stride=2, padding=0)))
        else:
            layers.append(conv(in_ch, int(item), 3, bn=False))
            in_ch = int(item)
    return layers + [("avgpool_flatten", dict(size=7)), linear(512 * 7 * 7, 4096, "relu"), linear(4096, 4096, "relu"), linear(4096, 1000)]


def mobilenetv2() -> list[LayerDef]:
    layers = [conv(3, 32, 3, 2, act="relu6")]
    in_ch = 32
    for expand, out_ch, repeats, stride in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                                            (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for r in range(repeats):
            layers.append(("inverted_residual", dict(in_ch=in_ch, out_ch=out_ch, stride=stride if r == 0 else 1, expand=expand)))
            in_ch = out_ch
    return layers + [conv(320, 1280, 1, act="relu6")] + head(1280)


def mlp() -> list[LayerDef]:
    return [linear(64, 256, "relu"), linear(256, 256, "relu"), linear(256, 256, "relu"), linear(256, 10)]


MLP_INPUT = (1, 64)
