"""Pure functional core of the modern logit losses (2022-2025): tensors in, unweighted terms out.

DIST, logit standardisation, CTKD's curriculum temperature, MLKD, NKD, TTM/WTTM and RLD, each
following its authors' released code (the repository is named in each docstring, with the file
the numbers come from); where that code differs from the paper's prose, the docstring says so and
says which one is followed. The loss plugins (:mod:`.modern_logit`) own the weights, the epoch
schedules and the learnable temperature.

Conventions as in :mod:`.functional`: ``B`` is the batch size and ``C`` the number of classes;
logits are (B, C); every function computes in float32 whatever the autocast dtype of its inputs.
A temperature may be a float or a 0-dim tensor (CTKD's learnable one).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["MLKD_TEMPERATURES", "confidence_fractions", "ctkd_lambda", "curriculum_temperature",
           "dist", "dist_relations", "gradient_reversal", "mlkd", "mlkd_batch", "mlkd_class",
           "mlkd_instance", "nkd", "pearson", "rld", "rld_mcd", "rld_scd", "standardize", "ttm",
           "ttm_log_target", "wttm"]

Temperature = float | torch.Tensor


# ============================== logit standardisation (LS) =====================================


def standardize(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Sun et al., "Logit Standardization in Knowledge Distillation" (CVPR 2024): the Z-score.

    ``(z − mean_c z) / (ε + std_c z)`` per sample, with the *unbiased* standard deviation
    (``torch.std``'s default, divisor C − 1) and ε = 1e-7 added to it, as the official
    ``normalize`` (sunshangquan/logit-standardization-KD, ``mdistiller/distillers/KD.py``
    lines 7-10). Applied to student and teacher alike, before the temperature; the paper's
    "base temperature" is then the ordinary ``T`` of the loss (2 in the official runs). The
    student's side is differentiated through, as in the official code.
    """
    z = logits.float()
    return (z - z.mean(dim=1, keepdim=True)) / (eps + z.std(dim=1, keepdim=True))


# ============================== CTKD: curriculum temperature ====================================


def ctkd_lambda(epoch: int, loops: int = 10) -> float:
    """CTKD's gradient-reversal strength λ ∈ [0, 1] for a 0-based ``epoch``.

    ``λ = (1 − cos(π · min(epoch + 1, loops) / loops)) / 2``: a cosine ramp from 0 that reaches 1
    after ``loops`` epochs and stays there. The official ``CosineDecay(max 0, min −1, loops 10)``
    (zhengli97/CTKD ``train_student.py`` lines 186-202, called with the 1-based epoch at line
    419) returns −λ, and its gradient-reversal layer multiplies the gradient by that value
    (``models/temp_global.py`` line 38, *not* by −value as its docstring says): the net effect
    is the gradient reversed with strength λ, which is how this function and
    :func:`gradient_reversal` split it. The first epoch already has λ = (1 − cos(π/10))/2 ≈ 0.024.
    """
    i = min(max(epoch + 1, 0), loops)
    return (1.0 - math.cos(math.pi * i / loops)) / 2.0


def gradient_reversal(x: torch.Tensor, strength: float) -> torch.Tensor:
    """Identity forward, gradient multiplied by ``−strength`` backward (Ganin & Lempitsky 2015).

    Written as ``x̄ − s·(x − x̄)`` with ``x̄ = x.detach()``: the forward value is exactly ``x``
    (``x − x̄`` is exactly 0), the derivative is ``−s``; no custom autograd function needed.
    """
    base = x.detach()
    return base - strength * (x - base)


def curriculum_temperature(theta: torch.Tensor, strength: float, t_start: float = 1.0,
                           t_end: float = 20.0) -> torch.Tensor:
    """Li et al., "Curriculum Temperature for Knowledge Distillation" (AAAI 2023), global form.

    ``T = t_start + t_end · σ(GRL_λ(θ))`` (zhengli97/CTKD ``helper/loops.py`` lines 132-135):
    T ∈ (1, 21) with the official t_start = 1, t_end = 20; θ is one learnable scalar
    (``Global_T``, initialised to 1, so T starts at 1 + 20·σ(1) ≈ 15.6). Through the reversal
    the student's optimiser moves θ to *increase* the distillation loss, with strength λ.
    Returned as a 0-dim tensor.
    """
    return (t_start + t_end * torch.sigmoid(gradient_reversal(theta, strength))).reshape(())


# ============================== DIST ============================================================


def pearson(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Row-wise Pearson correlation as DIST computes it: the cosine of the centred rows with ε
    added to the product of the norms (not a clamp)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_relations(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                   T: Temperature = 4.0) -> tuple[torch.Tensor, torch.Tensor]:
    """DIST's two relation losses ``(inter, intra)``, each already ×T².

    With ``Y = softmax(z/T)`` (B × C): inter-class = ``1 − mean_i ρ(Y_s[i,:], Y_t[i,:])`` (each
    sample's class distribution), intra-class = ``1 − mean_c ρ(Y_s[:,c], Y_t[:,c])`` (each
    class's scores across the batch), ρ the Pearson correlation of :func:`pearson`.
    """
    y_s = F.softmax(student_logits.float() / T, dim=1)
    y_t = F.softmax(teacher_logits.float() / T, dim=1)
    inter = 1.0 - pearson(y_s, y_t).mean()
    intra = 1.0 - pearson(y_s.t(), y_t.t()).mean()
    return inter * (T * T), intra * (T * T)


def dist(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 1.0,
         gamma: float = 1.0, T: Temperature = 4.0) -> torch.Tensor:
    """Huang et al., "Knowledge Distillation from A Stronger Teacher" (NeurIPS 2022).

    ``T² · (β · inter + γ · intra)``, see :func:`dist_relations`. Official code:
    hunto/image_classification_sota ``lib/models/losses/dist_kd.py`` (lines 4-34); CIFAR-100
    runs use ``kd: dist_t4`` (β = γ = 1, τ = 4) with CE weight 1 and DIST weight 2
    (``configs/strategies/distill/dist_cifar.yaml`` lines 34-36; ``kd_loss.py`` lines 69-71).
    """
    inter, intra = dist_relations(student_logits, teacher_logits, T)
    return beta * inter + gamma * intra


# ============================== MLKD ============================================================

#: the temperatures MLKD adds to its base T (official ``KD_ours.py``: T, 3, 5, 2, 6 in this order;
#: with LS's base temperature 2, the official code thus uses T = 2 twice and 4 not at all)
MLKD_TEMPERATURES = (3.0, 5.0, 2.0, 6.0)


def _kd_batchmean(s: torch.Tensor, t: torch.Tensor, T: Temperature) -> torch.Tensor:
    log_p_s = F.log_softmax(s / T, dim=1)
    log_p_t = F.log_softmax(t / T, dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(1).mean() * (T * T)


def mlkd_instance(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: Temperature,
                  standardize_logits: bool = False) -> torch.Tensor:
    """MLKD's instance-level term at one temperature: ``T² · mean_i KL(p_t,i ‖ p_s,i)`` (no T² is
    missing: the official ``kd_loss`` multiplies by T²). With ``standardize_logits`` the logits
    are Z-scored first (LS applies it to this level only)."""
    s, t = student_logits.float(), teacher_logits.float()
    if standardize_logits:
        s, t = standardize(s), standardize(t)
    return _kd_batchmean(s, t, T)


def mlkd_class(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
               T: Temperature) -> torch.Tensor:
    """MLKD's class-level term: ``‖P_tᵀP_t − P_sᵀP_s‖²_F / C`` with ``P = softmax(z/T)`` (B × C),
    i.e. the C × C class-correlation matrices (official ``cc_loss``; no T² factor)."""
    p_s = F.softmax(student_logits.float() / T, dim=1)
    p_t = F.softmax(teacher_logits.float() / T, dim=1)
    return (p_t.t() @ p_t - p_s.t() @ p_s).pow(2).sum() / p_s.shape[1]


def mlkd_batch(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
               T: Temperature) -> torch.Tensor:
    """MLKD's batch-level term: ``‖P_tP_tᵀ − P_sP_sᵀ‖²_F / B``, the B × B input-correlation
    matrices (official ``bc_loss``; no T² factor)."""
    p_s = F.softmax(student_logits.float() / T, dim=1)
    p_t = F.softmax(teacher_logits.float() / T, dim=1)
    return (p_t @ p_t.t() - p_s @ p_s.t()).pow(2).sum() / p_s.shape[0]


def confidence_fractions(teacher_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The factors by which MLKD's official confidence masks *scale* its weak-view terms.

    The official code builds ``mask = conf ≤ median(conf)`` over the samples (conf = the teacher's
    top-1 probability) and ``class_mask = Σ_i p_t,ic ≤ median`` over the classes (``KD_ours.py``
    lines 98-111; ``np.percentile(·, 50)``, linear interpolation, which ``torch.quantile``
    reproduces), then multiplies a loss that is *already a batch mean* (``reduce=True``; the
    ``reduce=False`` argument is commented out) by the mask and takes ``.mean()``: the result is
    the loss times the fraction of ones in the mask, not a selection of samples. This returns
    those two fractions (sample mask, class mask), each ≥ ½.
    """
    p_t = F.softmax(teacher_logits.detach().float(), dim=1)
    conf = p_t.max(dim=1).values
    per_class = p_t.sum(dim=0)
    sample = (conf <= torch.quantile(conf, 0.5)).float().mean()
    klass = (per_class <= torch.quantile(per_class, 0.5)).float().mean()
    return sample, klass


def mlkd(student_weak: torch.Tensor, teacher_weak: torch.Tensor,
         student_strong: torch.Tensor | None = None, teacher_strong: torch.Tensor | None = None,
         *, T: float = 4.0, standardize_logits: bool = False,
         variant: str = "official") -> dict[str, torch.Tensor]:
    """Jin et al., "Multi-Level Logit Distillation" (CVPR 2023): ``{instance, class, batch}``.

    Each level sums its term (:func:`mlkd_instance`, :func:`mlkd_class`, :func:`mlkd_batch`) over
    the temperatures ``𝒯 = (T, 3, 5, 2, 6)`` (the paper's prediction augmentation). Official
    code: Jin-Ying/Multi-Level-Logit-Distillation ``mdistiller/distillers/KD_ours.py`` (two views;
    identical to ``MLKD.py`` in the LS and RLD repositories, which add LS to the instance level
    only) and, with one view, zju-SWJ/RLD ``mdistiller/distillers/MLKD_NOAUG.py``.

    ``variant="official"`` reproduces that code, quirks included:

    * the confidence masks *scale* the weak-view terms (instance and batch by the sample-mask
      fraction, class by the class-mask fraction, :func:`confidence_fractions`) rather than
      select samples or classes (``KD_ours.py`` lines 115-140, 164-185, 207-227);
    * the strong-view instance term at T, 3, 5 uses the strong logits but at 2 and 6 the *weak*
      ones (lines 142-162), unmasked;
    * strong-view class and batch terms are computed but never added to the loss
      (``loss_cc_strong``, ``loss_bc_strong``, lines 186-206 and 228-248 vs. 249-254): they are
      not computed here.

    ``variant="paper"`` is the method as the paper's equations state it: no confidence masks, and
    with a strong view every level is summed over both views, each on its own logits.
    Without a strong view (``mlkd_noaug``) the two variants differ only by the masks. The CE of
    the strong view (also in the official loss) belongs to the plugin.
    """
    if variant not in ("official", "paper"):
        raise ValueError(f"variant must be 'official' or 'paper', got {variant!r}")
    if (student_strong is None) != (teacher_strong is None):
        raise ValueError("give both strong-view logits or neither")
    temps = (float(T), *MLKD_TEMPERATURES)
    sw, tw = student_weak.float(), teacher_weak.float()

    def level(fn, s, t, **kw):
        return sum(fn(s, t, tau, **kw) for tau in temps)

    instance = level(mlkd_instance, sw, tw, standardize_logits=standardize_logits)
    klass = level(mlkd_class, sw, tw)
    batch = level(mlkd_batch, sw, tw)
    if variant == "official":
        sample_fraction, class_fraction = confidence_fractions(tw)
        instance, klass, batch = (instance * sample_fraction, klass * class_fraction,
                                  batch * sample_fraction)
    if student_strong is not None:
        ss, ts = student_strong.float(), teacher_strong.float()
        if variant == "official":
            instance = instance + sum(
                mlkd_instance(*((ss, ts) if i < 3 else (sw, tw)), tau, standardize_logits)
                for i, tau in enumerate(temps))
        else:
            instance = instance + level(mlkd_instance, ss, ts,
                                        standardize_logits=standardize_logits)
            klass = klass + level(mlkd_class, ss, ts)
            batch = batch + level(mlkd_batch, ss, ts)
    return {"instance": instance, "class": klass, "batch": batch}


# ============================== NKD =============================================================


def nkd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
        T: Temperature = 1.0, gamma: float = 1.5) -> torch.Tensor:
    """Yang et al., "From Knowledge Distillation to Self-Knowledge Distillation: A Unified
    Approach with Normalized Loss and Customized Soft Labels" (ICCV 2023): NKD.

    ``−mean_i t_i · log s_i  −  γ · T² · mean_i Σ_{c≠y_i} t̂_ic · log ŝ_ic`` where ``t_i, s_i``
    are the teacher's and student's target-class probabilities at temperature 1 (the teacher's
    a constant), and ``t̂, ŝ`` the *normalised non-target* distributions, i.e. the softmax of
    the logits at temperature T with the target class removed. Official code: yzd-v/cls_KD
    ``mmcls/models/dis_losses/nkd.py`` lines 23-51 (HEAD; before commit 9466b3f its mask removed
    no class at all). Both parts are cross-entropies, as there: the non-target part exceeds the
    corresponding KL by the teacher's entropy, a constant for the student.
    """
    s, t = student_logits.float(), teacher_logits.float()
    gt = F.one_hot(target, s.shape[1]).bool()
    s_target = F.log_softmax(s, dim=1).masked_select(gt)
    t_target = F.softmax(t, dim=1).masked_select(gt).detach()
    loss_target = -(t_target * s_target).mean()
    log_q_s = F.log_softmax((s / T).masked_fill(gt, float("-inf")), dim=1)
    q_t = F.softmax((t / T).masked_fill(gt, float("-inf")), dim=1)
    # the target column is 0 · (−inf) in the product: drop it before multiplying
    loss_non = (q_t * log_q_s.masked_fill(gt, 0.0)).sum(dim=1).mean()
    return loss_target - gamma * (T * T) * loss_non


# ============================== TTM / WTTM ======================================================


def ttm_log_target(teacher_logits: torch.Tensor, gamma: float) -> tuple[torch.Tensor,
                                                                        torch.Tensor]:
    """``(log p̃_t, U)``: the power-transformed teacher ``p̃_t = p_t^γ / U`` with
    ``U = Σ_c p_t,c^γ``, in log space (the official code raises the softmax to the power γ;
    log space gives the same numbers without underflow for tiny probabilities)."""
    powered = gamma * F.log_softmax(teacher_logits.float(), dim=1)
    log_u = torch.logsumexp(powered, dim=1)
    return powered - log_u.unsqueeze(1), log_u.exp()


def _ttm_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    log_target, u = ttm_log_target(teacher_logits, gamma)
    log_p_s = F.log_softmax(student_logits.float(), dim=1)
    return (log_target.exp() * (log_target - log_p_s)).sum(dim=1), u


def ttm(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
        gamma: float = 0.1) -> torch.Tensor:
    """Zheng & Yang, "Knowledge Distillation Based on Transformed Teacher Matching" (ICLR 2024):
    TTM.

    ``mean_i KL(p̃_t,i ‖ p_s,i)`` with the power-transformed teacher ``p̃_t ∝ p_t^γ`` (γ = 1/T,
    equal to softmax(z_t/T)) and the student at temperature 1; no T² factor. Official code:
    zkxufo/TTM ``distiller_zoo/ttm.py`` lines 13-21.
    """
    kl, _ = _ttm_kl(student_logits, teacher_logits, gamma)
    return kl.mean()


def wttm(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
         gamma: float = 0.1) -> torch.Tensor:
    """Zheng & Yang (ICLR 2024): weighted TTM.

    ``mean_i U_i · KL(p̃_t,i ‖ p_s,i)`` with the sample-adaptive weight ``U_i = Σ_c p_t,ic^γ``
    (the power sum that normalises p̃_t; large for smooth teacher outputs). Official code:
    zkxufo/TTM ``distiller_zoo/wttm.py`` lines 13-21.
    """
    kl, u = _ttm_kl(student_logits, teacher_logits, gamma)
    return (u * kl).mean()


# ============================== RLD =============================================================

#: RLD's fill value for masked logits (official ``masked_fill(mask, -1e9)``): finite, so a sample
#: whose every class is masked gets two uniform distributions and a zero term, not NaN
RLD_MASK_FILL = -1e9


def rld_scd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
            T: Temperature = 4.0) -> torch.Tensor:
    """RLD's sample-confidence distillation: ``T² · mean_i KL(b_t,i ‖ b_s,i)`` between the binary
    distributions ``b_s = [p_s,y, 1 − p_s,y]`` (the student's *target* class) and
    ``b_t = [p_t,m, 1 − p_t,m]`` (the teacher's *top* class m), at temperature T. Computed in log
    space (the official code sums masked probabilities, then takes their log)."""
    s, t = student_logits.float() / T, teacher_logits.float() / T
    gt = F.one_hot(target, s.shape[1]).bool()
    top = F.one_hot(t.argmax(dim=1), t.shape[1]).bool()

    def binary(log_p: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        log_in = log_p.masked_select(mask).view(-1, 1)
        log_out = torch.logsumexp(log_p.masked_fill(mask, float("-inf")), dim=1, keepdim=True)
        return torch.cat([log_in, log_out], dim=1)

    b_s = binary(F.log_softmax(s, dim=1), gt)
    b_t = binary(F.log_softmax(t, dim=1), top)
    return (b_t.exp() * (b_t - b_s)).sum(dim=1).mean() * (T * T)


def rld_mcd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
            T: Temperature = 4.0) -> torch.Tensor:
    """RLD's masked-correlation distillation: ``T² · mean_i KL(q_t,i ‖ q_s,i)`` where ``q`` is the
    softmax at temperature T over the classes the teacher ranks strictly *below* the target:
    every class whose teacher logit is ≥ the teacher's target logit (the target itself, and any
    class a wrong teacher prefers) is masked out for both networks (official ``_get_ge_mask``)."""
    s, t = student_logits.float() / T, teacher_logits.float() / T
    masked = teacher_logits.float() >= teacher_logits.float().gather(1, target.view(-1, 1))
    log_q_s = F.log_softmax(s.masked_fill(masked, RLD_MASK_FILL), dim=1)
    log_q_t = F.log_softmax(t.masked_fill(masked, RLD_MASK_FILL), dim=1)
    return (log_q_t.exp() * (log_q_t - log_q_s)).sum(dim=1).mean() * (T * T)


def rld(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
        alpha: float = 1.0, beta: float = 8.0, T: Temperature = 4.0,
        scd_T: Temperature | None = None, standardize_logits: bool = False) -> torch.Tensor:
    """Sun, Chen, Lyu, Chen, Chen & Wang, "Knowledge Distillation with Refined Logits" (RLD,
    arXiv 2408.07703, ICCV 2025).

    ``α · SCD(T_scd) + β · MCD(T)`` (:func:`rld_scd`, :func:`rld_mcd`); ``scd_T`` None means
    ``T``. Official code: zju-SWJ/RLD ``mdistiller/distillers/RLD.py`` lines 13-39; with
    ``standardize_logits`` both logit sets are Z-scored first (its line 14-15). The linear
    warm-up belongs to the plugin.
    """
    s, t = student_logits.float(), teacher_logits.float()
    if standardize_logits:
        s, t = standardize(s), standardize(t)
    scd = rld_scd(s, t, target, T if scd_T is None else scd_T)
    return alpha * scd + beta * rld_mcd(s, t, target, T)
