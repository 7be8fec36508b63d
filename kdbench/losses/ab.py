"""``ab``: Heo et al., "Knowledge Transfer via Distillation of Activation Boundaries Formed by
Hidden Neurons" (AAAI 2019).

The teacher's activation pattern transferred to the student's pre-activations of every stage, in
a 30-epoch init stage before CE training (RepDistiller's CIFAR-100 benchmark). Option ``stages``
(``"0:0,1:1,2:3"``, indices into the ``preact`` lists) chooses the pairs, the stage weights
applying over the chosen pairs: a kdbench extension that is not in RepDistiller's code, a
deliberate deviation, off by default (None: every pre-activation stage one to one).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ..models.base import Features
from .base import (
    INIT_DEFAULTS,
    REPDISTILLER,
    DistillContext,
    Distiller,
    InitStage,
    need_maps,
    option,
    probe_pair,
    register_loss,
    shape_of,
    stage_pairs,
)
from .connectors import ConvReg

__all__ = ["AB", "ab"]


def ab(student_preacts: list[torch.Tensor], teacher_preacts: list[torch.Tensor],
       margin: float = 1.0) -> torch.Tensor:
    """Heo et al., "Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden
    Neurons" (AAAI 2019).

    The alternative (hinge-squared) loss that transfers the teacher's activation pattern
    ``1[t > 0]`` to the student's pre-activations s (already through the connector):
    ``Σ (s + m)² · 1[s > −m ∧ t ≤ 0] + (s − m)² · 1[s ≤ m ∧ t > 0]`` summed over elements and
    divided by B, per stage; stages are weighted ``2^(i − n + 1)`` (deepest 1, halving towards the
    input) and the total is scaled by 3/1000 (the authors' and RepDistiller's constants).
    """
    n = len(student_preacts)
    total = student_preacts[0].new_zeros((), dtype=torch.float32)
    for i, (s, t) in enumerate(zip(student_preacts, teacher_preacts)):
        s, t = s.float(), t.float()
        loss = ((s + margin).pow(2) * ((s > -margin) & (t <= 0)).float()
                + (s - margin).pow(2) * ((s <= margin) & (t > 0)).float()).sum()
        total = total + 2.0 ** (i - n + 1) * loss / s.shape[0]
    return total * 3.0 / 1000.0


@register_loss(
    "ab", family="feature", year=2019, repo=REPDISTILLER,
    description="activation boundaries of pre-activations, in a 30-epoch init stage",
    paper="Heo et al., Knowledge Transfer via Distillation of Activation Boundaries Formed "
          "by Hidden Neurons, AAAI 2019",
    defaults={"w_ce": 1.0, "w_ab": 1.0, "margin": 1.0, "main_term": False, "stages": None,
              **INIT_DEFAULTS},
    later=("stages",), taps=("logits", "preact"))
class AB(InitStage, Distiller):
    """Activation-boundary transfer on pre-activations, in an init stage before CE training.

    Connectors (identity where shapes agree, else a regressor without ReLU) map the student's
    pre-activations to the teacher's. As in RepDistiller the main stage has no AB term unless
    ``main_term`` is set (then weighted by ``w_ab``, connectors trained too). Option ``stages``
    pairs chosen pre-activation stages, one connector each; the deepest chosen pair weighs 1.
    """

    taps = frozenset({"logits", "preact"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        fs, ft = probe_pair(ctx, "ab")
        need_maps(fs.preact, "student", "pre-activation stages", "ab")
        need_maps(ft.preact, "teacher", "pre-activation stages", "ab")
        self.pairs = stage_pairs(self.options.get("stages"), fs.preact, ft.preact, "ab",
                                 what="pre-activation stages")
        self.connectors = nn.ModuleList(self.connector(fs.preact[i], ft.preact[j], i, j)
                                        for i, j in self.pairs)
        self.margin = option(self.options, "margin", "ab", nonneg=True)
        self.main_term = bool(self.options["main_term"])
        self._setup_init("ab")

    def connector(self, s: torch.Tensor, t: torch.Tensor, i: int, j: int) -> nn.Module:
        if shape_of(s) == shape_of(t):
            return nn.Identity()
        try:
            return ConvReg(shape_of(s), shape_of(t), relu=False)
        except ConfigError as err:
            if self.options.get("stages") is None:
                raise
            raise ConfigError(f"loss 'ab' option stages pairs student pre-activation stage "
                              f"{i} with teacher pre-activation stage {j}, but there is "
                              f"{err}") from None

    def term(self, student: Features, teacher: Features) -> dict[str, torch.Tensor]:
        s = [c(student.preact[i]) for c, (i, _) in zip(self.connectors, self.pairs)]
        return {"ab": ab(s, [teacher.preact[j] for _, j in self.pairs], self.margin)}

    def forward(self, student, teacher, target, index=None, epoch=0):
        return self.term(student, teacher) if self.main_term else {}

    def stages(self):
        def init(student, teacher, target, index=None):
            return self.term(student, teacher)
        return self.init_stage("ab:init", init, self.connectors.parameters())

    def main_parameters(self):
        return super().main_parameters() if self.main_term else []
