"""``nkd``: Yang et al., "From Knowledge Distillation to Self-Knowledge Distillation: A Unified
Approach with Normalized Loss and Customized Soft Labels" (ICCV 2023).

Normalized KD: the teacher-weighted target-class log-probability plus γ·T² times the
cross-entropy of the normalised non-target distributions. Official code yzd-v/cls_KD; official
CIFAR-100 defaults T = 3, γ = 3.5, NKD and CE weights 1. Fidelity: ``docs/fidelity/nkd.md``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Checked, DistillContext, Temperature, option, register_loss

__all__ = ["NKD", "nkd"]


def nkd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
        T: Temperature = 1.0, gamma: float = 1.5) -> torch.Tensor:
    """Yang et al., "From Knowledge Distillation to Self-Knowledge Distillation: A Unified
    Approach with Normalized Loss and Customized Soft Labels" (ICCV 2023): NKD.

    ``−mean_i t_i · log s_i  −  γ · T² · mean_i Σ_{c≠y_i} t̂_ic · log ŝ_ic`` where ``t_i, s_i``
    are the teacher's and student's target-class probabilities at temperature 1 (the teacher's
    a constant), and ``t̂, ŝ`` the *normalised non-target* distributions, i.e. the softmax of
    the logits at temperature T with the target class removed. Official code: yzd-v/cls_KD
    ``mmcls/models/dis_losses/nkd.py``. Both parts are cross-entropies, as there: the non-target
    part exceeds the corresponding KL by the teacher's entropy, a constant for the student.
    Fidelity: ``docs/fidelity/nkd.md``.
    """
    s, t = student_logits.float(), teacher_logits.float()
    gt = F.one_hot(target, s.shape[1]).bool()
    s_target = F.log_softmax(s, dim=1).masked_select(gt)
    t_target = F.softmax(t, dim=1).masked_select(gt).detach()
    loss_target = -(t_target * s_target).mean()
    log_q_s = F.log_softmax((s / T).masked_fill(gt, float("-inf")), dim=1)
    q_t = F.softmax((t / T).masked_fill(gt, float("-inf")), dim=1)
    # the target column is 0 · (−inf) in the product: drop it before multiplying
    loss_non = (q_t * log_q_s.masked_fill(gt, 0.0)).sum(dim=1).mean()
    return loss_target - gamma * (T * T) * loss_non


@register_loss(
    "nkd", family="logit", year=2023, repo="https://github.com/yzd-v/cls_KD",
    description="normalized KD: target-class term plus normalised non-target term",
    paper="Yang et al., From Knowledge Distillation to Self-Knowledge Distillation: A "
          "Unified Approach with Normalized Loss and Customized Soft Labels, ICCV 2023",
    # configs/distillers/cifar100/res34_distill_res18_cifar.py: temp 3.0, gamma 3.5
    defaults={"w_ce": 1.0, "w_nkd": 1.0, "T": 3.0, "gamma": 3.5}, taps=("logits",))
class NKD(Checked):
    """NKD: teacher-weighted target log-probability plus γ·T²·normalised non-target CE.

    Official defaults (yzd-v/cls_KD): CIFAR-100 T = 3, γ = 3.5
    (``configs/distillers/cifar100/res34_distill_res18_cifar.py``; ImageNet configs use T = 1,
    γ = 1.5), NKD and CE weights 1. No deliberate difference from the official code.
    """

    name = "nkd"

    @classmethod
    def check(cls, options):
        option(options, "T", cls.name, positive=True)
        option(options, "gamma", cls.name, nonneg=True)

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        self.T, self.gamma = self.options["T"], self.options["gamma"]

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {"nkd": nkd(student.logits, teacher.logits, target, self.T, self.gamma)}
