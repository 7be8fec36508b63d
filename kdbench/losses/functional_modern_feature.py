"""Pure functional core of three later feature-distillation methods: ReviewKD, OFD and KD-SVD.

Tensors in, the *unweighted* term out, as in :mod:`.functional`; each function names the official
code it follows and where kdbench differs from it. The trainable parts (ReviewKD's ABF fusion
modules, OFD's connectors) live in :mod:`.connectors_modern`, the plugins in
:mod:`.modern_feature`.

Conventions: ``B`` is the batch size; feature maps are (B, C, H, W); every function computes in
float32 whatever the autocast dtype of its inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["align_singular", "feature_svd", "hcl", "kdsvd", "ofd", "ofd_margin", "ofd_stage",
           "rbf_correlation"]


# ============================== ReviewKD ========================================================


def hcl(student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor],
        levels: tuple[int, ...] = (4, 2, 1)) -> torch.Tensor:
    """Chen et al., "Distilling Knowledge via Knowledge Review" (CVPR 2021): the hierarchical
    context loss, summed over feature pairs.

    Per pair of equally sized maps (the student's already fused by the review path):
    ``(mse(f_s, f_t) + Σ_k 2^-k · mse(pool_{l_k}(f_s), pool_{l_k}(f_t))) / (1 + Σ_k 2^-k)``,
    ``mse`` the mean over every element, ``pool_l`` adaptive average pooling to l × l, and
    ``l_k`` the levels of ``levels`` (4, 2, 1) that are smaller than the map's height, the first
    one used weighted 1/2, the next 1/4, ... (official ``CIFAR-100/model/reviewkd.py``
    lines 160-177; mdistiller's ``hcl_loss`` is the same).
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


# ============================== OFD =============================================================


def ofd_margin(gamma: torch.Tensor, beta: torch.Tensor, floor: float = 1e-3) -> torch.Tensor:
    """OFD's per-channel margin: the expectation of the negative part of the teacher's
    pre-activation, from the BatchNorm that produces it.

    Each channel's pre-activation is taken as Gaussian ``N(β, γ²)`` (BatchNorm's affine output
    of a normalised input), and the margin is ``E[x | x < 0] = β − |γ|·φ(β/|γ|) / Φ(−β/|γ|)``;
    where ``Φ(−β/|γ|) ≤ floor`` (almost never negative) it is ``−3|γ|`` instead (official
    ``CIFAR-100/distiller.py`` lines 29-41). A channel with γ = 0 (constant output; the official
    code divides by zero there) gets the formula's limit ``min(β, 0)``.
    """
    s = gamma.detach().double().abs()
    m = beta.detach().double().to(s.device)
    safe = torch.where(s > 0, s, torch.ones_like(s))
    z = m / safe
    cdf = torch.special.ndtr(-z)
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    margin = torch.where(cdf > floor, m - s * pdf / cdf.clamp_min(floor), -3.0 * s)
    margin = torch.where(s > 0, margin, m.clamp(max=0.0))
    return margin.float()


def ofd_stage(student_feat: torch.Tensor, teacher_feat: torch.Tensor,
              margin: torch.Tensor) -> torch.Tensor:
    """OFD's partial L2 distance on one stage, summed over elements and divided by B.

    With ``m`` the teacher channel's margin, ``s`` the connector's output and ``t`` the teacher's
    pre-activation: ``(s − m)²`` where ``t ≤ m < s``; ``(s − t)²`` where ``m < t ≤ 0`` and
    ``s > t``; ``(s − t)²`` where ``t > 0``; nothing where the teacher is negative and the student
    already below it (official ``distiller.py`` lines 9-13: target ``max(t, m)``, mask
    ``s > target or target > 0``; mdistiller's ``feat_loss`` writes the same three cases). A
    teacher map of another size is first average-pooled to the student's (mdistiller).
    """
    s, t = student_feat.float(), teacher_feat.float()
    if t.shape[-2:] != s.shape[-2:]:
        t = F.adaptive_avg_pool2d(t, s.shape[-2:])
    m = margin.float().view(1, -1, 1, 1).to(s.device)
    target = torch.maximum(t, m)
    keep = (s > target) | (target > 0)
    return ((s - target).pow(2) * keep).sum() / s.shape[0]


def ofd(student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor],
        margins: list[torch.Tensor]) -> torch.Tensor:
    """Heo et al., "A Comprehensive Overhaul of Feature Distillation" (ICCV 2019).

    ``Σ_i 2^-(n−1−i) · ofd_stage(r_i(s_i), t_i, m_i)`` over the n pre-ReLU stages, shallow to
    deep (the deepest weighted 1, halving towards the input), where the student's maps are
    already through their connectors r_i. The official trainer divides the sum by B (done here)
    and by 1000 (kdbench's ``w_ofd = 0.001``), ``train_with_distillation.py`` line 91.
    """
    n = len(student_feats)
    total = student_feats[0].new_zeros((), dtype=torch.float32)
    for i, (s, t, m) in enumerate(zip(student_feats, teacher_feats, margins)):
        total = total + ofd_stage(s, t, m) / 2 ** (n - 1 - i)
    return total


# ============================== KD-SVD ==========================================================


class _TopSVD(torch.autograd.Function):
    """The k leading singular values and right singular vectors of a batch of matrices, with a
    gradient that involves only those k components (so repeated or zero singular values further
    down, common in post-ReLU maps, cannot turn it into NaN as the full SVD gradient does).

    For ``X = U S Vᵀ`` and eigenvalues ``λ = σ²`` of ``XᵀX``, a leading vector moves by
    ``dv_i = Σ_{j≠i} v_j (v_jᵀ dG v_i) / (λ_i − λ_j)`` with ``dG = dXᵀX + XᵀdX`` (the null space
    of X counting as λ_j = 0), and ``dσ_i = u_iᵀ dX v_i``. Pairs with (nearly) equal eigenvalues
    contribute nothing, as the official TensorFlow gradient's ``crop_removenan`` does.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, k: int):  # type: ignore[override]
        u, s, vh = torch.linalg.svd(x, full_matrices=False)
        v = vh.transpose(1, 2)
        # LAPACK's signs are arbitrary and differ between devices; fix them so that the loss
        # (which is not invariant to them, see kdsvd) is the same everywhere: Σ_c v_c ≥ 0.
        sign = torch.where(v.sum(1, keepdim=True) < 0, -1.0, 1.0).to(v.dtype)
        u, v = u * sign, v * sign
        ctx.save_for_backward(x, u, s, v)
        ctx.k = k
        return s[:, :k].clone(), v[:, :, :k].clone()

    @staticmethod
    def backward(ctx, grad_s: torch.Tensor, grad_v: torch.Tensor):  # type: ignore[override]
        x, u, s, v = ctx.saved_tensors
        k = ctx.k
        lam = s * s
        uk, sk, vk, lk = u[:, :, :k], s[:, :k], v[:, :, :k], lam[:, :k]
        tol = 1e-6 * lam.amax(dim=1).clamp_min(torch.finfo(lam.dtype).tiny)
        # C[j, i] = v_jᵀ g_i / (λ_i − λ_j) for j over the thin basis, i over the k leading ones
        den = lk.unsqueeze(1) - lam.unsqueeze(2)
        ok = den.abs() > tol.view(-1, 1, 1)
        coef = (v.transpose(1, 2) @ grad_v) * torch.where(ok, 1.0 / torch.where(ok, den, 1.0),
                                                          0.0)
        us = u * s.unsqueeze(1)
        # X·(P + Pᵀ) with P = V_k Cᵀ Vᵀ, written without forming the C × C matrix P
        grad_x = (uk * sk.unsqueeze(1)) @ coef.transpose(1, 2) @ v.transpose(1, 2)
        grad_x = grad_x + (us @ coef) @ vk.transpose(1, 2)
        if v.shape[1] > v.shape[2]:  # directions outside the row space: λ_j = 0
            outside = grad_v - v @ (v.transpose(1, 2) @ grad_v)
            ok_k = sk > tol.sqrt().view(-1, 1)
            inv = torch.where(ok_k, 1.0 / torch.where(ok_k, sk, 1.0), 0.0)
            grad_x = grad_x + (uk * inv.unsqueeze(1)) @ outside.transpose(1, 2)
        grad_x = grad_x + (uk * grad_s.unsqueeze(1)) @ vk.transpose(1, 2)
        return grad_x, None


def feature_svd(feat: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k leading singular values (B, k') and right singular vectors (B, C, k') of each
    sample's feature map read as an HW × C matrix (positions × channels), k' = min(k, HW, C).

    As the official ``SVD`` (``nets/Distillation.py``), which reshapes NHWC maps to
    (B, HW, C). mdistiller views PyTorch's NCHW maps as (B, C·H, W) instead, decomposing over the
    width (``KDSVD.py`` line 42), which is a layout slip this function does not copy.
    """
    x = feat.float().flatten(2).transpose(1, 2)
    k = min(k, x.shape[1], x.shape[2])
    return _TopSVD.apply(x, k)


def align_singular(v_s: torch.Tensor, v_t: torch.Tensor, s_t: torch.Tensor,
                   k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Match the student's singular vectors to the teacher's k leading ones (official
    ``Align_rsv``).

    For each teacher vector ``t_i`` the student candidate (a column of ``v_s``) with the largest
    ``|cos|`` is picked; both are scaled by the teacher's singular values normalised to unit L2
    norm over the k (a constant); the teacher's vector is then flipped so its cosine with the
    student's is ≥ 0. (mdistiller flips the student's instead; the RBF loss is not invariant to
    that choice, and the official code's is kept.) Returns (student, teacher), each (B, C, k).
    """
    v_t, s_t = v_t[:, :, :k], s_t[:, :k]
    cos = v_s.transpose(1, 2) @ v_t
    pick = cos.abs().argmax(dim=1)
    v_s = v_s.gather(2, pick.unsqueeze(1).expand(-1, v_s.shape[1], -1))
    w = F.normalize(s_t, dim=1).detach().unsqueeze(1)
    v_s, v_t = v_s * w, v_t * w
    sign = torch.where((v_s * v_t).sum(1, keepdim=True) >= 0, 1.0, -1.0)
    return v_s, v_t * sign


def rbf_correlation(v_top: torch.Tensor, v_bottom: torch.Tensor,
                    scale: float = 8.0) -> torch.Tensor:
    """KD-SVD's radial-basis correlation between two consecutive layers' singular vectors:
    ``exp(−(v_top[c, i] − v_bottom[c', i])² / scale)`` for every channel pair (c, c') and
    component i, shape (B, C_top, C_bottom, k)."""
    return torch.exp(-(v_top.unsqueeze(2) - v_bottom.unsqueeze(1)).pow(2) / scale)


def kdsvd(student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor], k: int = 1,
          extra: int = 1) -> torch.Tensor:
    """Lee et al., "Self-supervised Knowledge Distillation Using Singular Value Decomposition"
    (ECCV 2018), as in the authors' code (sseung0703/SSKD_SVD, ``nets/Distillation.py``).

    Each map is decomposed (``feature_svd``): the teacher's k leading right singular vectors,
    the student's k + ``extra`` as candidates; per consecutive layer pair (l, l+1) they are
    aligned (``align_singular``) and compared through their RBF correlations:
    ``Σ_l Σ_{b,c,c',i} (R_s − R_t)² / B`` with ``R = rbf_correlation(v_l, v_{l+1})``, the
    teacher's side a constant. Student and teacher need equal channels at each layer (or a
    connector, the authors' TF2 version).

    Differences from the official TensorFlow code: the official term is
    ``½·√k·Σ(R_s − R_t)²`` summed over the batch, not averaged (mdistiller's PyTorch port divides
    by B and drops ½·√k, as here), and the official trainer adds the distillation gradient to the
    CE gradient per variable, clipped to the CE gradient's norm and ramped by
    ``sigmoid(epoch − 2)`` (``train.py``); kdbench's engine adds ``w_kdsvd · term`` instead. The
    SVD gradient here is exact for the leading components; the official custom gradient keeps
    only the 5 leading components. Singular-vector signs follow a fixed rule (``_TopSVD``).
    """
    svd_s = [feature_svd(f, k + extra) for f in student_feats]
    svd_t = [feature_svd(f, k) for f in teacher_feats]
    total = student_feats[0].new_zeros((), dtype=torch.float32)
    for layer in range(len(student_feats) - 1):
        (_, vs_a), (_, vs_b) = svd_s[layer], svd_s[layer + 1]
        (st_a, vt_a), (st_b, vt_b) = svd_t[layer], svd_t[layer + 1]
        n = min(k, vs_a.shape[2], vs_b.shape[2], vt_a.shape[2], vt_b.shape[2])
        sa, ta = align_singular(vs_a, vt_a, st_a, n)
        sb, tb = align_singular(vs_b, vt_b, st_b, n)
        diff = rbf_correlation(sa, sb) - rbf_correlation(ta, tb).detach()
        total = total + diff.pow(2).sum()
    return total / student_feats[0].shape[0]
