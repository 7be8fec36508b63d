"""Pure functional core of the KD losses: tensors in, the *unweighted* term out.

Each function states its formula and paper, and follows the reference implementation the
benchmark numbers come from (RepDistiller for the CRD paper's CIFAR-100 table, mdistiller for
DKD) wherever that differs from the paper's prose; the docstring says where it does. Loss plugins
(``kdbench.losses.*``) are thin modules around these that own the connectors and the weights.

Conventions: ``B`` is the batch size; feature maps are (B, C, H, W); embeddings (B, D); every
function computes in float32 whatever the autocast dtype of its inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ab", "at", "attention_map", "cc", "crd", "crd_scores", "dkd", "dml", "factor", "fsp",
           "fsp_matrix", "ft", "hint", "kd", "nce_contrast", "nst", "pkt", "pool_to_common", "rkd",
           "rkd_angle", "rkd_distance", "sp", "vid"]


# ============================== logits ==========================================================


def kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 4.0) -> torch.Tensor:
    """Hinton et al., "Distilling the Knowledge in a Neural Network" (NIPS-W 2015).

    ``T² · KL(softmax(t/T) ‖ softmax(s/T))``, the KL divergence summed over classes and averaged
    over the batch ("batchmean"); the T² factor keeps gradient magnitudes comparable across
    temperatures, as in the paper and RepDistiller's ``DistillKL``.
    """
    log_p_s = F.log_softmax(student_logits.float() / T, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / T, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()
    return kl * (T * T)


def dml(student_logits: torch.Tensor, peer_logits: torch.Tensor) -> torch.Tensor:
    """Zhang et al., "Deep Mutual Learning" (CVPR 2018), the mimicry term of one peer.

    ``KL(p_peer ‖ p_student)`` with ``p = softmax(logits)`` (temperature 1, no T² factor), summed
    over classes and averaged over the batch. A cohort member's loss is
    ``CE + 1/(K−1) · Σ_{l≠k} KL(p_l ‖ p_k)``; the average over peers is the engine's (one call per
    peer), the peers' probabilities are constants for the member being updated.
    """
    return kd(student_logits, peer_logits, T=1.0)


def dkd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
        alpha: float = 1.0, beta: float = 8.0, T: float = 4.0) -> torch.Tensor:
    """Zhao et al., "Decoupled Knowledge Distillation" (CVPR 2022), as in mdistiller.

    ``α·TCKD + β·NCKD``, both ×T² and averaged over the batch:

    * TCKD = KL(b_t ‖ b_s) over the binary split ``b = [p_gt, 1 − p_gt]`` of ``p = softmax(z/T)``;
    * NCKD = KL(p̂_t ‖ p̂_s) over the *non-target* classes only, ``p̂ = softmax`` of the logits
      with the target class removed (mdistiller subtracts 1000 from the target logit, which is
      the same distribution up to exp(−1000); here the target class is masked out exactly).

    The warm-up (the term is scaled by ``min(epoch / warmup, 1)``) belongs to the plugin.
    """
    s = student_logits.float() / T
    t = teacher_logits.float() / T
    gt = F.one_hot(target, s.shape[1]).bool()
    log_p_s, log_p_t = F.log_softmax(s, dim=1), F.log_softmax(t, dim=1)

    def binary(log_p: torch.Tensor) -> torch.Tensor:  # log [p_gt, 1 − p_gt], computed stably
        log_gt = log_p.masked_select(gt).view(-1, 1)
        log_other = torch.logsumexp(log_p.masked_fill(gt, float("-inf")), dim=1, keepdim=True)
        return torch.cat([log_gt, log_other], dim=1)

    b_s, b_t = binary(log_p_s), binary(log_p_t)
    tckd = (b_t.exp() * (b_t - b_s)).sum(1).mean()
    q_s = F.log_softmax(s.masked_fill(gt, float("-inf")), dim=1)
    q_t = F.log_softmax(t.masked_fill(gt, float("-inf")), dim=1)
    # the target column is -inf in both: its probability is exactly 0 and contributes nothing
    nckd = (q_t.exp() * (q_t - q_s).masked_fill(gt, 0.0)).sum(1).mean()
    return (alpha * tckd + beta * nckd) * (T * T)


# ============================== feature maps ====================================================


def pool_to_common(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool the spatially larger of two feature maps to the other's size.

    RepDistiller's rule for AT, NST, FT, VID and FSP when the student's and the teacher's maps
    differ in resolution (it compares heights and pools to a square of the smaller height).
    """
    ha, hb = a.shape[2], b.shape[2]
    if ha > hb:
        a = F.adaptive_avg_pool2d(a, (hb, hb))
    elif ha < hb:
        b = F.adaptive_avg_pool2d(b, (ha, ha))
    return a, b


def hint(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015).

    ``mean((r(f_s) − f_t)²)`` over every element, where ``student_feat`` is already the output of
    the regressor r (RepDistiller's ``ConvReg``: conv + BN + ReLU on the hint stage).
    """
    return F.mse_loss(student_feat.float(), teacher_feat.float())


def attention_map(feat: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Spatial attention of a feature map: ``normalize(mean_c |f_c|^p)`` flattened, L2 per sample.

    RepDistiller takes ``f.pow(p)`` (the maps are post-ReLU, so ``|f|^p = f^p`` for even p and
    non-negative f) and the channel *mean* (the paper's sum differs by the constant C, which the
    L2 normalisation removes).
    """
    f = feat.float()
    return F.normalize(f.pow(p).mean(1).flatten(1), dim=1)


def at(student_feat: torch.Tensor, teacher_feat: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Zagoruyko & Komodakis, "Paying More Attention to Attention" (ICLR 2017).

    ``mean_{b,hw}( (Q_s − Q_t)² )`` with ``Q = attention_map(f, p)``: the squared difference of
    the L2-normalised attention maps, averaged over batch *and* spatial positions (RepDistiller;
    the paper writes the p-norm of the difference, ``β/2·‖Q_s − Q_t‖₂``, not squared). Maps of
    different resolution are first average-pooled to the smaller one.
    """
    s, t = pool_to_common(student_feat, teacher_feat)
    return (attention_map(s, p) - attention_map(t, p)).pow(2).mean()


def sp(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """Tung & Mori, "Similarity-Preserving Knowledge Distillation" (ICCV 2019).

    ``‖G̃_t − G̃_s‖²_F / B²`` with ``G = F Fᵀ`` (B × B) of the flattened features and ``G̃`` its
    rows L2-normalised.
    """
    b = student_feat.shape[0]
    fs, ft = student_feat.float().reshape(b, -1), teacher_feat.float().reshape(b, -1)
    gs = F.normalize(fs @ fs.t(), dim=1)
    gt = F.normalize(ft @ ft.t(), dim=1)
    return (gt - gs).pow(2).sum() / (b * b)


def nst(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """Huang & Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer" (2017).

    Squared MMD with the polynomial kernel ``k(x, y) = (xᵀy)²`` between the sets of channels,
    each channel's spatial map L2-normalised:
    ``mean k(t_i, t_j) + mean k(s_i, s_j) − 2 mean k(s_i, t_j)``, means over the batch and all
    channel pairs (the teacher-only term is a constant, as in RepDistiller's "full" loss).
    """
    s, t = pool_to_common(student_feat, teacher_feat)
    s = F.normalize(s.float().flatten(2), dim=2)
    t = F.normalize(t.float().flatten(2), dim=2)

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (b @ a.transpose(1, 2)).pow(2).mean()

    return k(t, t).detach() + k(s, s) - 2 * k(s, t)


def vid(pred_mean: torch.Tensor, target: torch.Tensor, pred_var: torch.Tensor) -> torch.Tensor:
    """Ahn et al., "Variational Information Distillation for Knowledge Transfer" (CVPR 2019).

    Negative log-likelihood of the teacher's features under a Gaussian with the student-predicted
    mean μ (a 1×1-conv regressor) and a learned per-channel variance σ² (heteroscedastic in
    channels, homoscedastic in space), up to the constant ``log √(2π)``:
    ``mean( ½ (t − μ)² / σ² + ½ log σ² )`` over every element. ``pred_var`` has one entry per
    channel.
    """
    var = pred_var.float().view(1, -1, 1, 1)
    return (0.5 * ((pred_mean.float() - target.float()).pow(2) / var + var.log())).mean()


def ab(student_preacts: list[torch.Tensor], teacher_preacts: list[torch.Tensor],
       margin: float = 1.0) -> torch.Tensor:
    """Heo et al., "Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden
    Neurons" (AAAI 2019).

    The alternative (hinge-squared) loss that transfers the teacher's activation pattern
    ``1[t > 0]`` to the student's pre-activations s (already through the connector):
    ``Σ (s + m)² · 1[s > −m ∧ t ≤ 0] + (s − m)² · 1[s ≤ m ∧ t > 0]`` summed over elements and
    divided by B, per stage; stages are weighted ``2^(i − n + 1)`` (deepest 1, halving towards the
    input) and the total is scaled by 3/1000 (the authors' and RepDistiller's constants).
    """
    n = len(student_preacts)
    total = student_preacts[0].new_zeros((), dtype=torch.float32)
    for i, (s, t) in enumerate(zip(student_preacts, teacher_preacts)):
        s, t = s.float(), t.float()
        loss = ((s + margin).pow(2) * ((s > -margin) & (t <= 0)).float()
                + (s - margin).pow(2) * ((s <= margin) & (t > 0)).float()).sum()
        total = total + 2.0 ** (i - n + 1) * loss / s.shape[0]
    return total * 3.0 / 1000.0


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


# ============================== embeddings and relations =======================================


def cc(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """Peng et al., "Correlation Congruence for Knowledge Distillation" (ICCV 2019), as benchmarked.

    RepDistiller's version (code from the CC authors), on 128-d linear embeddings of student and
    teacher: with ``δ_i = |e_s,i − e_t,i|``, ``mean_i Σ_d δ_i,d · δ_{i+1},d`` over consecutive
    pairs of the batch. (The paper's full form matches Gaussian-kernel correlation matrices; this
    is the form whose numbers the benchmark reports.)
    """
    delta = (student_emb.float() - teacher_emb.float()).abs()
    return (delta[:-1] * delta[1:]).sum(1).mean()


def _pdist(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    sq = e.pow(2).sum(1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=d.dtype))


def rkd_distance(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """RKD's distance term: ``mean_{i,j} Huber(ψ_s(i,j), ψ_t(i,j))`` over all B² pairs (diagonal
    included, where both are 0), ``ψ(i,j) = ‖e_i − e_j‖ / μ`` with μ the mean of the *non-zero*
    distances of the batch; Huber is smooth-L1 with δ = 1. The teacher side carries no gradient."""
    s, t = student_emb.float().flatten(1), teacher_emb.float().flatten(1)
    with torch.no_grad():
        td = _pdist(t)
        td = td / td[td > 0].mean()
    sd = _pdist(s)
    sd = sd / sd[sd > 0].mean()
    return F.smooth_l1_loss(sd, td)


def rkd_angle(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """RKD's angle term: ``mean_{i,j,k} Huber(cos∠_s(j,i,k), cos∠_t(j,i,k))`` over all B³
    triplets, ``cos∠(j,i,k) = ⟨n(e_j − e_i), n(e_k − e_i)⟩`` with n the L2 normalisation (0 for
    the zero vector, so degenerate triplets count as 0)."""
    s, t = student_emb.float().flatten(1), teacher_emb.float().flatten(1)

    def angles(e: torch.Tensor) -> torch.Tensor:
        d = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
        return torch.bmm(d, d.transpose(1, 2)).flatten()

    with torch.no_grad():
        ta = angles(t)
    return F.smooth_l1_loss(angles(s), ta)


def rkd(student_emb: torch.Tensor, teacher_emb: torch.Tensor, w_dist: float = 25.0,
        w_angle: float = 50.0) -> torch.Tensor:
    """Park et al., "Relational Knowledge Distillation" (CVPR 2019).

    ``w_dist · rkd_distance + w_angle · rkd_angle`` on the penultimate embeddings (RepDistiller's
    25 and 50).
    """
    return w_dist * rkd_distance(student_emb, teacher_emb) + w_angle * rkd_angle(student_emb,
                                                                                   teacher_emb)


def pkt(student_emb: torch.Tensor, teacher_emb: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer"
    (ECCV 2018).

    With cosine similarities rescaled to [0, 1], ``K_ij = (1 + cos(e_i, e_j)) / 2``, and rows
    normalised to conditional probabilities ``P_ij = K_ij / Σ_j K_ij``:
    ``mean_{i,j} P^t_ij · log((P^t_ij + ε) / (P^s_ij + ε))`` — the mean over all B² entries (not
    the sum over j), as the authors' code does. Vectors are normalised with ``‖e‖ + ε``.
    """
    def cond_prob(e: torch.Tensor) -> torch.Tensor:
        e = e.float().flatten(1)
        e = e / (e.norm(dim=1, keepdim=True) + eps)
        e = e.masked_fill(torch.isnan(e), 0.0)
        k = (e @ e.t() + 1.0) / 2.0
        return k / k.sum(1, keepdim=True)

    ps, pt = cond_prob(student_emb), cond_prob(teacher_emb)
    return (pt * torch.log((pt + eps) / (ps + eps))).mean()


# ============================== contrastive =====================================================


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
