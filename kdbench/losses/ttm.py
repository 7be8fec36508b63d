"""``ttm`` and ``wttm``: Zheng & Yang, "Knowledge Distillation Based on Transformed Teacher
Matching" (ICLR 2024).

TTM matches the student (temperature 1) to the power-transformed teacher ``p_t^γ``, normalised;
WTTM weights each sample's term by the teacher's power sum. Official code zkxufo/TTM; official
defaults (its README): TTM γ = 0.1 with weight 45, WTTM γ = 0.2 with weight 4, CE weight 1.
Fidelity: ``docs/fidelity/ttm.md``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Checked, DistillContext, option, register_loss

__all__ = ["TTM", "WTTM", "ttm", "ttm_log_target", "wttm"]


def ttm_log_target(teacher_logits: torch.Tensor, gamma: float) -> tuple[torch.Tensor,
                                                                        torch.Tensor]:
    """``(log p̃_t, U)``: the power-transformed teacher ``p̃_t = p_t^γ / U`` with
    ``U = Σ_c p_t,c^γ``, in log space (the official code raises the softmax to the power γ;
    log space gives the same numbers without underflow for tiny probabilities)."""
    powered = gamma * F.log_softmax(teacher_logits.float(), dim=1)
    log_u = torch.logsumexp(powered, dim=1)
    return powered - log_u.unsqueeze(1), log_u.exp()


def _ttm_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    log_target, u = ttm_log_target(teacher_logits, gamma)
    log_p_s = F.log_softmax(student_logits.float(), dim=1)
    return (log_target.exp() * (log_target - log_p_s)).sum(dim=1), u


def ttm(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
        gamma: float = 0.1) -> torch.Tensor:
    """Zheng & Yang, "Knowledge Distillation Based on Transformed Teacher Matching" (ICLR 2024):
    TTM.

    ``mean_i KL(p̃_t,i ‖ p_s,i)`` with the power-transformed teacher ``p̃_t ∝ p_t^γ`` (γ = 1/T,
    equal to softmax(z_t/T)) and the student at temperature 1; no T² factor. Official code:
    zkxufo/TTM ``distiller_zoo/ttm.py``. Fidelity: ``docs/fidelity/ttm.md``.
    """
    kl, _ = _ttm_kl(student_logits, teacher_logits, gamma)
    return kl.mean()


def wttm(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
         gamma: float = 0.1) -> torch.Tensor:
    """Zheng & Yang (ICLR 2024): weighted TTM.

    ``mean_i U_i · KL(p̃_t,i ‖ p_s,i)`` with the sample-adaptive weight ``U_i = Σ_c p_t,ic^γ``
    (the power sum that normalises p̃_t; large for smooth teacher outputs). Official code:
    zkxufo/TTM ``distiller_zoo/wttm.py``. Fidelity: ``docs/fidelity/ttm.md``.
    """
    kl, u = _ttm_kl(student_logits, teacher_logits, gamma)
    return (u * kl).mean()


_PAPER = "Zheng & Yang, Knowledge Distillation Based on Transformed Teacher Matching, ICLR 2024"


@register_loss(
    "ttm", family="logit", year=2024, repo="https://github.com/zkxufo/TTM",
    description="transformed teacher matching: power-transformed teacher, plain student",
    paper=_PAPER,
    # README: --distill ttm --ttm_l 0.1 -r 1 -b 45 -a 0 (vgg13 -> vgg8)
    defaults={"w_ce": 1.0, "w_ttm": 45.0, "gamma": 0.1}, taps=("logits",))
class TTM(Checked):
    """Transformed teacher matching: KL(p_t^γ normalised ‖ p_s), no student temperature.

    Official defaults (zkxufo/TTM README, the one CIFAR setting the repository states, vgg13 →
    vgg8): γ = 0.1, TTM weight 45, CE weight 1. The paper's per-pair β and γ (its appendix A.4)
    are not in the repository. Log-space transform: same numbers, no underflow.
    """

    name = "ttm"

    @classmethod
    def check(cls, options):
        option(options, "gamma", cls.name, positive=True)

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        self.gamma = self.options["gamma"]

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {self.name: ttm(student.logits, teacher.logits, self.gamma)}


@register_loss(
    "wttm", family="logit", year=2024, repo="https://github.com/zkxufo/TTM",
    description="weighted TTM: TTM weighted per sample by the teacher's power sum",
    paper=_PAPER,
    # README's only WTTM setting: --add wttm --ttm_l 0.2 -a 4 (with CRD -b 0.8)
    defaults={"w_ce": 1.0, "w_wttm": 4.0, "gamma": 0.2}, combo={"w_wttm": 4.0},
    taps=("logits",))
class WTTM(TTM):
    """Weighted TTM: each sample's TTM term weighted by the teacher's power sum Σ p_t^γ.

    Official defaults: the README's only WTTM setting, γ = 0.2 with weight 4 (there added to
    CRD at 0.8: ``crd+wttm`` reproduces it), CE weight 1.
    """

    name = "wttm"

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {self.name: wttm(student.logits, teacher.logits, self.gamma)}
