"""MobileNetV2 for CIFAR (Sandler et al., CVPR 2018) in RepDistiller's variant.

RepDistiller's version (from "KD via Route Constrained Optimization"): a stride-2 3×3 conv-BN-ReLU
stem of 32·w channels, seven groups of inverted residuals (t, c, n, s) = (1,16,1,1), (T,24,2,1),
(T,32,3,2), (T,64,4,2), (T,96,3,1), (T,160,3,2), (T,320,1,1) with c scaled by the width w —
every inverted residual keeps its 1×1 expansion even when t = 1, unlike torchvision's — a
1×1 conv-BN-ReLU to 1280 channels (1280·w when w > 1), global average pooling and a linear
classifier. ``mobilenetv2`` is RepDistiller's ``mobile_half`` (T = 6, w = 0.5, 812,836 parameters
at 100 classes); ``width`` gives the others (Checkpoint KD uses 0.75).

Feature view (RepDistiller's taps): the stem, then the outputs of groups 2, 3, 5 and 7. Those
end in a linear bottleneck (BN, no ReLU), so ``preact`` is the same tensors.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Features, StageInfo
from .layers import ZooModel, init_weights
from .registry import register_model

#: (expansion t, channels c, repeats n, stride s); an expansion of None means T.
SETTING: tuple[tuple[int | None, int, int, int], ...] = (
    (1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2),
    (None, 96, 3, 1), (None, 160, 3, 2), (None, 320, 1, 1))
#: indices of the groups whose outputs are the feature stages
TAPS = (1, 2, 4, 6)


def _conv_bn_relu(inp: int, oup: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(oup), nn.ReLU(inplace=True))


class InvertedResidual(nn.Module):
    """1×1 expand-BN-ReLU, 3×3 depthwise-BN-ReLU, 1×1 project-BN; identity shortcut when the
    shape is kept."""

    def __init__(self, inp: int, oup: int, stride: int, expand: int):
        super().__init__()
        hidden = inp * expand
        self.residual = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(ZooModel):
    """MobileNetV2 with expansion ``expand`` (T) and width multiplier ``width`` (w)."""

    def __init__(self, num_classes: int = 100, in_chans: int = 3, width: float = 0.5,
                 expand: int = 6):
        super().__init__()
        if width <= 0:
            raise ValueError(f"MobileNetV2 width must be positive, got {width}")
        inp = int(32 * width)
        self.conv1 = _conv_bn_relu(in_chans, inp, 3, 2)
        self.blocks = nn.ModuleList()
        reduction, stages = 2, []
        for i, (t, c, n, s) in enumerate(SETTING):
            oup = int(c * width)
            self.blocks.append(nn.Sequential(*(
                InvertedResidual(inp if j == 0 else oup, oup, s if j == 0 else 1,
                                 expand if t is None else t) for j in range(n))))
            inp, reduction = oup, reduction * s
            if i in TAPS:
                stages.append(StageInfo(f"stage{len(stages) + 1}", oup, reduction))
        last = int(1280 * width) if width > 1.0 else 1280
        self.conv2 = _conv_bn_relu(inp, last, 1, 1)
        self.classifier = nn.Linear(last, num_classes)
        self._describe(num_classes, in_chans, last, StageInfo("stem", int(32 * width), 2), stages)
        init_weights(self, linear_std=0.01)

    def features(self, x: torch.Tensor) -> Features:
        stem = self.conv1(x)
        out, stages = stem, []
        for i, group in enumerate(self.blocks):
            out = group(out)
            if i in TAPS:
                stages.append(out)
        return self._finish(self.conv2(out), self.classifier, stem, stages, list(stages))


@register_model(family="mobilenetv2")
def mobilenetv2(num_classes: int, in_chans: int = 3, width: float = 0.5,
                expand: int = 6) -> MobileNetV2:
    """MobileNetV2, width 0.5 (RepDistiller's mobile_half student); other widths via width=."""
    return MobileNetV2(num_classes, in_chans, width, expand)


@register_model(family="mobilenetv2")
def mobilenetv2_075(num_classes: int, in_chans: int = 3) -> MobileNetV2:
    """MobileNetV2, width 0.75 (the Checkpoint KD student)."""
    return MobileNetV2(num_classes, in_chans, 0.75)


@register_model(family="mobilenetv2")
def mobilenetv2_100(num_classes: int, in_chans: int = 3) -> MobileNetV2:
    """MobileNetV2, width 1.0."""
    return MobileNetV2(num_classes, in_chans, 1.0)

