"""``fsp``: Yim et al., "A Gift from Knowledge Distillation: Fast Optimization, Network
Minimization and Transfer Learning" (CVPR 2017).

FSP matrices between the stem and consecutive stages, matched in a 30-epoch init stage, then CE
training (RepDistiller's CIFAR-100 benchmark). Student and teacher need equal channels.
Option ``stages`` (``"1:0,2:1"``, at least two pairs) makes the sequence of maps the chosen
student and teacher stages, without the stem: a kdbench extension that is not in RepDistiller's
code, a deliberate deviation, off by default (None: the stem and every stage one to one).
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
    shape_of,
    stage_pairs,
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


def check_sizes(maps: list[torch.Tensor], names: list[str], role: str) -> None:
    """Each FSP matrix pools the larger of its two maps to the smaller's height, squared (as
    RepDistiller does); maps that still differ in size (non-square ones) are a one-line error."""
    for k in range(len(maps) - 1):
        a, b = pool_to_common(maps[k], maps[k + 1])
        if a[0, 0].numel() != b[0, 0].numel():
            raise ConfigError(f"loss 'fsp' cannot make an FSP matrix of the {role}'s {names[k]} "
                              f"and {names[k + 1]}: maps {shape_of(maps[k])} and "
                              f"{shape_of(maps[k + 1])} pool to {tuple(a.shape[2:])} and "
                              f"{tuple(b.shape[2:])}, not one size")


@register_loss(
    "fsp", family="relation", year=2017, repo=REPDISTILLER,
    description="flow of solution procedure matrices, in a 30-epoch init stage",
    paper="Yim et al., A Gift from Knowledge Distillation: Fast Optimization, Network "
          "Minimization and Transfer Learning, CVPR 2017",
    defaults={"w_ce": 1.0, "w_fsp": 50.0, "main_term": False, "stages": None,
              **INIT_DEFAULTS},
    later=("stages",), taps=("logits", "stages"))
class FSP(InitStage, Distiller):
    """FSP matrices between the stem and consecutive stages, matched in an init stage; the main
    stage is CE training (RepDistiller) unless ``main_term`` adds ``w_fsp``·FSP.

    With option ``stages`` the maps are the chosen stages, in the order named, and the stem is
    not one of them (it has no stage index; unset, the stem comes first as in RepDistiller).
    Each FSP matrix needs its two maps pooled to one size within a model (RepDistiller pools the
    larger to a square of the smaller height) and the student's matrix the teacher's shape."""

    taps = frozenset({"logits", "stages"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        fs, ft = probe_pair(ctx, "fsp")
        chosen = self.options.get("stages")
        if chosen is None:
            self.pairs = None
            s_maps, t_maps = self.maps(fs, 0), self.maps(ft, 1)
            paired(s_maps, t_maps, "fsp", "stem and stages")
            s_ch = [m.shape[1] for m in s_maps]
            t_ch = [m.shape[1] for m in t_maps]
            if s_ch != t_ch:
                raise ConfigError(f"loss 'fsp' needs equal channels in student and teacher at "
                                  f"the stem and every stage, but the student has {s_ch} and the "
                                  f"teacher {t_ch} (pick a pair from one family, e.g. resnet56 → "
                                  f"resnet20)")
            for role, f, maps in (("student", fs, s_maps), ("teacher", ft, t_maps)):
                stem = ["stem"] if f.stem is not None else []
                check_sizes(maps, stem + [f"stage {i}" for i in range(len(f.stages))], role)
        else:
            self.pairs = stage_pairs(chosen, fs.stages, ft.stages, "fsp", min_pairs=2,
                                     why="an FSP matrix is made of two consecutive maps")
            for i, j in self.pairs:
                s, t = fs.stages[i], ft.stages[j]
                if s.shape[1] != t.shape[1]:
                    raise ConfigError(f"loss 'fsp' option stages pairs student stage {i} "
                                      f"{shape_of(s)} with teacher stage {j} {shape_of(t)}, but "
                                      f"FSP matrices need equal channels in each pair")
            check_sizes(self.maps(fs, 0), [f"stage {i}" for i, _ in self.pairs], "student")
            check_sizes(self.maps(ft, 1), [f"stage {j}" for _, j in self.pairs], "teacher")
        self.main_term = bool(self.options["main_term"])
        self._setup_init("fsp")

    def maps(self, f: Features, side: int) -> list[torch.Tensor]:
        """The maps whose consecutive members make FSP matrices: the stem and every stage, or
        the chosen stages of the student (``side`` 0) or of the teacher (1)."""
        if self.pairs is None:
            return ([f.stem] if f.stem is not None else []) + list(f.stages)
        return [f.stages[pair[side]] for pair in self.pairs]

    def term(self, student: Features, teacher: Features) -> dict[str, torch.Tensor]:
        return {"fsp": fsp(self.maps(student, 0), self.maps(teacher, 1))}

    def forward(self, student, teacher, target, index=None, epoch=0):
        return self.term(student, teacher) if self.main_term else {}

    def stages(self):
        def init(student, teacher, target, index=None):
            return self.term(student, teacher)
        # FSP has no parameters of its own: the init stage trains the student's layers
        return self.init_stage("fsp:init", init, [])
