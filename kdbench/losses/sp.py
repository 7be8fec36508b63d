"""``sp``: Tung & Mori, "Similarity-Preserving Knowledge Distillation" (ICCV 2019).

The batch Gram matrices of the last stage (RepDistiller's CIFAR-100 benchmark: weight 3000).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import REPDISTILLER, DistillContext, Distiller, register_loss, require_teacher

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
    defaults={"w_ce": 1.0, "w_sp": 3000.0}, taps=("logits", "stages"))
class SP(Distiller):
    """Similarity-preserving KD on the last stage."""

    taps = frozenset({"logits", "stages"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        require_teacher(ctx, "sp")

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {"sp": sp(student.stages[-1], teacher.stages[-1])}
