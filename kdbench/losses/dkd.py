"""``dkd``: Zhao et al., "Decoupled Knowledge Distillation" (CVPR 2022), as in mdistiller.

``min(epoch/warmup, 1)·(α·TCKD + β·NCKD)·T²`` with CE weight 1, mdistiller's CIFAR-100
defaults (α 1, β 8, T 4, 20-epoch linear warm-up; megvii-research/mdistiller) and, with
``beta_table``, its per-pair β (:data:`DKD_BETA`). DKD takes the two modifiers of
:mod:`.modifiers` (``dkd+ls``, ``dkd+ctkd``), off by default.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .base import DistillContext, Distiller, arch_key, linear_warmup, option, register_loss
from .kd import check_kd
from .modifiers import MODIFIER_DEFAULTS, MODIFIER_OPTIONS, Modified

__all__ = ["DKD", "DKD_BETA", "dkd", "dkd_beta", "finalize_dkd"]


def dkd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
        alpha: float = 1.0, beta: float = 8.0, T: float = 4.0) -> torch.Tensor:
    """Zhao et al., "Decoupled Knowledge Distillation" (CVPR 2022), as in mdistiller.

    ``α·TCKD + β·NCKD``, both ×T² and averaged over the batch:

    * TCKD = KL(b_t ‖ b_s) over the binary split ``b = [p_gt, 1 − p_gt]`` of ``p = softmax(z/T)``;
    * NCKD = KL(p̂_t ‖ p̂_s) over the *non-target* classes only, ``p̂ = softmax`` of the logits
      with the target class removed (mdistiller subtracts 1000 from the target logit, which is
      the same distribution up to exp(−1000); here the target class is masked out exactly).

    The warm-up (the term is scaled by ``min(epoch / warmup, 1)``) belongs to the distiller.
    """
    s = student_logits.float() / T
    t = teacher_logits.float() / T
    gt = F.one_hot(target, s.shape[1]).bool()
    log_p_s, log_p_t = F.log_softmax(s, dim=1), F.log_softmax(t, dim=1)

    def binary(log_p: torch.Tensor) -> torch.Tensor:  # log [p_gt, 1 − p_gt], computed stably
        log_gt = log_p.masked_select(gt).view(-1, 1)
        log_other = torch.logsumexp(log_p.masked_fill(gt, float("-inf")), dim=1, keepdim=True)
        return torch.cat([log_gt, log_other], dim=1)

    b_s, b_t = binary(log_p_s), binary(log_p_t)
    tckd = (b_t.exp() * (b_t - b_s)).sum(1).mean()
    q_s = F.log_softmax(s.masked_fill(gt, float("-inf")), dim=1)
    q_t = F.log_softmax(t.masked_fill(gt, float("-inf")), dim=1)
    # the target column is -inf in both: its probability is exactly 0 and contributes nothing
    nckd = (q_t.exp() * (q_t - q_s).masked_fill(gt, 0.0)).sum(1).mean()
    return (alpha * tckd + beta * nckd) * (T * T)


#: mdistiller's per-pair β (configs/cifar100/dkd/*.yaml; pairs not listed use the default 8),
#: keyed by (teacher, student) with names lower-cased and stripped of punctuation.
DKD_BETA = {
    ("resnet56", "resnet20"): 2.0, ("resnet110", "resnet32"): 2.0,
    ("resnet32x4", "resnet8x4"): 8.0, ("resnet32x4", "shufflev1"): 8.0,
    ("resnet32x4", "shufflev2"): 8.0, ("resnet50", "mobilenetv2"): 8.0,
    ("wrn402", "shufflev1"): 8.0, ("vgg13", "mobilenetv2"): 6.0, ("vgg13", "vgg8"): 6.0,
    ("wrn402", "wrn162"): 6.0, ("wrn402", "wrn401"): 6.0,
}


def dkd_beta(teacher: str | None, student: str | None, default: float = 8.0) -> float:
    """mdistiller's β for a (teacher, student) pair, else ``default``."""
    return DKD_BETA.get((arch_key(teacher), arch_key(student)), default)


def finalize_dkd(weights: dict[str, float], options: dict[str, Any], *,
                 student: str | None = None, teacher: str | None = None) -> None:
    """With ``beta_table``, β becomes mdistiller's value for the pair (recorded as such); then
    the options are checked (α, β >= 0, warm-up a whole number >= 0, and as :func:`check_kd`)."""
    if options.get("beta_table"):
        options["beta"] = dkd_beta(teacher, student, options["beta"])
    for key in ("alpha", "beta"):
        option(options, key, "dkd", nonneg=True)
    option(options, "warmup", "dkd", nonneg=True, integer=True)
    check_kd(options, "dkd")


@register_loss(
    "dkd", family="logit", year=2022, repo="https://github.com/megvii-research/mdistiller",
    description="decoupled KD: α·target-class + β·non-target-class KL, linear warm-up",
    paper="Zhao et al., Decoupled Knowledge Distillation, CVPR 2022",
    defaults={"w_ce": 1.0, "w_dkd": 1.0, "alpha": 1.0, "beta": 8.0, "T": 4.0, "warmup": 20,
              "beta_table": False, **MODIFIER_DEFAULTS},
    later=MODIFIER_OPTIONS, finalize=finalize_dkd, taps=("logits",))
class DKD(Modified, Distiller):
    """Decoupled KD: min(epoch/warmup, 1)·(α·TCKD + β·NCKD)·T², CE weight 1 (mdistiller).

    ``standardize`` and ``ctkd`` as for :class:`~kdbench.losses.kd.KD` (LS's official
    ``dkd_loss`` standardises before everything; CTKD's official DKD uses the learnable T in
    both parts).
    """

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        o = self.options
        self.alpha = option(o, "alpha", "dkd", nonneg=True)
        self.beta = option(o, "beta", "dkd", nonneg=True)
        self.T = option(o, "T", "dkd", positive=True)
        self.warmup = option(o, "warmup", "dkd", nonneg=True, integer=True)
        self._setup_modifiers("dkd")

    def warmup_factor(self, epoch: int) -> float:
        """mdistiller counts epochs from 1: the first epoch gets 1/warmup of the term."""
        return linear_warmup(epoch, self.warmup)

    def forward(self, student, teacher, target, index=None, epoch=0):
        s, t, T = self.modified(student, teacher, epoch)
        term = dkd(s, t, target, self.alpha, self.beta, T)
        return {"dkd": self.warmup_factor(epoch) * term}
