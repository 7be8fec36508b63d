"""CIFAR ResNets as defined by the field's reference benchmark (RepDistiller / CRD, ICLR 2020).

Two shapes share one class. ResNet-(6n+2) (He et al., 2016, §4.2): a 3×3 stem, three stages of n
basic blocks at strides 1/2/2 with widths 16/32/64 (or 32/64/128/256 for the ×4 variants, whose
stem is 32 wide), 1×1-conv + BN projection shortcuts wherever the shape changes. The CIFAR
ResNet-50 (RepDistiller's ``resnetv2``): a 3×3 64-wide stem without max-pooling, then the
ImageNet bottleneck layout [3, 4, 6, 3] at strides 1/2/2/2. Both end in global average pooling
and a linear classifier. With 100 classes resnet20 has 278,324 parameters, resnet56 861,620,
resnet32x4 7,433,860 and resnet50 23,705,252.

Feature view (RepDistiller's ``is_feat``): the stem after its ReLU, each stage's output after its
last block's ReLU, and (``preact``) the same sum before that ReLU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Features, StageInfo
from .layers import ZooModel, init_weights, zoo_factory
from .registry import register_model


def _projection(inplanes: int, outplanes: int, stride: int) -> nn.Module | None:
    if stride == 1 and inplanes == outplanes:
        return None
    return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride, bias=False),
                         nn.BatchNorm2d(outplanes))


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers and a shortcut; returns the sum *before* the final ReLU."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _projection(inplanes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return out + (x if self.downsample is None else self.downsample(x))


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (carrying the stride), 1×1 expand ×4; returns the pre-ReLU sum."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = _projection(inplanes, planes * 4, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + (x if self.downsample is None else self.downsample(x))


class ResNet(ZooModel):
    """A 3×3-stem ResNet for small images: ``stem`` channels, then one stage per entry of
    ``planes``/``blocks``/``strides``."""

    def __init__(self, block: type[BasicBlock | Bottleneck], stem: int,
                 planes: tuple[int, ...], blocks: tuple[int, ...], strides: tuple[int, ...],
                 num_classes: int = 100, in_chans: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        inplanes, reduction, stages = stem, 1, []
        self.layers = nn.ModuleList()
        for i, (p, n, s) in enumerate(zip(planes, blocks, strides)):
            layer = []
            for j in range(n):
                layer.append(block(inplanes, p, s if j == 0 else 1))
                inplanes = p * block.expansion
            self.layers.append(nn.ModuleList(layer))
            reduction *= s
            stages.append(StageInfo(f"stage{i + 1}", inplanes, reduction))
        self.fc = nn.Linear(inplanes, num_classes)
        self._describe(num_classes, in_chans, inplanes, StageInfo("stem", stem, 1), stages)
        init_weights(self)

    def features(self, x: torch.Tensor) -> Features:
        stem = F.relu(self.bn1(self.conv1(x)))
        out, stages, preact = self._post_relu_stages(stem, self.layers)
        return self._finish(out, self.fc, stem, stages, preact)


class CifarResNet(ResNet):
    """ResNet-(6n+2): a ``widths[0]`` stem and three stages of n basic blocks of widths
    ``widths[1:]`` at strides 1/2/2."""

    def __init__(self, depth: int, widths: tuple[int, int, int, int] = (16, 16, 32, 64),
                 num_classes: int = 100, in_chans: int = 3):
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        super().__init__(BasicBlock, widths[0], tuple(widths[1:]), (n, n, n), (1, 2, 2),
                         num_classes, in_chans)


def _resnet(depth: int, widths: tuple[int, int, int, int] = (16, 16, 32, 64), name: str = ""):
    """The registered factory of one ResNet-(6n+2) variant."""
    factory = zoo_factory(name or f"resnet{depth}",
                          f"CIFAR ResNet-{depth} (RepDistiller): basic blocks, widths "
                          f"{'/'.join(map(str, widths))}", CifarResNet, depth, widths)
    return register_model(factory, family="resnet")


resnet8 = _resnet(8)
resnet14 = _resnet(14)
resnet20 = _resnet(20)
resnet32 = _resnet(32)
resnet44 = _resnet(44)
resnet56 = _resnet(56)
resnet110 = _resnet(110)
resnet8x4 = _resnet(8, (32, 64, 128, 256), "resnet8x4")
resnet32x4 = _resnet(32, (32, 64, 128, 256), "resnet32x4")
resnet50 = zoo_factory("resnet50", "CIFAR ResNet-50 (RepDistiller resnetv2): 3×3 stem, "
                       "bottlenecks [3, 4, 6, 3], 2048-d", ResNet, Bottleneck, 64,
                       (64, 128, 256, 512), (3, 4, 6, 3), (1, 2, 2, 2))
register_model(resnet50, family="resnet")
