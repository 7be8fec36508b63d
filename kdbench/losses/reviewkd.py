"""``reviewkd``: Chen et al., "Distilling Knowledge via Knowledge Review" (CVPR 2021).

The student's stages and pooled embedding, fused deep to shallow by attention-based fusion
(ABF) modules (:class:`~.connectors.ReviewFusion`), matched to the teacher's pre-activation
stages and pooled embedding by the hierarchical context loss. Official code
dvlab-research/ReviewKD; official CIFAR-100 defaults: weight 1, warm-up 20 epochs, CE 1, and
per-pair weights (:data:`REVIEWKD_WEIGHT`, with option ``weight_table``). Option ``stages``
(``"0:0,1:1,2:3"``: student stages, teacher pre-activation stages) chooses the levels paired one
to one below the embeddings: a kdbench extension that is not in the official code, a deliberate
deviation, off by default (None: every stage). Fidelity: ``docs/fidelity/reviewkd.md``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..models.base import Features
from .base import (
    DistillContext,
    Distiller,
    arch_key,
    need_maps,
    option,
    paired,
    probe,
    probe_pair,
    register_loss,
    stage_pairs,
)
from .connectors import ReviewFusion

__all__ = ["REVIEWKD_WEIGHT", "ReviewKD", "finalize_reviewkd", "hcl", "review_channels"]


def hcl(student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor],
        levels: tuple[int, ...] = (4, 2, 1)) -> torch.Tensor:
    """Chen et al., "Distilling Knowledge via Knowledge Review" (CVPR 2021): the hierarchical
    context loss, summed over feature pairs.

    Per pair of equally sized maps (the student's already fused by the review path):
    ``(mse(f_s, f_t) + Σ_k 2^-k · mse(pool_{l_k}(f_s), pool_{l_k}(f_t))) / (1 + Σ_k 2^-k)``,
    ``mse`` the mean over every element, ``pool_l`` adaptive average pooling to l × l, and
    ``l_k`` the levels of ``levels`` (4, 2, 1) that are smaller than the map's height, the first
    one used weighted 1/2, the next 1/4, ... (official ``CIFAR-100/model/reviewkd.py``;
    mdistiller's ``hcl_loss`` is the same). Computed in float32.
    """
    total = student_feats[0].new_zeros((), dtype=torch.float32)
    for fs, ft in zip(student_feats, teacher_feats):
        fs, ft = fs.float(), ft.float()
        loss = F.mse_loss(fs, ft)
        weight, norm = 1.0, 1.0
        for level in levels:
            if level >= fs.shape[2]:
                continue
            weight /= 2.0
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(fs, level),
                                              F.adaptive_avg_pool2d(ft, level))
            norm += weight
        total = total + loss / norm
    return total


def _as_map(embedding: torch.Tensor) -> torch.Tensor:
    return embedding.reshape(*embedding.shape[:2], 1, 1)


#: the official ReviewKD weight per CIFAR-100 pair (``CIFAR-100/script/reviewKD.sh`` lines
#: 1-15), keyed by (teacher, student) as :func:`~kdbench.losses.base.arch_key` spells them
REVIEWKD_WEIGHT = {
    ("wrn402", "wrn162"): 5.0, ("wrn402", "wrn401"): 5.0, ("wrn402", "shufflev1"): 5.0,
    ("resnet32x4", "resnet8x4"): 5.0, ("resnet32x4", "shufflev1"): 5.0,
    ("resnet32x4", "shufflev2"): 8.0, ("resnet56", "resnet20"): 0.6,
    ("resnet110", "resnet32"): 1.0,
}


def finalize_reviewkd(weights: dict[str, float], options: dict[str, Any], *,
                      student: str | None = None, teacher: str | None = None) -> None:
    """With ``weight_table``, ``w_reviewkd`` becomes the official weight of the pair (pairs not
    in the table keep theirs), so the record holds the value used."""
    if options.get("weight_table"):
        key = (arch_key(teacher), arch_key(student))
        weights["w_reviewkd"] = REVIEWKD_WEIGHT.get(key, weights["w_reviewkd"])


@register_loss(
    "reviewkd", family="feature", year=2021, repo="https://github.com/dvlab-research/ReviewKD",
    description="knowledge review: ABF-fused student stages vs teacher pre-activations, "
                "hierarchical context loss",
    paper="Chen et al., Distilling Knowledge via Knowledge Review, CVPR 2021",
    defaults={"w_ce": 1.0, "w_reviewkd": 1.0, "warmup": 20, "max_mid_channels": 512,
              "student_preact": False, "weight_table": False, "stages": None},
    later=("stages",), finalize=finalize_reviewkd,
    taps=("logits", "stages", "preact", "embedding"))
class ReviewKD(Distiller):
    """Knowledge review: the student's stages and pooled embedding, fused deep to shallow by ABF
    modules, matched to the teacher's pre-activation stages and pooled embedding by HCL.

    The term is ``min(epoch / warmup, 1) · hcl(...)`` with kdbench's epochs counted from 0, as
    the official trainer counts them (the first epoch has no review term); mdistiller counts
    from 1, one epoch ahead.

    The official per-student configuration lists are derived here from the models
    (:func:`review_channels`): ``in_channels`` = the student's stage channels and its embedding
    width, ``out_channels`` = the teacher's, ``shapes``/``out_shapes`` = the spatial sizes of
    those features (1 for the embedding). Student and teacher need the same number of stages,
    unless option ``stages`` names the pairs (student stage, or pre-activation stage with
    ``student_preact``; teacher pre-activation stage) that make the levels below the embeddings.
    ``weight_table`` (off by default, like DKD's ``beta_table``) applies the official per-pair
    weights. The differences from the official code: ``docs/fidelity/reviewkd.md``.
    """

    taps = frozenset({"logits", "stages", "preact", "embedding"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        fs, ft = probe_pair(ctx, "reviewkd")
        self.student_preact = bool(self.options["student_preact"])
        self.pairs: list[tuple[int, int]] | None = None
        s_maps, t_maps = self.student_maps(fs), self.teacher_maps(ft)
        if self.options.get("stages") is None:
            paired(s_maps, t_maps, "reviewkd", "stages (plus the pooled embedding)")
        else:
            self.pairs = stage_pairs(self.options["stages"], s_maps[:-1], t_maps[:-1],
                                     "reviewkd")
            s_maps, t_maps = self.student_maps(fs), self.teacher_maps(ft)
        max_mid = option(self.options, "max_mid_channels", "reviewkd", positive=True,
                         integer=True)
        self.warmup = option(self.options, "warmup", "reviewkd", nonneg=True, integer=True)
        self.review = ReviewFusion([m.shape[1] for m in s_maps], [m.shape[1] for m in t_maps],
                                   max_mid)

    def student_maps(self, f: Features) -> list[torch.Tensor]:
        maps = f.preact if self.student_preact else f.stages
        need_maps(maps, "student", "pre-activation stages" if self.student_preact else "stages",
                  "reviewkd")
        if f.embedding is None:
            raise ConfigError("loss 'reviewkd' needs the student's pooled embedding")
        if self.pairs is not None:
            maps = [maps[i] for i, _ in self.pairs]
        return [*maps, _as_map(f.embedding)]

    def teacher_maps(self, f: Features) -> list[torch.Tensor]:
        need_maps(f.preact, "teacher", "pre-activation stages", "reviewkd")
        if f.embedding is None:
            raise ConfigError("loss 'reviewkd' needs the teacher's pooled embedding")
        maps = f.preact if self.pairs is None else [f.preact[j] for _, j in self.pairs]
        return [*maps, _as_map(f.embedding)]

    def warmup_factor(self, epoch: int) -> float:
        return min(epoch / self.warmup, 1.0) if self.warmup > 0 else 1.0

    def forward(self, student, teacher, target, index=None, epoch=0):
        t_maps = self.teacher_maps(teacher)
        fused = self.review(self.student_maps(student), [tuple(t.shape[-2:]) for t in t_maps])
        return {"reviewkd": self.warmup_factor(epoch) * hcl(fused, t_maps)}


def review_channels(student: nn.Module, teacher: nn.Module,
                    input_shape: tuple[int, int, int] = (3, 32, 32),
                    student_preact: bool = False) -> dict[str, list[int] | int]:
    """ReviewKD's configuration lists for a pair, in the official ``build_review_kd`` layout:
    ``in_channels``/``out_channels`` shallow to deep, ``shapes``/``out_shapes`` deep to shallow
    (spatial sizes of the student's and the teacher's features), and ``mid_channels``."""
    fs, ft = probe(student, input_shape), probe(teacher, input_shape)
    s = [*(fs.preact if student_preact else fs.stages), _as_map(fs.embedding)]
    t = [*ft.preact, _as_map(ft.embedding)]
    return {"in_channels": [m.shape[1] for m in s], "out_channels": [m.shape[1] for m in t],
            "shapes": [m.shape[2] for m in reversed(s)],
            "out_shapes": [m.shape[2] for m in reversed(t)],
            "mid_channels": min(512, s[-1].shape[1])}
