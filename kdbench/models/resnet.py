"""CIFAR ResNets as defined by the field's reference benchmark (RepDistiller / CRD, ICLR 2020).

6n+2 layers of basic blocks in three stages (widths 16/32/64, or 32/64/128/256-style ×4 variants),
a 3×3 stem, 1×1-conv + BN projection shortcuts where the shape changes, global average pooling
and a linear classifier. With 100 classes resnet20 has 278,324 parameters and resnet56 861,620.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Features, KDModel, StageInfo


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the pre-activation sum; the caller applies the ReLU (AB/OFD need both)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return out + (x if self.downsample is None else self.downsample(x))


class CifarResNet(KDModel):
    """ResNet-(6n+2) for 32×32 inputs; works on any input of at least 4×4."""

    min_input_size = 4

    def __init__(self, depth: int, widths: tuple[int, int, int, int] = (16, 16, 32, 64),
                 num_classes: int = 100, in_chans: int = 3):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.num_classes, self.in_chans = num_classes, in_chans
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        inplanes = widths[0]
        self.layers = nn.ModuleList()
        for i, (planes, stride) in enumerate(zip(widths[1:], (1, 2, 2))):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(inplanes, planes, stride if j == 0 else 1))
                inplanes = planes
            self.layers.append(nn.ModuleList(blocks))
        self.fc = nn.Linear(inplanes, num_classes)
        self.embedding_dim = inplanes
        self.stage_info = [StageInfo(f"stage{i + 1}", w, r)
                           for i, (w, r) in enumerate(zip(widths[1:], (1, 2, 4)))]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> Features:
        stem = F.relu(self.bn1(self.conv1(x)))
        out, stages, preact = stem, [], []
        for blocks in self.layers:
            for block in blocks:
                pre = block(out)
                out = F.relu(pre)
            stages.append(out)
            preact.append(pre)
        embedding = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return Features(self.fc(embedding), embedding, stages, preact, stem)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        for blocks in self.layers:
            for block in blocks:
                out = F.relu(block(out))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def _resnet(depth: int, widths: tuple[int, int, int, int] = (16, 16, 32, 64)):
    def factory(num_classes: int, in_chans: int = 3) -> CifarResNet:
        return CifarResNet(depth, widths, num_classes, in_chans)

    factory.__doc__ = f"CIFAR ResNet-{depth} (RepDistiller), widths {'/'.join(map(str, widths))}"
    factory.__name__ = f"resnet{depth}"
    return factory


resnet8 = _resnet(8)
resnet20 = _resnet(20)
resnet56 = _resnet(56)
