"""Logit losses: the CE baseline, Hinton KD, DKD and deep mutual learning's mimicry term.

KD and DKD take two modifiers from later papers (:mod:`.modern_logit`): ``standardize`` (logit
standardisation, Sun et al. CVPR 2024) and ``ctkd`` (CTKD's learnable curriculum temperature,
Li et al. AAAI 2023). Both are off by default, and off they leave the computation unchanged.
"""

from __future__ import annotations

import re
from typing import Any

from . import functional as KF
from . import functional_modern as KM
from .base import DistillContext, Distiller, option
from .modern_logit import curriculum_from_options, standardize_option


class CE(Distiller):
    """Cross-entropy only: the vanilla student baseline (no teacher)."""

    needs_teacher = False

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {}


class KD(Distiller):
    """Hinton KD on logits: w_ce·CE + w_kd·T²·KL(p_t^T ‖ p_s^T).

    ``standardize``: both logit sets Z-scored first (LS's official ``kd_loss``, where T is the
    "base temperature"); ``ctkd``: T is CTKD's learnable curriculum temperature (the ``T`` option
    is then unused), its θ a parameter of this module.
    """

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        self.T = option(self.options, "T", "kd", positive=True)
        self.standardize = standardize_option(self.options, "kd")
        self.temperature = curriculum_from_options(self.options, "kd")

    def forward(self, student, teacher, target, index=None, epoch=0):
        s, t = student.logits, teacher.logits
        if self.standardize:
            s, t = KM.standardize(s), KM.standardize(t)
        T = self.T if self.temperature is None else self.temperature(epoch)
        return {"kd": KF.kd(s, t, T)}


class DML(Distiller):
    """Deep mutual learning's mimicry term KL(p_peer ‖ p_student) at temperature 1."""

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {"dml": KF.dml(student.logits, teacher.logits)}


#: mdistiller's per-pair β (configs/cifar100/dkd/*.yaml; pairs not listed use the default 8),
#: keyed by (teacher, student) with names lower-cased and stripped of punctuation.
DKD_BETA = {
    ("resnet56", "resnet20"): 2.0, ("resnet110", "resnet32"): 2.0,
    ("resnet32x4", "resnet8x4"): 8.0, ("resnet32x4", "shufflev1"): 8.0,
    ("resnet32x4", "shufflev2"): 8.0, ("resnet50", "mobilenetv2"): 8.0,
    ("wrn402", "shufflev1"): 8.0, ("vgg13", "mobilenetv2"): 6.0, ("vgg13", "vgg8"): 6.0,
    ("wrn402", "wrn162"): 6.0, ("wrn402", "wrn401"): 6.0,
}


def arch_key(name: str | None) -> str:
    """An architecture name compared across projects: lower case, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", (name or "").lower())


def dkd_beta(teacher: str | None, student: str | None, default: float = 8.0) -> float:
    """mdistiller's β for a (teacher, student) pair, else ``default``."""
    return DKD_BETA.get((arch_key(teacher), arch_key(student)), default)


def check_kd(options: dict[str, Any], loss: str = "kd") -> None:
    """KD's options, checked when a run is resolved (before anything is trained or written):
    T > 0, ``standardize`` a bool, and with ``ctkd`` the curriculum's settings."""
    option(options, "T", loss, positive=True)
    standardize_option(options, loss)
    curriculum_from_options(options, loss)


def finalize_kd(weights: dict[str, float], options: dict[str, Any], *,
                student: str | None = None, teacher: str | None = None) -> None:
    """KD's options checked at resolve time (:func:`check_kd`)."""
    check_kd(options)


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


class DKD(Distiller):
    """Decoupled KD: min(epoch/warmup, 1)·(α·TCKD + β·NCKD)·T², CE weight 1 (mdistiller).

    ``standardize`` and ``ctkd`` as for :class:`KD` (LS's official ``dkd_loss`` standardises
    before everything; CTKD's official DKD uses the learnable T in both parts).
    """

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        o = self.options
        self.alpha = option(o, "alpha", "dkd", nonneg=True)
        self.beta = option(o, "beta", "dkd", nonneg=True)
        self.T = option(o, "T", "dkd", positive=True)
        self.warmup = option(o, "warmup", "dkd", nonneg=True, integer=True)
        self.standardize = standardize_option(o, "dkd")
        self.temperature = curriculum_from_options(o, "dkd")

    def warmup_factor(self, epoch: int) -> float:
        """mdistiller counts epochs from 1: the first epoch gets 1/warmup of the term."""
        return min((epoch + 1) / self.warmup, 1.0) if self.warmup > 0 else 1.0

    def forward(self, student, teacher, target, index=None, epoch=0):
        s, t = student.logits, teacher.logits
        if self.standardize:
            s, t = KM.standardize(s), KM.standardize(t)
        T = self.T if self.temperature is None else self.temperature(epoch)
        term = KF.dkd(s, t, target, self.alpha, self.beta, T)
        return {"dkd": self.warmup_factor(epoch) * term}
