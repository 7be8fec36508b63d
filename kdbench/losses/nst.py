"""``nst``: Huang & Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer"
(2017).

Polynomial-kernel MMD between the channels of every stage (RepDistiller's CIFAR-100 benchmark:
weight 50), the stages paired shallow to deep and the terms summed.
Option ``stages`` (``"0:2,1:3,2:4"``) chooses the pairs: a kdbench extension that is not in
RepDistiller's code, a deliberate deviation, off by default (None: the stages one to one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import REPDISTILLER, EveryStage, pool_to_common, register_loss

__all__ = ["NST", "nst"]


def nst(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """Huang & Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer" (2017).

    Squared MMD with the polynomial kernel ``k(x, y) = (xᵀy)²`` between the sets of channels,
    each channel's spatial map L2-normalised:
    ``mean k(t_i, t_j) + mean k(s_i, s_j) − 2 mean k(s_i, t_j)``, means over the batch and all
    channel pairs (the teacher-only term is a constant, as in RepDistiller's "full" loss).
    """
    s, t = pool_to_common(student_feat, teacher_feat)
    s = F.normalize(s.float().flatten(2), dim=2)
    t = F.normalize(t.float().flatten(2), dim=2)

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (b @ a.transpose(1, 2)).pow(2).mean()

    return k(t, t).detach() + k(s, s) - 2 * k(s, t)


@register_loss(
    "nst", family="feature", year=2017, repo=REPDISTILLER,
    description="neuron selectivity transfer: polynomial-kernel MMD, every stage",
    paper="Huang & Wang, Like What You Like: Knowledge Distill via Neuron Selectivity "
          "Transfer, 2017",
    defaults={"w_ce": 1.0, "w_nst": 50.0, "stages": None}, later=("stages",),
    taps=("logits", "stages"))
class NST(EveryStage):
    """Neuron selectivity transfer (polynomial-kernel MMD) on every stage, summed."""

    name = "nst"

    def pair(self, s, t):
        return nst(s, t)
