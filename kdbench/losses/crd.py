"""``crd``: Tian et al., "Contrastive Representation Distillation" (ICLR 2020).

Contrastive representation distillation with a memory bank over the training set.

Follows RepDistiller (``crd/``, ``--mode exact``): for every sample the positive is the sample
itself and the K = 16384 negatives are drawn uniformly *from other classes* (without replacement
when the other classes hold at least K samples, with replacement otherwise), as its
``CIFAR100InstanceSample`` does. (The CRD paper's text speaks of random negatives; RepDistiller's
fall-back without precomputed indices draws uniformly from the whole set. ``negatives=random``
gives that variant, excluding only the sample itself.) Two memory banks of N unit vectors (the
student's and the teacher's 128-d embeddings, initialised uniform in ±1/√(d/3)) are updated with
momentum 0.5 after each step; the normalisation constants Z are fixed from the first batch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .base import (
    REPDISTILLER,
    DistillContext,
    Distiller,
    option,
    probe,
    register_loss,
    require_teacher,
)
from .connectors import Embed

__all__ = ["CRD", "NEGATIVES", "crd", "crd_scores", "nce_contrast"]


def nce_contrast(p: torch.Tensor, n_data: int, eps: float = 1e-7) -> torch.Tensor:
    """The NCE loss of CRD's eq. (18) for one anchor side.

    ``p`` (B × (K+1)) holds the normalised scores ``exp(v·m/τ)/Z`` of the positive (column 0)
    and K negatives; with noise probability ``P_n = 1/N`` the loss is
    ``−[ Σ_b log(p_b0 / (p_b0 + K·P_n)) + Σ_{b,k} log(K·P_n / (p_bk + K·P_n)) ] / B``
    (ε as in RepDistiller).
    """
    b, k = p.shape[0], p.shape[1] - 1
    m_pn = k / float(n_data)
    pos = p[:, 0]
    neg = p[:, 1:]
    log_d1 = torch.log(pos / (pos + m_pn + eps))
    log_d0 = torch.log(m_pn / (neg + m_pn + eps))
    return -(log_d1.sum() + log_d0.sum()) / b


def crd_scores(anchor: torch.Tensor, memory: torch.Tensor, idx: torch.Tensor,
               T: float) -> torch.Tensor:
    """``exp(⟨memory[idx_bk], anchor_b⟩ / τ)`` for a (B, K+1) index matrix: one (B × N) product
    and a gather, rather than gathering B·(K+1) bank rows (the same numbers, far less memory)."""
    scores = anchor.float() @ memory.float().t()
    return torch.exp(scores.gather(1, idx) / T)


def crd(student_emb: torch.Tensor, teacher_emb: torch.Tensor, student_memory: torch.Tensor,
        teacher_memory: torch.Tensor, idx: torch.Tensor, T: float, z_student: float,
        z_teacher: float, n_data: int) -> torch.Tensor:
    """Tian et al., "Contrastive Representation Distillation" (ICLR 2020), RepDistiller's NCE form.

    Inputs: the L2-normalised embeddings ``v_s, v_t`` (B × d), the two memory banks (N × d:
    ``student_memory`` holds student embeddings, ``teacher_memory`` teacher ones) and ``idx``
    (B × (K+1)): each sample's positive (column 0, the sample itself) and K negatives. Two
    symmetric ``nce_contrast`` terms: the student as anchor against teacher memories,
    ``p_s[b,k] = exp(⟨M_t[idx_bk], v_s,b⟩ / τ) / Z_s``, and the teacher as anchor against student
    memories, ``p_t[b,k] = exp(⟨M_s[idx_bk], v_t,b⟩ / τ) / Z_t``. Z are the normalisation
    constants (RepDistiller fixes each from the first batch as ``mean(exp(score/τ)) · N``).
    """
    p_s = crd_scores(student_emb, teacher_memory.detach(), idx, T) / z_student
    p_t = crd_scores(teacher_emb, student_memory.detach(), idx, T) / z_teacher
    return nce_contrast(p_s, n_data) + nce_contrast(p_t, n_data)


NEGATIVES = ("class", "random")


@register_loss(
    "crd", family="feature", year=2020, repo=REPDISTILLER,
    description="contrastive representation distillation: NCE over a memory bank",
    paper="Tian et al., Contrastive Representation Distillation, ICLR 2020",
    defaults={"w_ce": 1.0, "w_crd": 0.8, "feat_dim": 128, "nce_k": 16384, "nce_t": 0.07,
              "nce_m": 0.5, "negatives": "class"},
    taps=("logits", "embedding", "index"))
class CRD(Distiller):
    """Contrastive representation distillation (NCE form) on the embeddings, with memory banks."""

    taps = frozenset({"logits", "embedding", "index"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        o = self.options
        teacher = require_teacher(ctx, "crd")
        dim = option(o, "feat_dim", "crd", positive=True, integer=True)
        self.k = option(o, "nce_k", "crd", positive=True, integer=True)
        self.T = option(o, "nce_t", "crd", positive=True)
        self.momentum = option(o, "nce_m", "crd", nonneg=True)
        self.negatives = o["negatives"]
        if self.negatives not in NEGATIVES:
            raise ConfigError(f"loss 'crd' option negatives={self.negatives!r} is not one of "
                              f"{', '.join(NEGATIVES)}")
        n = int(ctx.num_train)
        if n < 2:
            raise ConfigError(f"loss 'crd' needs at least 2 training samples, got {n}")
        device = next(ctx.student.parameters()).device
        self.embed_s = Embed(probe(ctx.student, ctx.input_shape).embedding.shape[1], dim)
        self.embed_t = Embed(probe(teacher, ctx.input_shape).embedding.shape[1], dim)
        stdv = 1.0 / math.sqrt(dim / 3)
        self.register_buffer("memory_s", torch.rand(n, dim).mul_(2 * stdv).sub_(stdv))
        self.register_buffer("memory_t", torch.rand(n, dim).mul_(2 * stdv).sub_(stdv))
        self.register_buffer("z", torch.full((2,), -1.0))
        if self.negatives == "class":
            if ctx.train_labels is None or len(ctx.train_labels) != n:
                raise ConfigError("loss 'crd' with negatives=class needs the training labels "
                                  "(use negatives=random for a dataset without them)")
            labels = ctx.train_labels.long().to(device)
            pool = n - torch.bincount(labels).max().item()
            if pool < 1:
                raise ConfigError("loss 'crd' with negatives=class needs at least two classes")
            self.register_buffer("labels", labels, persistent=False)
        else:
            pool = n - 1
        self.replace = self.k > pool  # RepDistiller: with replacement only when it must
        # the loss's own generator: sampling is fixed by the run's seed (drawn from the seeded
        # global generator) and its state is saved with the distiller, so resuming is exact
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        self.n = n

    # -- state -------------------------------------------------------------------------------
    def get_extra_state(self) -> Any:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: Any) -> None:
        self.generator.set_state(state["generator"].cpu() if hasattr(state["generator"], "cpu")
                                 else state["generator"])

    # -- sampling ----------------------------------------------------------------------------
    def sample(self, index: torch.Tensor) -> torch.Tensor:
        """(B, K+1) memory indices: the sample itself, then K negatives."""
        b = index.shape[0]
        if self.negatives == "class":
            allowed = self.labels.view(1, -1) != self.labels[index].view(-1, 1)
        else:
            allowed = torch.ones(b, self.n, dtype=torch.bool, device=index.device)
            allowed[torch.arange(b, device=index.device), index] = False
        if self.replace:
            neg = torch.multinomial(allowed.float(), self.k, replacement=True,
                                    generator=self.generator)
        else:
            keys = torch.rand(b, self.n, device=index.device, generator=self.generator)
            neg = keys.masked_fill(~allowed, -1.0).topk(self.k, dim=1).indices
        return torch.cat([index.view(-1, 1), neg], dim=1)

    # -- loss --------------------------------------------------------------------------------
    def forward(self, student, teacher, target, index=None, epoch=0):
        if index is None:
            raise ConfigError("loss 'crd' needs sample indices from the data pipeline, but the "
                              "loader gave none")
        vs = self.embed_s(student.embedding.float())
        vt = self.embed_t(teacher.embedding.float())
        idx = self.sample(index)
        if self.z[0] < 0:  # RepDistiller: Z from the first batch, then fixed
            with torch.no_grad():
                zs = crd_scores(vs, self.memory_t, idx, self.T).mean() * self.n
                zt = crd_scores(vt, self.memory_s, idx, self.T).mean() * self.n
                self.z.copy_(torch.stack([zs, zt]))
        loss = crd(vs, vt, self.memory_s, self.memory_t, idx, self.T, self.z[0], self.z[1],
                      self.n)
        with torch.no_grad():
            # out of place: this step's scores keep the old banks for their backward
            for name, v in (("memory_s", vs), ("memory_t", vt)):
                memory = getattr(self, name)
                updated = memory[index] * self.momentum + v.detach() * (1 - self.momentum)
                setattr(self, name, memory.index_copy(0, index, F.normalize(updated, dim=1)))
        return {"crd": loss}
