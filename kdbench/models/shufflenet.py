"""ShuffleNet V1 and V2 for CIFAR as RepDistiller defines them.

Both start with a 1×1 conv-BN-ReLU stem of 24 channels at full resolution (no max-pooling), have
three stages that each halve the resolution in their first unit, and end in global average
pooling and a linear classifier. RepDistiller leaves their weights at PyTorch's default
initialisation, and so do we.

ShuffleV1 (Zhang et al., CVPR 2018), g = 3, stage widths 240/480/960, units 4/8/4. A unit is a
1×1 group conv (g = 1 when its input is the 24-channel stem) → BN-ReLU → channel shuffle →
3×3 depthwise (stride) → BN → ReLU → 1×1 group conv → BN; the first unit of a stage concatenates a
3×3 stride-2 average-pooled shortcut (so its branch produces width − input channels), the others
add an identity shortcut; ReLU follows. 949,258 parameters at 100 classes.

ShuffleV2 (Ma et al., ECCV 2018), size 1×: stage widths 116/232/464, a down-sampling unit then
3/7/3 basic units, a 1×1 conv-BN-ReLU to 1024 channels before pooling. The basic unit splits the
channels in half, passes one half through 1×1-BN-ReLU, 3×3 depthwise-BN, 1×1-BN-ReLU,
concatenates and shuffles (2 groups). 1,355,528 parameters at 100 classes.

Feature view: the stem, each stage's output, and (``preact``) the same output before its last
ReLU. For ShuffleV2 RepDistiller returns that tensor before the channel shuffle; we shuffle it so
``relu(preact) == stage`` channel for channel (a learned connector sees the same information).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Features, StageInfo
from .layers import ZooModel, channel_shuffle
from .registry import register_model


def _conv_bn(inp: int, oup: int, kernel: int = 1, stride: int = 1,
             groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, kernel, stride, kernel // 2, groups=groups,
                                   bias=False), nn.BatchNorm2d(oup))


class ShuffleV1Unit(nn.Module):
    """A ShuffleNet V1 unit; returns the pre-ReLU output (sum or concatenation)."""

    def __init__(self, inp: int, oup: int, stride: int, groups: int, stem_width: int = 24):
        super().__init__()
        mid = oup // 4
        self.g1 = 1 if inp == stem_width else groups  # the stem's 24 channels are not grouped
        self.stride = stride
        self.conv1 = _conv_bn(inp, mid, groups=self.g1)
        self.conv2 = _conv_bn(mid, mid, 3, stride, groups=mid)
        self.conv3 = _conv_bn(mid, oup, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = channel_shuffle(F.relu(self.conv1(x)), self.g1)
        out = self.conv3(F.relu(self.conv2(out)))
        if self.stride == 2:
            return torch.cat([out, F.avg_pool2d(x, 3, 2, 1)], 1)
        return out + x


class ShuffleV2Down(nn.Module):
    """ShuffleNet V2's stride-2 unit: two branches of width out/2, concatenated and shuffled."""

    def __init__(self, inp: int, oup: int):
        super().__init__()
        mid = oup // 2
        self.left = nn.Sequential(_conv_bn(inp, inp, 3, 2, groups=inp), _conv_bn(inp, mid),
                                  nn.ReLU(inplace=True))
        self.right = nn.Sequential(_conv_bn(inp, mid), nn.ReLU(inplace=True),
                                   _conv_bn(mid, mid, 3, 2, groups=mid), _conv_bn(mid, mid),
                                   nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(torch.cat([self.left(x), self.right(x)], 1), 2)


class ShuffleV2Unit(nn.Module):
    """ShuffleNet V2's basic unit; returns (output, the same output before its last ReLU)."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(_conv_bn(half, half), nn.ReLU(inplace=True),
                                    _conv_bn(half, half, 3, groups=half), _conv_bn(half, half))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep, rest = x.chunk(2, dim=1)
        pre = self.branch(rest)
        out = channel_shuffle(torch.cat([keep, F.relu(pre)], 1), 2)
        return out, channel_shuffle(torch.cat([keep, pre], 1), 2)


class _ShuffleNet(ZooModel):
    """Shared stem for both versions: 1×1 conv-BN-ReLU to 24 channels, stride 1."""

    def _stem(self, in_chans: int) -> None:
        self.conv1 = nn.Conv2d(in_chans, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)

    def _stem_forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn1(self.conv1(x)))


class ShuffleNetV1(_ShuffleNet):
    def __init__(self, num_classes: int = 100, in_chans: int = 3, groups: int = 3,
                 widths: tuple[int, int, int] = (240, 480, 960),
                 units: tuple[int, int, int] = (4, 8, 4)):
        super().__init__()
        self._stem(in_chans)
        inp, stages = 24, []
        self.layers = nn.ModuleList()
        for i, (w, n) in enumerate(zip(widths, units)):
            self.layers.append(nn.ModuleList(
                ShuffleV1Unit(inp if j == 0 else w, w - inp if j == 0 else w, 2 if j == 0 else 1,
                              groups) for j in range(n)))
            inp = w
            stages.append(StageInfo(f"stage{i + 1}", w, 2 ** (i + 1)))
        self.linear = nn.Linear(inp, num_classes)
        self._describe(num_classes, in_chans, inp, StageInfo("stem", 24, 1), stages)

    def features(self, x: torch.Tensor) -> Features:
        stem = self._stem_forward(x)
        out, stages, preact = self._post_relu_stages(stem, self.layers)
        return self._finish(out, self.linear, stem, stages, preact)


class ShuffleNetV2(_ShuffleNet):
    def __init__(self, num_classes: int = 100, in_chans: int = 3,
                 widths: tuple[int, int, int, int] = (116, 232, 464, 1024),
                 units: tuple[int, int, int] = (3, 7, 3)):
        super().__init__()
        self._stem(in_chans)
        inp, stages = 24, []
        self.layers = nn.ModuleList()
        for i, (w, n) in enumerate(zip(widths[:3], units)):
            self.layers.append(nn.ModuleList(
                [ShuffleV2Down(inp, w)] + [ShuffleV2Unit(w) for _ in range(n)]))
            inp = w
            stages.append(StageInfo(f"stage{i + 1}", w, 2 ** (i + 1)))
        self.conv2 = nn.Conv2d(inp, widths[3], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(widths[3])
        self.linear = nn.Linear(widths[3], num_classes)
        self._describe(num_classes, in_chans, widths[3], StageInfo("stem", 24, 1), stages)

    def features(self, x: torch.Tensor) -> Features:
        stem = self._stem_forward(x)
        out, stages, preact = stem, [], []
        for down, *units in self.layers:
            out = down(out)
            for unit in units:
                out, pre = unit(out)
            stages.append(out)
            preact.append(pre)
        return self._finish(F.relu(self.bn2(self.conv2(out))), self.linear, stem, stages, preact)


@register_model(family="shufflenet")
def shufflev1(num_classes: int, in_chans: int = 3) -> ShuffleNetV1:
    """ShuffleNet V1, g = 3 (RepDistiller ShuffleV1)."""
    return ShuffleNetV1(num_classes, in_chans)


@register_model(family="shufflenet")
def shufflev2(num_classes: int, in_chans: int = 3) -> ShuffleNetV2:
    """ShuffleNet V2, 1× (RepDistiller ShuffleV2)."""
    return ShuffleNetV2(num_classes, in_chans)
