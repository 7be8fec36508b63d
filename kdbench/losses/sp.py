"""``sp``: Tung & Mori, "Similarity-Preserving Knowledge Distillation" (ICCV 2019).

The batch Gram matrices of the last stage (RepDistiller's CIFAR-100 benchmark: weight 3000).
Option ``stages`` (``"1:2,2:4"``) names the pairs of student and teacher stages whose terms are
summed: the paper's sum over a set I of layer pairs, which RepDistiller's code fixes to the last
stages; a kdbench extension of that code, off by default (None: the last stage of each).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import (
    REPDISTILLER,
    DistillContext,
    Distiller,
    probe_pair,
    register_loss,
    require_teacher,
    stage_pairs,
)

__all__ = ["SP", "sp"]


def sp(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """Tung & Mori, "Similarity-Preserving Knowledge Distillation" (ICCV 2019).

    ``‖G̃_t − G̃_s‖²_F / B²`` with ``G = F Fᵀ`` (B × B) of the flattened features and ``G̃`` its
    rows L2-normalised.
    """
    b = student_feat.shape[0]
    fs, ft = student_feat.float().reshape(b, -1), teacher_feat.float().reshape(b, -1)
    gs = F.normalize(fs @ fs.t(), dim=1)
    gt = F.normalize(ft @ ft.t(), dim=1)
    return (gt - gs).pow(2).sum() / (b * b)


@register_loss(
    "sp", family="relation", year=2019, repo=REPDISTILLER,
    description="similarity-preserving: batch Gram matrices of the last stage",
    paper="Tung & Mori, Similarity-Preserving Knowledge Distillation, ICCV 2019",
    defaults={"w_ce": 1.0, "w_sp": 3000.0, "stages": None}, later=("stages",),
    taps=("logits", "stages"))
class SP(Distiller):
    """Similarity-preserving KD on the last stage, or summed over the pairs of option
    ``stages`` (any two stages pair: the Gram matrices are B × B)."""

    taps = frozenset({"logits", "stages"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        chosen = self.options.get("stages")
        self.pairs: list[tuple[int, int]] | None = None
        if chosen is not None:
            fs, ft = probe_pair(ctx, "sp")
            self.pairs = stage_pairs(chosen, fs.stages, ft.stages, "sp")
        else:
            require_teacher(ctx, "sp")

    def forward(self, student, teacher, target, index=None, epoch=0):
        if self.pairs is None:
            return {"sp": sp(student.stages[-1], teacher.stages[-1])}
        return {"sp": sum(sp(student.stages[i], teacher.stages[j]) for i, j in self.pairs)}
