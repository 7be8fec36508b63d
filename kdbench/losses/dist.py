"""``dist``: Huang et al., "Knowledge Distillation from A Stronger Teacher" (NeurIPS 2022).

Pearson-correlation relations of the softened predictions, inter-class (each sample's class
distribution) and intra-class (each class's scores across the batch). Official code
hunto/DIST_KD (its classification code, hunto/image_classification_sota); official CIFAR-100
defaults β = γ = 1, τ = 4, CE weight 1, DIST weight 2. Fidelity: ``docs/fidelity/dist.md``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Checked, DistillContext, Temperature, option, register_loss

__all__ = ["DIST", "dist", "dist_relations", "pearson"]


def pearson(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Row-wise Pearson correlation as DIST computes it: the cosine of the centred rows with ε
    added to the product of the norms (not a clamp)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_relations(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                   T: Temperature = 4.0) -> tuple[torch.Tensor, torch.Tensor]:
    """DIST's two relation losses ``(inter, intra)``, each already ×T².

    With ``Y = softmax(z/T)`` (B × C): inter-class = ``1 − mean_i ρ(Y_s[i,:], Y_t[i,:])`` (each
    sample's class distribution), intra-class = ``1 − mean_c ρ(Y_s[:,c], Y_t[:,c])`` (each
    class's scores across the batch), ρ the Pearson correlation of :func:`pearson`.
    """
    y_s = F.softmax(student_logits.float() / T, dim=1)
    y_t = F.softmax(teacher_logits.float() / T, dim=1)
    inter = 1.0 - pearson(y_s, y_t).mean()
    intra = 1.0 - pearson(y_s.t(), y_t.t()).mean()
    return inter * (T * T), intra * (T * T)


def dist(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 1.0,
         gamma: float = 1.0, T: Temperature = 4.0) -> torch.Tensor:
    """Huang et al., "Knowledge Distillation from A Stronger Teacher" (NeurIPS 2022).

    ``T² · (β · inter + γ · intra)``, see :func:`dist_relations`. Official code:
    hunto/image_classification_sota ``lib/models/losses/dist_kd.py``; CIFAR-100 runs use
    ``kd: dist_t4`` (β = γ = 1, τ = 4) with CE weight 1 and DIST weight 2. Computed in float32
    whatever the autocast dtype of the inputs. Fidelity: ``docs/fidelity/dist.md``.
    """
    inter, intra = dist_relations(student_logits, teacher_logits, T)
    return beta * inter + gamma * intra


@register_loss(
    "dist", family="logit", year=2022, repo="https://github.com/hunto/DIST_KD",
    description="DIST: Pearson relations of softened predictions, inter- and intra-class",
    paper="Huang et al., Knowledge Distillation from A Stronger Teacher, NeurIPS 2022",
    # dist_cifar.yaml: ori_loss_weight 1, kd_loss_weight 2, kd dist_t4 (β = γ = 1, τ = 4)
    defaults={"w_ce": 1.0, "w_dist": 2.0, "beta": 1.0, "gamma": 1.0, "T": 4.0},
    taps=("logits",))
class DIST(Checked):
    """DIST: Pearson-correlation relations of softened predictions, inter- and intra-class.

    Official CIFAR-100 defaults (hunto/image_classification_sota, the classification code of
    hunto/DIST_KD, ``configs/strategies/distill/dist_cifar.yaml``): β = γ = 1, τ = 4, CE weight
    1, DIST weight 2. No deliberate difference from the official code.
    """

    name = "dist"

    @classmethod
    def check(cls, options):
        for key in ("beta", "gamma"):
            option(options, key, cls.name, nonneg=True)
        option(options, "T", cls.name, positive=True)

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        o = self.options
        self.beta, self.gamma, self.T = o["beta"], o["gamma"], o["T"]

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {"dist": dist(student.logits, teacher.logits, self.beta, self.gamma, self.T)}
