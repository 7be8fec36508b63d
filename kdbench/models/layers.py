"""Pieces the CIFAR zoo shares: the zoo base class, weight initialisation, pooling, shuffling."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import Features, KDModel, StageInfo


class ZooModel(KDModel):
    """A CIFAR-zoo model: sets the feature-view metadata and finishes the forward pass.

    Every zoo model pads its convolutions, so any input size runs; 4×4 is the floor below which
    the stride-2 stages would see nothing but padding.
    """

    min_input_size = 4

    def _describe(self, num_classes: int, in_chans: int, embedding_dim: int,
                  stem: StageInfo, stages: list[StageInfo]) -> None:
        self.num_classes, self.in_chans, self.embedding_dim = num_classes, in_chans, embedding_dim
        self.stem_info, self.stage_info = stem, stages

    @staticmethod
    def _post_relu_stages(out: torch.Tensor, layers: Iterable[Iterable[nn.Module]]
                          ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Run stages of blocks that return their pre-ReLU output; the last block's output
        before and after the ReLU are the stage's ``preact`` and ``stages`` taps."""
        stages, preact = [], []
        for layer in layers:
            for block in layer:
                pre = block(out)
                out = F.relu(pre)
            stages.append(out)
            preact.append(pre)
        return out, stages, preact

    def _finish(self, out: torch.Tensor, classifier: nn.Module, stem: torch.Tensor,
                stages: list[torch.Tensor], preact: list[torch.Tensor]) -> Features:
        embedding = global_pool(out)
        return Features(classifier(embedding), embedding, stages, preact, stem)


def zoo_factory(name: str, doc: str, cls: Callable[..., KDModel], *args: Any,
                **fixed: Any) -> Callable[..., KDModel]:
    """A registry factory ``f(num_classes, in_chans=3, **options)`` for one zoo variant; its
    name is the registry name and its docstring the description ``kdbench plugins`` shows."""
    def factory(num_classes: int, in_chans: int = 3, **options: Any) -> KDModel:
        return cls(*args, num_classes=num_classes, in_chans=in_chans, **fixed, **options)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = doc
    return factory


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling to (N, C). RepDistiller pools with a fixed kernel equal to the
    last map's size at 32×32 (e.g. AvgPool2d(8)); adaptive pooling is the same there and keeps
    other input sizes working."""
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: (N, g·c, H, W) → interleave the g groups' channels."""
    if groups == 1:
        return x
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def init_weights(model: nn.Module, linear_std: float | None = None,
                 zero_linear_bias: bool = False) -> None:
    """RepDistiller's initialisation: He-normal convolutions (fan-out, i.e. N(0, 2/(k²·C_out)))
    with zero bias, BatchNorm γ=1 β=0, and the classifier either N(0, ``linear_std``) with zero
    bias, PyTorch's default with zero bias (``zero_linear_bias``), or PyTorch's default."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
            if linear_std is not None or zero_linear_bias:
                nn.init.zeros_(m.bias)
