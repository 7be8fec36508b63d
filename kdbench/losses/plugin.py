"""Built-in loss plugin: the vanilla CE baseline and Hinton KD."""

from __future__ import annotations

from ..hookspecs import hookimpl
from . import functional as KF
from .base import DistillContext, Distiller


class CE(Distiller):
    """Cross-entropy only: the vanilla student baseline (no teacher)."""

    needs_teacher = False

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {}


class KD(Distiller):
    """Hinton KD on logits: w_ce·CE + w_kd·T²·KL(p_t^T ‖ p_s^T)."""

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {"kd": KF.kd(student.logits, teacher.logits, self.options["T"])}


@hookimpl
def register_losses(register):
    register("ce", CE, description="cross-entropy only: the vanilla student (no teacher)",
             paper="-", defaults={"w_ce": 1.0}, taps=("logits",))
    register("kd", KD, description="Hinton KD: softened-logit KL with T² scaling",
             paper="Hinton et al., Distilling the Knowledge in a Neural Network, 2015",
             defaults={"w_ce": 0.1, "w_kd": 0.9, "T": 4.0}, taps=("logits",))
