"""InDistill's pure parts: the layer curriculum, the layer loss and its two-kernel PKT.

Sarridis, Koutlis, Kordopatis-Zilos, Kompatsiaris, Papadopoulos, "InDistill: Information
flow-preserving knowledge distillation for model compression", WACV 2025 (arXiv 2205.10003);
official code github.com/gsarridis/InDistill (``kd_from_aux_to_student.py``, ``methods/pkt.py``).

The official warm-up (``kd_from_aux_to_student.py`` lines 29–44): with ``a = 2``, epochs 0–2 train
layer 0 (conv1's pooled map), epochs 3–6 layer 1, epochs 7–11 layer 2, each with MSE against the
pruned auxiliary's map and no label loss; from epoch 12 on the final representation (the fc1
embedding) is trained with this module's PKT. The final representation is *not* part of the
curriculum: it is the regular KD method that follows, and the warm-up's 12 epochs come out of
the main budget (60 epochs at lr 1e-3, then 10 at 1e-4, all PKT on the embedding).
"""

from __future__ import annotations

import numbers

import torch

from ..errors import ConfigError


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
    no ε inside the logs, weight 1, no label loss: ``kd_from_aux_to_student.py`` line 44 and
    ``kd_from_teacher_to_aux.py`` line 34).

    Differences from kdbench's RepDistiller-style :func:`kdbench.losses.functional.pkt`: that
    one uses the cosine kernel only, the one-directional KL(P^t ‖ P^s) with ε = 1e-7 inside the
    log ratio ``log((P^t + ε)/(P^s + ε))``, ε = 1e-7 in the normalisation, and RepDistiller's
    weight 30000 next to CE; this one adds the Euclidean kernel, uses the symmetric divergence,
    ε = 1e-6, and no ε in the logs (a cosine of exactly −1 gives a zero kernel and an infinite
    loss, as in the reference; post-ReLU embeddings never reach it). Both average over the B²
    entries. kdbench computes in float32 (float64 inputs stay float64). In float32 the diagonal
    ``‖e‖² + ‖e‖² − 2e·e`` rounds to about 1e-7·‖e‖², which exceeds ε for norms above ~3, so
    there (in the reference too) the diagonal distance is rounding noise rather than √ε; the
    loss moves by about 1 % for 128-d embeddings of norm ~25.
    """
    def probs(e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = _at_least_float32(e).flatten(1)
        k1, k2 = _cosine_kernel(e, eps), _euclidean_kernel(e, eps)
        return k1 / k1.sum(1, keepdim=True), k2 / k2.sum(1, keepdim=True)

    loss = 0.0
    for pt, ps in zip(probs(teacher_emb), probs(student_emb)):
        loss = loss + ((pt - ps) * (torch.log(pt) - torch.log(ps))).mean()
    return loss
