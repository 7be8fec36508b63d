"""``kd``: Hinton et al., "Distilling the Knowledge in a Neural Network" (NIPS-W 2015).

``w_ce·CE + w_kd·T²·KL(softmax(t/T) ‖ softmax(s/T))``, RepDistiller's CIFAR-100 defaults (T 4,
CE 0.1, KD 0.9: ``scripts/run_cifar_distill.sh``, ``train_student.py``). KD takes the two
modifiers of :mod:`.modifiers` (``kd+ls``, ``kd+ctkd``): options ``standardize`` and ``ctkd``,
off by default, and off they leave the computation unchanged. Added to another loss (``crd+kd``)
its weight is 1, as RepDistiller's "+KD" rows (``-r 1 -a 1 -b <β>``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .base import REPDISTILLER, DistillContext, Distiller, option, register_loss
from .modifiers import MODIFIER_DEFAULTS, MODIFIER_OPTIONS, Modified, check_modifier_options

__all__ = ["KD", "check_kd", "finalize_kd", "kd"]

def kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 4.0) -> torch.Tensor:
    """Hinton et al., "Distilling the Knowledge in a Neural Network" (NIPS-W 2015).

    ``T² · KL(softmax(t/T) ‖ softmax(s/T))``, the KL divergence summed over classes and averaged
    over the batch ("batchmean"); the T² factor keeps gradient magnitudes comparable across
    temperatures, as in the paper and RepDistiller's ``DistillKL``. Computed in float32 whatever
    the autocast dtype of the inputs.
    """
    log_p_s = F.log_softmax(student_logits.float() / T, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / T, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()
    return kl * (T * T)


def check_kd(options: dict[str, Any], loss: str = "kd") -> None:
    """KD's options, checked when a run is resolved (before anything is trained or written):
    T > 0, ``standardize`` a bool, and with ``ctkd`` the curriculum's settings."""
    option(options, "T", loss, positive=True)
    check_modifier_options(options, loss)


def finalize_kd(weights: dict[str, float], options: dict[str, Any], *,
                student: str | None = None, teacher: str | None = None) -> None:
    """KD's options checked at resolve time (:func:`check_kd`)."""
    check_kd(options)


@register_loss(
    "kd", family="logit", year=2015, repo=REPDISTILLER,
    description="Hinton KD: softened-logit KL with T² scaling",
    paper="Hinton et al., Distilling the Knowledge in a Neural Network, NIPS-W 2015",
    defaults={"w_ce": 0.1, "w_kd": 0.9, "T": 4.0, **MODIFIER_DEFAULTS},
    combo={"w_kd": 1.0}, later=MODIFIER_OPTIONS, finalize=finalize_kd, taps=("logits",))
class KD(Modified, Distiller):
    """Hinton KD on logits: w_ce·CE + w_kd·T²·KL(p_t^T ‖ p_s^T).

    ``standardize``: both logit sets Z-scored first (LS's official ``kd_loss``, where T is the
    "base temperature"); ``ctkd``: T is CTKD's learnable curriculum temperature (the ``T`` option
    is then unused), its θ a parameter of this module.
    """

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        self.T = option(self.options, "T", "kd", positive=True)
        self._setup_modifiers("kd")

    def forward(self, student, teacher, target, index=None, epoch=0):
        s, t, T = self.modified(student, teacher, epoch)
        return {"kd": kd(s, t, T)}
