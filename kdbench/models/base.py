"""The one model contract every architecture meets, so every loss works with every model."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class StageInfo:
    """One feature stage: its name, channels and spatial reduction relative to the input."""

    name: str
    channels: int
    reduction: int

    def shape(self, input_size: tuple[int, int]) -> tuple[int, int, int]:
        h, w = input_size
        return (self.channels, math.ceil(h / self.reduction), math.ceil(w / self.reduction))


@dataclass
class Features:
    """Everything a KD loss may tap from one forward pass.

    ``stages`` are the stage outputs after activation (shallow to deep), ``preact`` the same
    outputs before the final ReLU of each stage, ``embedding`` the pooled penultimate vector and
    ``logits`` the classifier output. A logit-only forward leaves the lists empty.
    """

    logits: torch.Tensor
    embedding: torch.Tensor | None = None
    stages: list[torch.Tensor] = field(default_factory=list)
    preact: list[torch.Tensor] = field(default_factory=list)
    stem: torch.Tensor | None = None

    def detach(self) -> Features:
        def d(t):
            return None if t is None else t.detach()
        return Features(d(self.logits), d(self.embedding), [t.detach() for t in self.stages],
                        [t.detach() for t in self.preact], d(self.stem))


class KDModel(nn.Module):
    """Base class: ``forward(x)`` gives logits, ``features(x)`` gives :class:`Features`.

    Subclasses set ``num_classes``, ``in_chans``, ``embedding_dim``, ``stage_info`` (a list of
    :class:`StageInfo`, known without running data so losses can size connectors up front),
    ``stem_info`` (the same for ``Features.stem``, or None) and ``min_input_size`` (the smallest
    square input the model accepts).
    """

    num_classes: int
    in_chans: int
    embedding_dim: int
    stage_info: list[StageInfo]
    stem_info: StageInfo | None = None
    min_input_size: int = 1
    #: False for models whose intermediate features cannot be extracted (logit-only losses work).
    has_features: bool = True
    #: False for models with stages but no pre-activation tap (``Features.preact`` stays empty).
    has_preact: bool = True

    def features(self, x: torch.Tensor) -> Features:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).logits

    def stage_shapes(self, input_size: tuple[int, int]) -> list[tuple[int, int, int]]:
        """(C, H, W) of every stage output for an input of ``input_size`` (H, W)."""
        return [s.shape(input_size) for s in self.stage_info]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
