"""``cc``: Peng et al., "Correlation Congruence for Knowledge Distillation" (ICCV 2019).

As RepDistiller benchmarks it (code from the CC authors): on 128-d linear embeddings of student
and teacher, both trained, weight 0.02.
"""

from __future__ import annotations

import torch

from .base import REPDISTILLER, DistillContext, Distiller, option, probe_pair, register_loss
from .connectors import Embed

__all__ = ["CC", "cc"]


def cc(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """Peng et al., "Correlation Congruence for Knowledge Distillation" (ICCV 2019), as benchmarked.

    RepDistiller's version (code from the CC authors), on 128-d linear embeddings of student and
    teacher: with ``δ_i = |e_s,i − e_t,i|``, ``mean_i Σ_d δ_i,d · δ_{i+1},d`` over consecutive
    pairs of the batch. (The paper's full form matches Gaussian-kernel correlation matrices; this
    is the form whose numbers the benchmark reports.)
    """
    delta = (student_emb.float() - teacher_emb.float()).abs()
    return (delta[:-1] * delta[1:]).sum(1).mean()


@register_loss(
    "cc", family="relation", year=2019, repo=REPDISTILLER,
    description="correlation congruence on 128-d linear embeddings",
    paper="Peng et al., Correlation Congruence for Knowledge Distillation, ICCV 2019",
    defaults={"w_ce": 1.0, "w_cc": 0.02, "feat_dim": 128}, taps=("logits", "embedding"))
class CC(Distiller):
    """Correlation congruence on 128-d linear embeddings of both networks (both trained)."""

    taps = frozenset({"logits", "embedding"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        fs, ft = probe_pair(ctx, "cc")
        dim = option(self.options, "feat_dim", "cc", positive=True, integer=True)
        self.embed_s = Embed(fs.embedding.shape[1], dim, normalize=False)
        self.embed_t = Embed(ft.embedding.shape[1], dim, normalize=False)

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {"cc": cc(self.embed_s(student.embedding), self.embed_t(teacher.embedding))}
