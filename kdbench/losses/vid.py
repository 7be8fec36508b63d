"""``vid``: Ahn et al., "Variational Information Distillation for Knowledge Transfer" (CVPR 2019).

A Gaussian regressor per stage (1×1 convs predicting the teacher's map, a learned per-channel
variance), every stage paired shallow to deep (RepDistiller's CIFAR-100 benchmark: weight 1).
Option ``stages`` (``"0:2,1:3,2:4"``) chooses the pairs, one regressor each: a kdbench extension
that is not in RepDistiller's code, a deliberate deviation, off by default (None: one to one).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import (
    REPDISTILLER,
    DistillContext,
    Distiller,
    option,
    pool_to_common,
    probe_pair,
    register_loss,
    stage_pairs,
)
from .connectors import VIDRegressor

__all__ = ["VID", "vid"]


def vid(pred_mean: torch.Tensor, target: torch.Tensor, pred_var: torch.Tensor) -> torch.Tensor:
    """Ahn et al., "Variational Information Distillation for Knowledge Transfer" (CVPR 2019).

    Negative log-likelihood of the teacher's features under a Gaussian with the student-predicted
    mean μ (a 1×1-conv regressor) and a learned per-channel variance σ² (heteroscedastic in
    channels, homoscedastic in space), up to the constant ``log √(2π)``:
    ``mean( ½ (t − μ)² / σ² + ½ log σ² )`` over every element. ``pred_var`` has one entry per
    channel.
    """
    var = pred_var.float().view(1, -1, 1, 1)
    return (0.5 * ((pred_mean.float() - target.float()).pow(2) / var + var.log())).mean()


@register_loss(
    "vid", family="feature", year=2019, repo=REPDISTILLER,
    description="variational information distillation: Gaussian regressor per stage",
    paper="Ahn et al., Variational Information Distillation for Knowledge Transfer, CVPR 2019",
    defaults={"w_ce": 1.0, "w_vid": 1.0, "init_var": 5.0, "eps": 1e-5, "stages": None},
    later=("stages",), taps=("logits", "stages"))
class VID(Distiller):
    """Variational information distillation: a 1×1-conv Gaussian regressor per stage pair (the
    stages one to one, or the pairs of option ``stages``)."""

    taps = frozenset({"logits", "stages"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        fs, ft = probe_pair(ctx, "vid")
        self.pairs = stage_pairs(self.options.get("stages"), fs.stages, ft.stages, "vid")
        init_var = option(self.options, "init_var", "vid", positive=True)
        eps = option(self.options, "eps", "vid", positive=True)
        self.regressors = nn.ModuleList(
            VIDRegressor(fs.stages[i].shape[1], ft.stages[j].shape[1], init_var, eps)
            for i, j in self.pairs)

    def forward(self, student, teacher, target, index=None, epoch=0):
        total = 0.0
        for reg, (i, j) in zip(self.regressors, self.pairs):
            s, t = pool_to_common(student.stages[i], teacher.stages[j])
            total = total + vid(reg(s), t, reg.variance())
        return {"vid": total}
