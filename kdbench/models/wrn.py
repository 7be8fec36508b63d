"""Wide ResNets for CIFAR (Zagoruyko & Komodakis, BMVC 2016) as RepDistiller defines them.

WRN-d-k: a 3×3 stem conv (16 channels, no BN), three stages of n = (d−4)/6 pre-activation basic
blocks (BN-ReLU-conv3×3-BN-ReLU-conv3×3) of widths 16k/32k/64k at strides 1/2/2, a plain 1×1
conv shortcut (taken after the block's first BN-ReLU) where the width changes, then BN-ReLU,
global average pooling and a linear classifier. wrn_40_2 has 2,255,156 parameters at 100 classes.

Feature view, as RepDistiller's ``is_feat``: the stem is the raw stem conv output and each stage
output is the raw residual stream (a pre-activation network has no ReLU after the sum). Its
``preact`` is that stream through the *next* BatchNorm (the next stage's first ``bn1``, or the
final ``bn1``), i.e. the tensor right before the ReLU that follows — what AB and OFD tap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Features, StageInfo
from .layers import ZooModel, init_weights, zoo_factory
from .registry import register_model


class WideBlock(nn.Module):
    """A pre-activation basic block. ``forward(x, pre)`` accepts ``pre = bn1(x)`` when the caller
    already computed it (it is the previous stage's pre-activation tap), so BatchNorm runs once."""

    def __init__(self, inplanes: int, planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate
        self.shortcut = (None if inplanes == planes
                         else nn.Conv2d(inplanes, planes, 1, stride, 0, bias=False))

    def forward(self, x: torch.Tensor, pre: torch.Tensor | None = None) -> torch.Tensor:
        act = F.relu(self.bn1(x) if pre is None else pre)
        out = F.relu(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        return out + (x if self.shortcut is None else self.shortcut(act))


class WideResNet(ZooModel):
    """WRN-``depth``-``widen`` for small images."""

    def __init__(self, depth: int, widen: int, num_classes: int = 100, in_chans: int = 3,
                 drop_rate: float = 0.0):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False)
        inplanes, reduction, stages = 16, 1, []
        self.layers = nn.ModuleList()
        for i, (w, s) in enumerate(zip(widths, (1, 2, 2))):
            self.layers.append(nn.ModuleList(
                WideBlock(inplanes if j == 0 else w, w, s if j == 0 else 1, drop_rate)
                for j in range(n)))
            inplanes, reduction = w, reduction * s
            stages.append(StageInfo(f"stage{i + 1}", w, reduction))
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.fc = nn.Linear(inplanes, num_classes)
        self._describe(num_classes, in_chans, inplanes, StageInfo("stem", 16, 1), stages)
        init_weights(self, zero_linear_bias=True)

    def features(self, x: torch.Tensor) -> Features:
        stem = self.conv1(x)
        out, pre, stages, preact = stem, None, [], []
        for i, layer in enumerate(self.layers):
            for j, block in enumerate(layer):
                out = block(out, pre if j == 0 else None)
            stages.append(out)
            next_bn = self.layers[i + 1][0].bn1 if i + 1 < len(self.layers) else self.bn1
            pre = next_bn(out)
            preact.append(pre)
        return self._finish(F.relu(pre), self.fc, stem, stages, preact)


def _wrn(depth: int, widen: int):
    """The registered factory of one Wide ResNet variant."""
    factory = zoo_factory(f"wrn_{depth}_{widen}", f"Wide ResNet WRN-{depth}-{widen} "
                          f"(RepDistiller), widths {16 * widen}/{32 * widen}/{64 * widen}",
                          WideResNet, depth, widen)
    return register_model(factory, family="wrn")


wrn_16_1 = _wrn(16, 1)
wrn_16_2 = _wrn(16, 2)
wrn_40_1 = _wrn(40, 1)
wrn_40_2 = _wrn(40, 2)
