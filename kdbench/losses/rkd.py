"""``rkd``: Park et al., "Relational Knowledge Distillation" (CVPR 2019).

Distance (×25) and angle (×50) potentials of the penultimate embeddings of a batch
(RepDistiller's CIFAR-100 benchmark: weight 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import REPDISTILLER, DistillContext, Distiller, option, register_loss

__all__ = ["RKD", "rkd", "rkd_angle", "rkd_distance"]


def _pdist(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    sq = e.pow(2).sum(1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=d.dtype))


def rkd_distance(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """RKD's distance term: ``mean_{i,j} Huber(ψ_s(i,j), ψ_t(i,j))`` over all B² pairs (diagonal
    included, where both are 0), ``ψ(i,j) = ‖e_i − e_j‖ / μ`` with μ the mean of the *non-zero*
    distances of the batch; Huber is smooth-L1 with δ = 1. The teacher side carries no gradient."""
    s, t = student_emb.float().flatten(1), teacher_emb.float().flatten(1)
    with torch.no_grad():
        td = _pdist(t)
        td = td / td[td > 0].mean()
    sd = _pdist(s)
    sd = sd / sd[sd > 0].mean()
    return F.smooth_l1_loss(sd, td)


def rkd_angle(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """RKD's angle term: ``mean_{i,j,k} Huber(cos∠_s(j,i,k), cos∠_t(j,i,k))`` over all B³
    triplets, ``cos∠(j,i,k) = ⟨n(e_j − e_i), n(e_k − e_i)⟩`` with n the L2 normalisation (0 for
    the zero vector, so degenerate triplets count as 0)."""
    s, t = student_emb.float().flatten(1), teacher_emb.float().flatten(1)

    def angles(e: torch.Tensor) -> torch.Tensor:
        d = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
        return torch.bmm(d, d.transpose(1, 2)).flatten()

    with torch.no_grad():
        ta = angles(t)
    return F.smooth_l1_loss(angles(s), ta)


def rkd(student_emb: torch.Tensor, teacher_emb: torch.Tensor, w_dist: float = 25.0,
        w_angle: float = 50.0) -> torch.Tensor:
    """Park et al., "Relational Knowledge Distillation" (CVPR 2019).

    ``w_dist · rkd_distance + w_angle · rkd_angle`` on the penultimate embeddings (RepDistiller's
    25 and 50).
    """
    return w_dist * rkd_distance(student_emb, teacher_emb) + w_angle * rkd_angle(student_emb,
                                                                                   teacher_emb)


@register_loss(
    "rkd", family="relation", year=2019, repo=REPDISTILLER,
    description="relational KD: distance and angle potentials of the embeddings",
    paper="Park et al., Relational Knowledge Distillation, CVPR 2019",
    defaults={"w_ce": 1.0, "w_rkd": 1.0, "distance": 25.0, "angle": 50.0},
    taps=("logits", "embedding"))
class RKD(Distiller):
    """Relational KD: distance (×25) and angle (×50) potentials of the embedding batch."""

    taps = frozenset({"logits", "embedding"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        self.distance = option(self.options, "distance", "rkd", nonneg=True)
        self.angle = option(self.options, "angle", "rkd", nonneg=True)

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {"rkd": rkd(student.embedding, teacher.embedding, self.distance, self.angle)}
