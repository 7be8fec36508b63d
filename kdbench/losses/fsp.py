"""``fsp``: Yim et al., "A Gift from Knowledge Distillation: Fast Optimization, Network
Minimization and Transfer Learning" (CVPR 2017).

FSP matrices between the stem and consecutive stages, matched in a 30-epoch init stage, then CE
training (RepDistiller's CIFAR-100 benchmark). Student and teacher need equal channels.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..models.base import Features
from .base import (
    INIT_DEFAULTS,
    REPDISTILLER,
    DistillContext,
    Distiller,
    InitStage,
    paired,
    pool_to_common,
    probe_pair,
    register_loss,
)

__all__ = ["FSP", "fsp", "fsp_matrix"]


def fsp_matrix(bottom: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """The flow of solution procedure between two layers: ``G[c2, c1] = mean_hw top_c2 · bottom_c1``
    (B × C_top × C_bottom); the larger map is first pooled to the smaller one."""
    bottom, top = pool_to_common(bottom.float(), top.float())
    return torch.einsum("bjx,bix->bij", bottom.flatten(2), top.flatten(2)) / bottom[0, 0].numel()


def fsp(student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor]) -> torch.Tensor:
    """Yim et al., "A Gift from Knowledge Distillation: Fast Optimization, Network Minimization
    and Transfer Learning" (CVPR 2017).

    ``Σ_i mean( (G_i^s − G_i^t)² )`` over the FSP matrices of consecutive feature pairs
    ``(f_i, f_{i+1})`` (RepDistiller: the stem and every stage; equal λ_i = 1, the mean over
    batch and matrix entries). Student and teacher must have equal channels at every tapped layer.
    """
    total = student_feats[0].new_zeros((), dtype=torch.float32)
    for i in range(len(student_feats) - 1):
        gs = fsp_matrix(student_feats[i], student_feats[i + 1])
        gt = fsp_matrix(teacher_feats[i], teacher_feats[i + 1])
        total = total + (gs - gt).pow(2).mean()
    return total


@register_loss(
    "fsp", family="relation", year=2017, repo=REPDISTILLER,
    description="flow of solution procedure matrices, in a 30-epoch init stage",
    paper="Yim et al., A Gift from Knowledge Distillation: Fast Optimization, Network "
          "Minimization and Transfer Learning, CVPR 2017",
    defaults={"w_ce": 1.0, "w_fsp": 50.0, "main_term": False, **INIT_DEFAULTS},
    taps=("logits", "stages"))
class FSP(InitStage, Distiller):
    """FSP matrices between the stem and consecutive stages, matched in an init stage; the main
    stage is CE training (RepDistiller) unless ``main_term`` adds ``w_fsp``·FSP."""

    taps = frozenset({"logits", "stages"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        fs, ft = probe_pair(ctx, "fsp")
        s_maps, t_maps = self.maps(fs), self.maps(ft)
        paired(s_maps, t_maps, "fsp", "stem and stages")
        s_ch = [m.shape[1] for m in s_maps]
        t_ch = [m.shape[1] for m in t_maps]
        if s_ch != t_ch:
            raise ConfigError(f"loss 'fsp' needs equal channels in student and teacher at the "
                              f"stem and every stage, but the student has {s_ch} and the teacher "
                              f"{t_ch} (pick a pair from one family, e.g. resnet56 → resnet20)")
        self.main_term = bool(self.options["main_term"])
        self._setup_init("fsp")

    @staticmethod
    def maps(f: Features) -> list[torch.Tensor]:
        return ([f.stem] if f.stem is not None else []) + list(f.stages)

    def term(self, student: Features, teacher: Features) -> dict[str, torch.Tensor]:
        return {"fsp": fsp(self.maps(student), self.maps(teacher))}

    def forward(self, student, teacher, target, index=None, epoch=0):
        return self.term(student, teacher) if self.main_term else {}

    def stages(self):
        def init(student, teacher, target, index=None):
            return self.term(student, teacher)
        # FSP has no parameters of its own: the init stage trains the student's layers
        return self.init_stage("fsp:init", init, [])
