"""``rld``: Sun, Chen, Lyu, Chen, Chen & Wang, "Knowledge Distillation with Refined Logits"
(RLD, arXiv 2408.07703, ICCV 2025).

``min(epoch/warmup, 1)·(α·SCD + β·MCD)`` with CE weight 1: sample-confidence distillation (the
student's target class against the teacher's top class, as binary distributions) plus
masked-correlation distillation (the classes the teacher ranks below the target). Official code
zju-SWJ/RLD; official defaults CE 1, α = 1, β = 8, T = 4, warm-up 20 epochs, SCD at T (the
README's ``--same-t``). Fidelity: ``docs/fidelity/rld.md``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .base import Checked, DistillContext, Temperature, linear_warmup, option, register_loss
from .modifiers import standardize, standardize_option

__all__ = ["RLD", "RLD_MASK_FILL", "rld", "rld_mcd", "rld_scd"]

#: RLD's fill value for masked logits (official ``masked_fill(mask, -1e9)``): finite, so a sample
#: whose every class is masked gets two uniform distributions and a zero term, not NaN
RLD_MASK_FILL = -1e9


def rld_scd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
            T: Temperature = 4.0) -> torch.Tensor:
    """RLD's sample-confidence distillation: ``T² · mean_i KL(b_t,i ‖ b_s,i)`` between the binary
    distributions ``b_s = [p_s,y, 1 − p_s,y]`` (the student's *target* class) and
    ``b_t = [p_t,m, 1 − p_t,m]`` (the teacher's *top* class m), at temperature T. Computed in log
    space (the official code sums masked probabilities, then takes their log)."""
    s, t = student_logits.float() / T, teacher_logits.float() / T
    gt = F.one_hot(target, s.shape[1]).bool()
    top = F.one_hot(t.argmax(dim=1), t.shape[1]).bool()

    def binary(log_p: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        log_in = log_p.masked_select(mask).view(-1, 1)
        log_out = torch.logsumexp(log_p.masked_fill(mask, float("-inf")), dim=1, keepdim=True)
        return torch.cat([log_in, log_out], dim=1)

    b_s = binary(F.log_softmax(s, dim=1), gt)
    b_t = binary(F.log_softmax(t, dim=1), top)
    return (b_t.exp() * (b_t - b_s)).sum(dim=1).mean() * (T * T)


def rld_mcd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
            T: Temperature = 4.0) -> torch.Tensor:
    """RLD's masked-correlation distillation: ``T² · mean_i KL(q_t,i ‖ q_s,i)`` where ``q`` is the
    softmax at temperature T over the classes the teacher ranks strictly *below* the target:
    every class whose teacher logit is ≥ the teacher's target logit (the target itself, and any
    class a wrong teacher prefers) is masked out for both networks (official ``_get_ge_mask``)."""
    s, t = student_logits.float() / T, teacher_logits.float() / T
    masked = teacher_logits.float() >= teacher_logits.float().gather(1, target.view(-1, 1))
    log_q_s = F.log_softmax(s.masked_fill(masked, RLD_MASK_FILL), dim=1)
    log_q_t = F.log_softmax(t.masked_fill(masked, RLD_MASK_FILL), dim=1)
    return (log_q_t.exp() * (log_q_t - log_q_s)).sum(dim=1).mean() * (T * T)


def rld(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
        alpha: float = 1.0, beta: float = 8.0, T: Temperature = 4.0,
        scd_T: Temperature | None = None, standardize_logits: bool = False) -> torch.Tensor:
    """Sun, Chen, Lyu, Chen, Chen & Wang, "Knowledge Distillation with Refined Logits" (RLD,
    arXiv 2408.07703, ICCV 2025).

    ``α · SCD(T_scd) + β · MCD(T)`` (:func:`rld_scd`, :func:`rld_mcd`); ``scd_T`` None means
    ``T``. Official code: zju-SWJ/RLD ``mdistiller/distillers/RLD.py``; with
    ``standardize_logits`` both logit sets are Z-scored first, as there. The linear warm-up
    belongs to the distiller. Fidelity: ``docs/fidelity/rld.md``.
    """
    s, t = student_logits.float(), teacher_logits.float()
    if standardize_logits:
        s, t = standardize(s), standardize(t)
    scd = rld_scd(s, t, target, T if scd_T is None else scd_T)
    return alpha * scd + beta * rld_mcd(s, t, target, T)


@register_loss(
    "rld", family="logit", year=2025, repo="https://github.com/zju-SWJ/RLD",
    description="refined logit distillation: sample confidence + masked correlation",
    paper="Sun et al., Knowledge Distillation with Refined Logits, ICCV 2025",
    # cfg.py RLD: CE 1, α 1, β 8, T 4, ALPHA_T 1, warm-up 20; README runs --same-t
    defaults={"w_ce": 1.0, "w_rld": 1.0, "alpha": 1.0, "beta": 8.0, "T": 4.0,
              "same_T": True, "scd_T": 1.0, "warmup": 20, "standardize": False},
    taps=("logits",))
class RLD(Checked):
    """Refined logit distillation: min(epoch/warmup, 1)·(α·SCD + β·MCD), CE weight 1.

    Official defaults (zju-SWJ/RLD ``mdistiller/engine/cfg.py``): CE 1, α = 1, β = 8, T = 4,
    warm-up 20 epochs (mdistiller's 1-based ``epoch / warmup``). SCD's temperature follows the
    README's RLD command (``--same-t``: SCD at T, option ``same_T`` true), where the
    configuration alone says 1.0; ``same_T: false`` gives the configuration's ``scd_T`` = 1.
    SCD is computed in log space (the official code takes the log of summed probabilities): the
    same numbers up to rounding. Fidelity: ``docs/fidelity/rld.md``.
    """

    name = "rld"

    @classmethod
    def check(cls, options):
        for key in ("alpha", "beta"):
            option(options, key, cls.name, nonneg=True)
        for key in ("T", "scd_T"):
            option(options, key, cls.name, positive=True)
        option(options, "warmup", cls.name, nonneg=True, integer=True)
        standardize_option(options, cls.name)
        if not isinstance(options["same_T"], bool):
            raise ConfigError(f"loss 'rld' option same_T must be true or false, got "
                              f"{options['same_T']!r}")

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        o = self.options
        self.alpha, self.beta, self.T = o["alpha"], o["beta"], o["T"]
        self.scd_T = o["T"] if o["same_T"] else o["scd_T"]
        self.warmup, self.standardize = int(o["warmup"]), o["standardize"]

    def forward(self, student, teacher, target, index=None, epoch=0):
        term = rld(student.logits, teacher.logits, target, self.alpha, self.beta, self.T,
                   self.scd_T, self.standardize)
        return {"rld": linear_warmup(epoch, self.warmup) * term}
