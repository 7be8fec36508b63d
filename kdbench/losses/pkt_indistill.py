"""``pkt_indistill`` and the loss parts of InDistill's warm-up.

Sarridis, Koutlis, Kordopatis-Zilos, Kompatsiaris, Papadopoulos, "InDistill: Information
flow-preserving knowledge distillation for model compression", WACV 2025 (arXiv 2205.10003);
official code github.com/gsarridis/InDistill (``kd_from_aux_to_student.py``, ``methods/pkt.py``).

The method has two parts. A warm-up (the ``indistill`` stage, :mod:`kdbench.teachers.indistill`)
trains the student's layers one by one, shallow to deep, with the MSE against a pruned teacher's
maps (:func:`layer_mse`) on a curriculum of ``a+1, a+2, …`` epochs per layer
(:func:`curriculum_epochs`, :func:`curriculum_layer`; 12 epochs for the reference's three layers
and a = 2), no label loss. Then the final representation (the embedding) is distilled with
InDistill's two-kernel, symmetric PKT, registered here as ``pkt_indistill``
(:func:`indistill_pkt`): weight 1 and no label loss, as the reference trains it. The warm-up's
epochs come out of the main budget (60 epochs at lr 1e-3, then 10 at 1e-4). Fidelity:
``docs/fidelity/pkt_indistill.md``.
"""

from __future__ import annotations

import numbers

import torch

from ..errors import ConfigError
from .base import DistillContext, Distiller, option, register_loss

__all__ = ["PKTInDistill", "curriculum_epochs", "curriculum_layer", "indistill_pkt", "layer_mse"]


# ============================== the warm-up: curriculum and layer loss ==========================


def _check(num_layers: int, a: int) -> None:
    if not isinstance(num_layers, numbers.Integral) or num_layers < 1:
        raise ConfigError(f"InDistill needs at least one distilled layer, got num_layers="
                          f"{num_layers!r} (valid: an integer ≥ 1)")
    if not isinstance(a, numbers.Integral) or a < 0:
        raise ConfigError(f"InDistill's curriculum offset a={a!r} is invalid (valid: an "
                          f"integer ≥ 0; the paper uses 2)")


def curriculum_epochs(num_layers: int, a: int = 2) -> tuple[int, ...]:
    """Epochs spent on each distilled layer, shallow to deep: ``a+1, a+2, …, a+L``.

    Layer i (0-based) gets ``a + 1 + i`` epochs; the warm-up lasts ``L·a + L(L+1)/2`` epochs
    (12 for the reference's L = 3, a = 2: ``kd_from_aux_to_student.py`` lines 33–41, thresholds
    ``a+1``, ``a+1+a+2``, ``a+1+a+2+a+3``). Deeper layers get more epochs because they are
    harder to distil; all of it sits in the early "critical period" of training.
    """
    _check(num_layers, a)
    return tuple(a + 1 + i for i in range(num_layers))


def curriculum_layer(epoch: int, num_layers: int, a: int = 2) -> int | None:
    """The distilled layer (0-based) trained at ``epoch`` (0-based), or None once the warm-up
    is over and the final representation / regular KD method takes over."""
    epochs = curriculum_epochs(num_layers, a)
    if not isinstance(epoch, numbers.Integral) or epoch < 0:
        raise ConfigError(f"epoch {epoch!r} is invalid (valid: an integer ≥ 0)")
    end = 0
    for layer, n in enumerate(epochs):
        end += n
        if epoch < end:
            return layer
    return None


def layer_mse(teacher_map: torch.Tensor, student_map: torch.Tensor) -> torch.Tensor:
    """InDistill's layer loss: the mean squared error between the pruned teacher's map and the
    student's, both flattened to (B, C·H·W).

    ``mean_{b,j} (t_bj − s_bj)²`` — ``nn.MSELoss()`` with its default ``reduction="mean"``, i.e.
    averaged over batch *and* features (``kd_from_aux_to_student.py`` lines 35–41 and 60; the
    features come flattened from ``get_features(..., flatten=True)``). No weight, no label term.
    """
    t, s = teacher_map.flatten(1), student_map.flatten(1)
    if t.shape != s.shape:
        raise ConfigError(f"InDistill's layer loss needs maps of equal size, got teacher "
                          f"{tuple(teacher_map.shape)} and student {tuple(student_map.shape)}")
    return (_at_least_float32(t) - _at_least_float32(s)).pow(2).mean()


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """float32 for half/bfloat16 (autocast) inputs, float64 stays float64."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


# ============================== the final representation: two-kernel PKT ==================


def _euclidean_kernel(e: torch.Tensor, eps: float) -> torch.Tensor:
    """``1 / (1 + sqrt(max(‖a‖² + ‖b‖² − 2a·b, 0) + ε))``: the diagonal is 1/(1+√ε), not 1."""
    sq = (e * e).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (e @ e.t())).clamp_min(0.0)
    return 1.0 / (1.0 + torch.sqrt(d2 + eps))


def _cosine_kernel(e: torch.Tensor, eps: float) -> torch.Tensor:
    """``(1 + cos)/2`` with vectors divided by ``‖e‖ + ε`` (NaNs set to 0)."""
    n = e / (e.norm(dim=1, keepdim=True) + eps)
    n = n.masked_fill(torch.isnan(n), 0.0)
    return (n @ n.t() + 1.0) / 2.0


def indistill_pkt(student_emb: torch.Tensor, teacher_emb: torch.Tensor,
                  eps: float = 1e-6) -> torch.Tensor:
    """InDistill's probabilistic knowledge transfer (PKT) on the embedding: two kernels, a
    symmetric divergence.

    For each of two kernels — the cosine similarity rescaled to [0, 1], ``K_ij = (1 + cos)/2``
    (vectors divided by ``‖e‖ + ε``), and ``K_ij = 1/(1 + d_ij)`` with
    ``d_ij = sqrt(max(‖e_i‖² + ‖e_j‖² − 2 e_i·e_j, 0) + ε)`` — rows are normalised to
    conditional distributions ``P_ij = K_ij / Σ_j K_ij`` (diagonal included), and the loss is
    the Jeffreys divergence ``mean_{i,j} (P^t_ij − P^s_ij)(log P^t_ij − log P^s_ij)`` over all
    B² entries, summed over the two kernels. Symmetric in student and teacher.

    Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer"
    (ECCV 2018), as InDistill's ``methods/pkt.py`` ``PKT_loss`` computes it (eps 1e-6, d = 1,
    no ε inside the logs, weight 1, no label loss). Unlike RepDistiller's :func:`~.pkt.pkt`
    (cosine kernel only, one-directional KL with ε = 1e-7 inside the log ratio), it adds the
    Euclidean kernel and uses the symmetric divergence; both average over the B² entries.
    Computed in float32 (float64 inputs stay float64). The comparison in full, and the float32
    rounding of the diagonal distance: ``docs/fidelity/pkt_indistill.md``.
    """
    def probs(e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = _at_least_float32(e).flatten(1)
        k1, k2 = _cosine_kernel(e, eps), _euclidean_kernel(e, eps)
        return k1 / k1.sum(1, keepdim=True), k2 / k2.sum(1, keepdim=True)

    loss = 0.0
    for pt, ps in zip(probs(teacher_emb), probs(student_emb)):
        loss = loss + ((pt - ps) * (torch.log(pt) - torch.log(ps))).mean()
    return loss


@register_loss(
    "pkt_indistill", family="relation", year=2025, repo="https://github.com/gsarridis/InDistill",
    description="InDistill's PKT: cosine and 1/(1+d) kernels, Jeffreys divergence, "
                "on the embedding; no label loss",
    paper="Sarridis et al., InDistill: Information flow-preserving knowledge "
          "distillation for model compression, WACV 2025 (PKT: Passalis & Tefas, "
          "ECCV 2018)",
    defaults={"w_ce": 0.0, "w_pkt_indistill": 1.0, "eps": 1e-6}, taps=("logits", "embedding"))
class PKTInDistill(Distiller):
    """InDistill's final-representation loss: ``w_ce·CE + w_pkt_indistill·PKT₂(e_s, e_t)``.

    ``PKT₂`` is :func:`indistill_pkt` on the penultimate embeddings (cosine kernel rescaled to
    [0, 1] and ``1/(1 + d)``, each row-normalised, Jeffreys divergence, summed over the
    kernels); student and teacher embeddings may differ in width
    (the reference distils Cnn32's 128-d into Cnn32_Small's 64-d, and ResNet-18's 512-d into
    Cnn32's 128-d).

    Official defaults: weight 1 and *no label loss* — the reference back-propagates the PKT
    term alone (``docs/fidelity/pkt_indistill.md``) — so ``w_ce`` defaults to 0 here (kdbench
    still logs the CE it does not train on; set ``--weight w_ce=1`` for PKT next to the label
    loss). Where kdbench differs: none in the term; ``eps`` (1e-6) is an option.
    """

    taps = frozenset({"logits", "embedding"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        # ε > 0 keeps the distance's square root differentiable on the kernel's diagonal
        self.eps = float(option(self.options, "eps", "pkt_indistill", positive=True))

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {"pkt_indistill": indistill_pkt(student.embedding, teacher.embedding, self.eps)}
