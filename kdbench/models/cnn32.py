"""InDistill's plain CNNs for 32×32 inputs: the auxiliary teacher Cnn32 and the student
Cnn32_Small.

Sarridis, Koutlis, Kordopatis-Zilos, Kompatsiaris, Papadopoulos, "InDistill: Information
flow-preserving knowledge distillation for model compression", WACV 2025 (arXiv 2205.10003);
official code github.com/gsarridis/InDistill, ``models/cnn32.py`` and ``models/cnn32_small.py``.

Three 3×3 convolutions *without padding* (with bias), each followed by BatchNorm, ReLU and 2×2
max-pooling, then a hidden fully connected layer with ReLU and the classifier; no dropout. A 32×32
input shrinks 32→30→15→13→6→4→2, so the classifier head sees ``widths[-1]·2·2`` features:

=============  ==========  ================  =========================
name           widths      fc                parameters (10 classes)
=============  ==========  ================  =========================
``cnn32``      16/32/64    256→128→classes   57,994 (3 channels)
``cnn32_small``  8/16/32   128→64→classes    15,050 (3 channels)
=============  ==========  ================  =========================

Feature view. A *stage* is one conv block's output after its max-pool: InDistill's
``get_features`` layers 0, 1, 2, the maps its layer-wise MSE compares (``kd_from_aux_to_student.py``
line 54–60). ReLU and max-pooling commute (both are monotone, so max(relu(a), relu(b)) =
relu(max(a, b)) bit for bit), so the block is computed as pool → ReLU: ``preact`` is the pooled
BatchNorm output, ``stages`` its ReLU, the same shape. The *embedding* is the hidden fc layer after
its ReLU (128-d / 64-d): the reference's layer 3, the representation its PKT distils and its
retrieval evaluation ranks (``layer=3`` in ``kd_from_*.py`` and ``train_baselines.py``). There is
no stem (``Features.stem`` stays None).

Where kdbench differs: none in the arithmetic. Module names follow the reference (``conv1``,
``conv1_bn``, …, ``fc1``, ``fc2``) so its state dicts load unchanged; initialisation is PyTorch's
default, as in the reference (no He init). Because the fc layer is sized for the 2×2 map, only
inputs of 30–37 pixels per side run; ``min_input_size`` is 32, the reference's input, and any
other size is refused with a one-line error before the classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import Features, StageInfo
from .layers import ZooModel, zoo_factory
from .registry import register_model

#: the spatial size every conv block leaves at the end for a 32×32 input: fc1 is sized for it
FINAL_MAP = 2


@dataclass(frozen=True)
class ValidConvStageInfo(StageInfo):
    """A stage after ``depth`` (unpadded 3×3 conv, 2×2 max-pool) pairs: ``h → ⌊(h − 2) / 2⌋``.

    ``reduction`` is the nominal stride product (2, 4, 8); :meth:`shape` is exact, which
    ``ceil(h / reduction)`` is not for unpadded convolutions (15, not 16, at 32×32).
    """

    depth: int = 1

    def shape(self, input_size: tuple[int, int]) -> tuple[int, int, int]:
        h, w = input_size
        for _ in range(self.depth):
            h, w = (h - 2) // 2, (w - 2) // 2
        return (self.channels, h, w)


class Cnn32(ZooModel):
    """InDistill's Cnn32 family: three unpadded conv-BN-ReLU-maxpool blocks of ``widths`` filters,
    then ``fc1`` (``widths[-1]·4 → hidden``, ReLU, the embedding) and ``fc2`` (the classifier)."""

    min_input_size = 32

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), hidden: int = 128,
                 num_classes: int = 10, in_chans: int = 3):
        super().__init__()
        if len(widths) != 3:
            raise ConfigError(f"Cnn32 has three conv blocks, got widths {tuple(widths)}")
        inplanes = in_chans
        for i, w in enumerate(widths, start=1):
            setattr(self, f"conv{i}", nn.Conv2d(inplanes, w, kernel_size=3))
            setattr(self, f"conv{i}_bn", nn.BatchNorm2d(w))
            inplanes = w
        self.fc1 = nn.Linear(widths[-1] * FINAL_MAP * FINAL_MAP, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)
        stages = [ValidConvStageInfo(f"stage{i + 1}", w, 2 ** (i + 1), depth=i + 1)
                  for i, w in enumerate(widths)]
        self._describe(num_classes, in_chans, hidden, None, stages)

    def blocks(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        """The (conv, BatchNorm) pair of every stage, shallow to deep (pruning reads these)."""
        return [(getattr(self, f"conv{i}"), getattr(self, f"conv{i}_bn")) for i in (1, 2, 3)]

    def features(self, x: torch.Tensor) -> Features:
        out, stages, preact = x, [], []
        for conv, bn in self.blocks():
            pre = F.max_pool2d(bn(conv(out)), 2)
            out = F.relu(pre)
            stages.append(out)
            preact.append(pre)
        if out.shape[-2:] != (FINAL_MAP, FINAL_MAP):
            raise ConfigError(f"{type(self).__name__} needs inputs of 30 to 37 pixels per side "
                              f"(fc1 is sized for 32×32), got {tuple(x.shape[-2:])}")
        embedding = F.relu(self.fc1(torch.flatten(out, 1)))
        return Features(self.fc2(embedding), embedding, stages, preact, None)


cnn32 = zoo_factory("cnn32", "InDistill's auxiliary teacher Cnn32: unpadded convs 16/32/64 "
                    "(BN, ReLU, max-pool), fc 256→128→classes; 32×32 inputs", Cnn32,
                    (16, 32, 64), 128)
cnn32_small = zoo_factory("cnn32_small", "InDistill's student Cnn32_Small: unpadded convs "
                          "8/16/32 (BN, ReLU, max-pool), fc 128→64→classes; 32×32 inputs",
                          Cnn32, (8, 16, 32), 64)
register_model(cnn32, family="cnn")
register_model(cnn32_small, family="cnn")
