"""``pkt``: Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge
Transfer" (ECCV 2018).

Cosine-kernel conditional distributions of the penultimate embeddings, student against teacher
(RepDistiller's CIFAR-100 benchmark: weight 30000). InDistill's two-kernel, symmetric variant is
``pkt_indistill`` (:mod:`.pkt_indistill`).
"""

from __future__ import annotations

import torch

from .base import REPDISTILLER, Distiller, register_loss

__all__ = ["PKT", "pkt"]


def pkt(student_emb: torch.Tensor, teacher_emb: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer"
    (ECCV 2018).

    With cosine similarities rescaled to [0, 1], ``K_ij = (1 + cos(e_i, e_j)) / 2``, and rows
    normalised to conditional probabilities ``P_ij = K_ij / Σ_j K_ij``:
    ``mean_{i,j} P^t_ij · log((P^t_ij + ε) / (P^s_ij + ε))`` — the mean over all B² entries (not
    the sum over j), as the authors' code does. Vectors are normalised with ``‖e‖ + ε``.
    """
    def cond_prob(e: torch.Tensor) -> torch.Tensor:
        e = e.float().flatten(1)
        e = e / (e.norm(dim=1, keepdim=True) + eps)
        e = e.masked_fill(torch.isnan(e), 0.0)
        k = (e @ e.t() + 1.0) / 2.0
        return k / k.sum(1, keepdim=True)

    ps, pt = cond_prob(student_emb), cond_prob(teacher_emb)
    return (pt * torch.log((pt + eps) / (ps + eps))).mean()


@register_loss(
    "pkt", family="relation", year=2018, repo=REPDISTILLER,
    description="probabilistic knowledge transfer: cosine-kernel conditional KL",
    paper="Passalis & Tefas, Learning Deep Representations with Probabilistic Knowledge "
          "Transfer, ECCV 2018",
    defaults={"w_ce": 1.0, "w_pkt": 30000.0}, taps=("logits", "embedding"))
class PKT(Distiller):
    """Probabilistic knowledge transfer: KL between cosine-kernel conditional distributions."""

    taps = frozenset({"logits", "embedding"})

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {"pkt": pkt(student.embedding, teacher.embedding)}
