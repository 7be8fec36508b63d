"""``ft``: Kim et al., "Paraphrasing Complex Network: Network Compression via Factor Transfer"
(NeurIPS 2018).

A paraphraser (teacher side) pre-trained in a 30-epoch init stage, then a translator (student
side) matched to its factor (RepDistiller's CIFAR-100 benchmark: weight 200), on the last stage.
RepDistiller pre-trains the paraphraser at lr 0.01 for its CIFAR ResNet/WRN students
(:data:`FT_LOW_LR`). Option ``stages`` names the one pair instead (``"2:4"``: the translator on
student stage 2, the paraphraser on teacher stage 4): a kdbench extension that is not in
RepDistiller's code, a deliberate deviation, off by default (None: the last stage of each).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .base import (
    INIT_DEFAULTS,
    REPDISTILLER,
    DistillContext,
    Distiller,
    InitStage,
    arch_key,
    option,
    pool_to_common,
    probe_pair,
    register_loss,
    stage_pairs,
)
from .connectors import Paraphraser, Translator

__all__ = ["FT", "FT_LOW_LR", "factor", "finalize_ft", "ft"]


def factor(f: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """FT's normalised factor as RepDistiller computes it: ``normalize(mean_c f^p)`` per sample."""
    return F.normalize(f.float().pow(p).mean(1).flatten(1), dim=1)


def ft(student_factor: torch.Tensor, teacher_factor: torch.Tensor, p1: float = 2.0,
       p2: float = 1.0) -> torch.Tensor:
    """Kim et al., "Paraphrasing Complex Network: Network Compression via Factor Transfer"
    (NeurIPS 2018).

    ``mean |F̂_s − F̂_t|^{p2}`` (p2 = 1: the paper's L1) between the L2-normalised factors of the
    student's translator and the teacher's paraphraser. As in RepDistiller the factor is
    collapsed over channels first (``factor``: ``normalize(mean_c F^{p1})``); the paper
    normalises the whole vectorised factor. Different resolutions are pooled to the smaller one.
    """
    s, t = pool_to_common(student_factor, teacher_factor)
    d = factor(s, p1) - factor(t, p1)
    return d.abs().mean() if p2 == 1 else d.abs().pow(p2).mean()


#: the students for which RepDistiller pre-trains FT's paraphraser at lr 0.01 (helper/pretrain.py)
FT_LOW_LR = {"resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
             "resnet8x4", "resnet32x4", "wrn161", "wrn162", "wrn401", "wrn402"}


def finalize_ft(weights: dict[str, float], options: dict[str, Any], *, student: str | None = None,
                teacher: str | None = None) -> None:
    """RepDistiller pre-trains FT's paraphraser at lr 0.01 for its CIFAR ResNet/WRN students,
    else at the base lr; an explicit ``init_lr`` wins."""
    if options.get("init_lr") is None and arch_key(student) in FT_LOW_LR:
        options["init_lr"] = 0.01


@register_loss(
    "ft", family="feature", year=2018, repo=REPDISTILLER,
    description="factor transfer: paraphraser (30-epoch init stage) and translator",
    paper="Kim et al., Paraphrasing Complex Network: Network Compression via Factor "
          "Transfer, NeurIPS 2018",
    defaults={"w_ce": 1.0, "w_ft": 200.0, "k": 0.5, "p1": 2.0, "p2": 1.0, "stages": None,
              **INIT_DEFAULTS},
    later=("stages",), finalize=finalize_ft, taps=("logits", "stages"))
class FT(InitStage, Distiller):
    """Factor transfer on the last stage: a paraphraser (teacher side) pre-trained in the init
    stage to reconstruct the teacher's map, then frozen (it has no BatchNorm or dropout, so its
    train/eval mode does not matter); the student's translator is trained to match its factor
    (L1 of normalised factors). Option ``stages`` chooses the one (student, teacher) pair."""

    taps = frozenset({"logits", "stages"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        s_feats, t_feats = probe_pair(ctx, "ft")
        last = [(len(s_feats.stages) - 1, len(t_feats.stages) - 1)]
        [(self.s_stage, self.t_stage)] = stage_pairs(
            self.options.get("stages"), s_feats.stages, t_feats.stages, "ft", default=last,
            exactly_one=True, why="FT transfers one factor")
        k = option(self.options, "k", "ft", positive=True)
        t_ch = t_feats.stages[self.t_stage].shape[1]
        s_ch = s_feats.stages[self.s_stage].shape[1]
        self.paraphraser = Paraphraser(t_ch, k)
        self.translator = Translator(s_ch, t_ch, k)
        self.p1 = option(self.options, "p1", "ft", positive=True)
        self.p2 = option(self.options, "p2", "ft", positive=True)
        self._setup_init("ft")

    def forward(self, student, teacher, target, index=None, epoch=0):
        with torch.no_grad():
            factor_t = self.paraphraser.encoder(teacher.stages[self.t_stage])
        factor_s = self.translator(student.stages[self.s_stage])
        return {"ft": ft(factor_s, factor_t, self.p1, self.p2)}

    def stages(self):
        def paraphrase(student, teacher, target, index=None):
            t = teacher.stages[self.t_stage]
            _, rec = self.paraphraser(t)
            return {"paraphrase": F.mse_loss(rec, t.float())}
        return self.init_stage("ft:paraphraser", paraphrase, self.paraphraser.parameters(),
                               trains_student=False)

    def main_parameters(self):
        return list(self.translator.parameters())
