"""VGG with batch norm for CIFAR (Simonyan & Zisserman, ICLR 2015) as RepDistiller defines it.

Five blocks of 3×3 conv(+bias)-BN-ReLU layers (configurations S/A/B/D/E give VGG-8/11/13/16/19),
the ReLU after each block's last BN applied outside the block so the pre-activation can be tapped.
2×2 max-pooling follows blocks 0, 1 and 2; RepDistiller pools after block 3 only for 64×64 inputs
(TinyImageNet), which is the ``pool3`` argument here. No fully connected layers: global average
pooling and one linear classifier on 512 channels. vgg13 has 9,462,180 parameters at 100 classes.

Feature view: the stem is block 0 after its ReLU; the stages are blocks 1–4 after their ReLU, and
``preact`` the same blocks' BN outputs.

Max-pooling uses ``ceil_mode`` so odd sizes round up like every other stride-2 layer in the zoo
(and :class:`StageInfo` predicts it); for the even sizes the benchmark uses this is identical.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Features, StageInfo
from .layers import ZooModel, init_weights, zoo_factory
from .registry import register_model

CONFIGS: dict[int, list[list[int]]] = {
    8: [[64], [128], [256], [512], [512]],
    11: [[64], [128], [256, 256], [512, 512], [512, 512]],
    13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    19: [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


def _block(widths: list[int], inplanes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(inplanes, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        inplanes = w
    return nn.Sequential(*layers[:-1])  # the block's last ReLU is applied (and tapped) outside


class VGG(ZooModel):
    """VGG-``depth`` with BN; ``pool3`` adds RepDistiller's fourth pooling (64×64 inputs)."""

    def __init__(self, depth: int, num_classes: int = 100, in_chans: int = 3,
                 pool3: bool = False):
        super().__init__()
        if depth not in CONFIGS:
            raise ValueError(f"VGG depth must be one of {sorted(CONFIGS)}, got {depth}")
        cfg = CONFIGS[depth]
        inplanes = in_chans
        self.blocks = nn.ModuleList()
        for widths in cfg:
            self.blocks.append(_block(widths, inplanes))
            inplanes = widths[-1]
        # pooling before blocks 1..4: after blocks 0, 1, 2 always, after block 3 only with pool3
        self.pool_before = (True, True, True, pool3)
        self.classifier = nn.Linear(512, num_classes)
        reductions = [2, 4, 8, 16 if pool3 else 8]
        stages = [StageInfo(f"stage{i + 1}", cfg[i + 1][-1], r) for i, r in enumerate(reductions)]
        self._describe(num_classes, in_chans, 512, StageInfo("stem", cfg[0][-1], 1), stages)
        init_weights(self, linear_std=0.01)

    def features(self, x: torch.Tensor) -> Features:
        stem = F.relu(self.blocks[0](x))
        out, stages, preact = stem, [], []
        for block, pool in zip(self.blocks[1:], self.pool_before):
            if pool:
                out = F.max_pool2d(out, 2, 2, ceil_mode=True)
            pre = block(out)
            out = F.relu(pre)
            stages.append(out)
            preact.append(pre)
        return self._finish(out, self.classifier, stem, stages, preact)


def _vgg(depth: int):
    """The registered factory of one VGG variant."""
    factory = zoo_factory(f"vgg{depth}", f"VGG-{depth} with batch norm (RepDistiller "
                          f"vgg{depth}_bn)", VGG, depth)
    return register_model(factory, family="vgg")


vgg8 = _vgg(8)
vgg11 = _vgg(11)
vgg13 = _vgg(13)
vgg16 = _vgg(16)
vgg19 = _vgg(19)
