"""The loss-plugin contract: a :class:`Distiller` built from a :class:`DistillContext`.

The engine computes ``w_ce · CE(student, y) + Σ_i w_i · term_i`` where the distiller returns the
unweighted terms ``{name_i: term_i}`` and every ``w_<name_i>`` comes from the loss's resolved
weights. Connectors (regressors, embeddings) are the distiller's own parameters: they are trained
with the student, counted in the record, and never exported with the student.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..models.base import Features, KDModel

#: What a loss may tap: logits, post-activation stages, pre-activation stages, the pooled
#: embedding, and the sample index (CRD's memory bank).
TAPS = frozenset({"logits", "stages", "preact", "embedding", "index"})


@dataclass
class DistillContext:
    """Everything a loss factory may need to size its connectors, known before training."""

    student: KDModel
    teacher: KDModel | None
    num_classes: int
    input_shape: tuple[int, int, int]
    num_train: int
    weights: dict[str, float] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


class Distiller(nn.Module):
    """Base class of every loss plugin's module.

    Subclasses set ``taps`` (subset of :data:`TAPS`) and ``needs_teacher`` and implement
    ``forward(student, teacher, target, index, epoch) -> {term name: unweighted tensor}``.
    """

    taps: frozenset[str] = frozenset({"logits"})
    needs_teacher: bool = True

    def __init__(self, ctx: DistillContext):
        super().__init__()
        self.weights = dict(ctx.weights)
        self.options = dict(ctx.options)

    def forward(self, student: Features, teacher: Features | None, target: torch.Tensor,
                index: torch.Tensor | None = None, epoch: int = 0) -> dict[str, torch.Tensor]:
        raise NotImplementedError  # pragma: no cover

    @property
    def needs_features(self) -> bool:
        return bool(self.taps - {"logits", "index"})

    def connector_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
