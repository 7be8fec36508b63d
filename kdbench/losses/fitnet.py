"""``fitnet``: Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015).

RepDistiller's CIFAR-100 form: the MSE between the 2nd student stage, through a convolutional
regressor, and the teacher's, weight 100, trained jointly with CE; ``two_stage`` gives the
paper's recipe (the hint alone in an init stage first). ``hint_stage`` picks the same stage in
both models (0 = the stem); option ``stages`` names one pair of different ones instead (``"1:2"``,
0-based stage indices, the student's guided stage and the teacher's hint): a kdbench extension
that is not in RepDistiller's code, a deliberate deviation, off by default (None: hint_stage).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..models.base import Features
from .base import (
    INIT_DEFAULTS,
    REPDISTILLER,
    DistillContext,
    Distiller,
    InitStage,
    option,
    probe_pair,
    register_loss,
    shape_of,
    stage_pairs,
)
from .connectors import ConvReg

__all__ = ["HINT_STAGE", "FitNet", "hint"]

#: RepDistiller's hint stage (the 2nd stage, ``feat[2]``; 0 is the stem)
HINT_STAGE = 2


def hint(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015).

    ``mean((r(f_s) − f_t)²)`` over every element, where ``student_feat`` is already the output of
    the regressor r (RepDistiller's ``ConvReg``: conv + BN + ReLU on the hint stage).
    """
    return F.mse_loss(student_feat.float(), teacher_feat.float())


@register_loss(
    "fitnet", family="feature", year=2015, repo=REPDISTILLER,
    description="FitNet hint: MSE of a conv-regressed student stage to the teacher's",
    paper="Romero et al., FitNets: Hints for Thin Deep Nets, ICLR 2015",
    defaults={"w_ce": 1.0, "w_hint": 100.0, "hint_stage": HINT_STAGE, "two_stage": False,
              "stages": None, **INIT_DEFAULTS},
    later=("stages",), taps=("logits", "stages"))
class FitNet(InitStage, Distiller):
    """FitNet hints: MSE between a regressed student stage and the teacher's (RepDistiller: the
    2nd stage, trained jointly with CE). With ``two_stage`` the paper's recipe: an init stage
    trains the student up to the hint layer and the regressor on the hint alone, then the main
    stage has no hint term (combine with ``+kd`` for the paper's KD second stage).

    ``hint_stage`` is one index for both models; option ``stages`` (``"s:t"``, exactly one pair)
    guides student stage s by teacher stage t, for models whose stages do not line up, and then
    ``hint_stage`` must stay at its default (it is not used)."""

    taps = frozenset({"logits", "stages"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        fs, ft = probe_pair(ctx, "fitnet")
        self.stage = option(self.options, "hint_stage", "fitnet", nonneg=True, integer=True)
        chosen = self.options.get("stages")
        self.pair: tuple[int, int] | None = None
        if chosen is not None:
            if self.stage != HINT_STAGE:
                raise ConfigError(f"loss 'fitnet' takes option hint_stage={self.stage} (the same "
                                  f"stage in both models) or stages={chosen!r} (one pair), not "
                                  f"both")
            [self.pair] = stage_pairs(
                chosen, fs.stages, ft.stages, "fitnet", exactly_one=True,
                why="the hint pair \"s:t\" (option hint_stage picks the same stage in both "
                    "models, 0 = the stem)")
        valid = min(len(fs.stages), len(ft.stages))
        if self.pair is None and self.stage > valid:
            raise ConfigError(f"loss 'fitnet' option hint_stage={self.stage} is out of range "
                              f"(valid: 0 = stem, 1..{valid})")
        try:
            self.regressor = ConvReg(shape_of(self.pick(fs, 0)), shape_of(self.pick(ft, 1)))
        except ConfigError as err:
            if self.pair is None:
                raise
            raise ConfigError(f"loss 'fitnet' option stages pairs student stage {self.pair[0]} "
                              f"with teacher stage {self.pair[1]}, but there is {err}") from None
        self.two_stage = bool(self.options["two_stage"])
        self._setup_init("fitnet", enabled=self.two_stage)

    def pick(self, f: Features, side: int) -> torch.Tensor:
        """The hint map of the student (``side`` 0) or the teacher (1)."""
        if self.pair is not None:
            return f.stages[self.pair[side]]
        return f.stem if self.stage == 0 else f.stages[self.stage - 1]

    def hint(self, student: Features, teacher: Features) -> dict[str, torch.Tensor]:
        return {"hint": hint(self.regressor(self.pick(student, 0)), self.pick(teacher, 1))}

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {} if self.two_stage else self.hint(student, teacher)

    def stages(self):
        def hint(student, teacher, target, index=None):
            return self.hint(student, teacher)
        return self.init_stage("fitnet:hint", hint, self.regressor.parameters())

    def main_parameters(self):
        return [] if self.two_stage else super().main_parameters()
