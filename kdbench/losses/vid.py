"""``vid``: Ahn et al., "Variational Information Distillation for Knowledge Transfer" (CVPR 2019).

A Gaussian regressor per stage (1×1 convs predicting the teacher's map, a learned per-channel
variance), every stage paired shallow to deep (RepDistiller's CIFAR-100 benchmark: weight 1).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import (
    REPDISTILLER,
    DistillContext,
    Distiller,
    option,
    paired,
    pool_to_common,
    probe_pair,
    register_loss,
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
    defaults={"w_ce": 1.0, "w_vid": 1.0, "init_var": 5.0, "eps": 1e-5},
    taps=("logits", "stages"))
class VID(Distiller):
    """Variational information distillation: a 1×1-conv Gaussian regressor per stage."""

    taps = frozenset({"logits", "stages"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        fs, ft = probe_pair(ctx, "vid")
        paired(fs.stages, ft.stages, "vid")
        init_var = option(self.options, "init_var", "vid", positive=True)
        eps = option(self.options, "eps", "vid", positive=True)
        self.regressors = nn.ModuleList(
            VIDRegressor(s.shape[1], t.shape[1], init_var, eps) for s, t in zip(fs.stages,
                                                                                ft.stages))

    def forward(self, student, teacher, target, index=None, epoch=0):
        total = 0.0
        for reg, s, t in zip(self.regressors, student.stages, teacher.stages):
            s, t = pool_to_common(s, t)
            total = total + vid(reg(s), t, reg.variance())
        return {"vid": total}
