"""Embedding and relation losses: RKD, PKT and CC, on the pooled penultimate embedding."""

from __future__ import annotations

from . import functional as KF
from .base import DistillContext, Distiller, option, probe, require_teacher
from .connectors import Embed


class RKD(Distiller):
    """Relational KD: distance (×25) and angle (×50) potentials of the embedding batch."""

    taps = frozenset({"logits", "embedding"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        self.distance = option(self.options, "distance", "rkd", nonneg=True)
        self.angle = option(self.options, "angle", "rkd", nonneg=True)

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {"rkd": KF.rkd(student.embedding, teacher.embedding, self.distance, self.angle)}


class PKT(Distiller):
    """Probabilistic knowledge transfer: KL between cosine-kernel conditional distributions."""

    taps = frozenset({"logits", "embedding"})

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {"pkt": KF.pkt(student.embedding, teacher.embedding)}


class CC(Distiller):
    """Correlation congruence on 128-d linear embeddings of both networks (both trained)."""

    taps = frozenset({"logits", "embedding"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        teacher = require_teacher(ctx, "cc")
        dim = option(self.options, "feat_dim", "cc", positive=True, integer=True)
        s_dim = probe(ctx.student, ctx.input_shape).embedding.shape[1]
        t_dim = probe(teacher, ctx.input_shape).embedding.shape[1]
        self.embed_s = Embed(s_dim, dim, normalize=False)
        self.embed_t = Embed(t_dim, dim, normalize=False)

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {"cc": KF.cc(self.embed_s(student.embedding), self.embed_t(teacher.embedding))}
