"""``at``: Zagoruyko & Komodakis, "Paying More Attention to Attention" (ICLR 2017).

Attention transfer on every stage (RepDistiller's CIFAR-100 benchmark: p 2, weight 1000), the
student's and the teacher's stages paired shallow to deep and the terms summed.
Option ``stages`` (``"0:2,1:3,2:4"``) chooses the pairs: a kdbench extension that is not in
RepDistiller's code, a deliberate deviation, off by default (None: the stages one to one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import REPDISTILLER, DistillContext, EveryStage, option, pool_to_common, register_loss

__all__ = ["AT", "at", "attention_map"]


def attention_map(feat: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Spatial attention of a feature map: ``normalize(mean_c |f_c|^p)`` flattened, L2 per sample.

    RepDistiller takes ``f.pow(p)`` (the maps are post-ReLU, so ``|f|^p = f^p`` for even p and
    non-negative f) and the channel *mean* (the paper's sum differs by the constant C, which the
    L2 normalisation removes).
    """
    f = feat.float()
    return F.normalize(f.pow(p).mean(1).flatten(1), dim=1)


def at(student_feat: torch.Tensor, teacher_feat: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Zagoruyko & Komodakis, "Paying More Attention to Attention" (ICLR 2017).

    ``mean_{b,hw}( (Q_s − Q_t)² )`` with ``Q = attention_map(f, p)``: the squared difference of
    the L2-normalised attention maps, averaged over batch *and* spatial positions (RepDistiller;
    the paper writes the p-norm of the difference, ``β/2·‖Q_s − Q_t‖₂``, not squared). Maps of
    different resolution are first average-pooled to the smaller one.
    """
    s, t = pool_to_common(student_feat, teacher_feat)
    return (attention_map(s, p) - attention_map(t, p)).pow(2).mean()


@register_loss(
    "at", family="feature", year=2017, repo=REPDISTILLER,
    description="attention transfer: L2-normalised spatial attention maps, every stage",
    paper="Zagoruyko & Komodakis, Paying More Attention to Attention, ICLR 2017",
    defaults={"w_ce": 1.0, "w_at": 1000.0, "p": 2.0, "stages": None}, later=("stages",),
    taps=("logits", "stages"))
class AT(EveryStage):
    """Attention transfer on every stage, summed over stages."""

    name = "at"

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        self.p = option(self.options, "p", "at", positive=True)

    def pair(self, s, t):
        return at(s, t, self.p)
