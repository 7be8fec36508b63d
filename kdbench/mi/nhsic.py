"""``nhsic``: the normalised HSIC of the HSIC bottleneck, a dependence score (not nats).

Ma, Lewis & Kleijn ("The HSIC Bottleneck: Deep Learning without Back-Propagation", AAAI 2020;
official code choasma/HSIC-bottleneck, ``source/hsicbt/math/hsic.py``, ``hsic_normalized_cca``,
called by ``hsic_objective`` in ``core/train_misc.py``) normalise HSIC by the kernels themselves,
after Fukumizu, Gretton, Sun & Schölkopf ("Kernel measures of conditional dependence", NIPS 2007;
the HS norm of the normalised cross-covariance operator, NOCCO):

    nHSIC(A, B) = tr(R_A R_B),   R_A = G_A (G_A + ε N I)⁻¹,   G_A = H K_A H,  H = I − 11ᵀ/N

As ε → 0 slowly with N its population value is, for characteristic kernels, the mean square
contingency ∫∫ (p(a,b) / (p(a)p(b)) − 1)² p(a)p(b), which does not depend on the kernel
(Fukumizu et al.); with finite N it is at most min(tr R_A, tr R_B) ≤ N − 1. Official defaults:
Gaussian kernels exp(−‖a − a'‖² / (2σ²·d)) with d the feature dimension and σ = 5 (``sigma`` in
``config/*.yaml``), ε = 1e-5, labels one-hot with the same kernel.

``unbiased=true`` (kdbench's option, not in the paper) replaces the V-statistic tr(R_A R_B) =
N²·HSIC_b(R_A, R_B) by N²·HSIC_u(R_A, R_B), Song et al.'s unbiased HSIC (JMLR 2012; see
:func:`kdbench.mi.cka.hsic_unbiased`) on the normalised Gram matrices. R is itself estimated from
the data, so this is a bias correction rather than an exactly unbiased estimator: it removes the
diagonal (leverage) term, whose permutation mean under independence, tr(R_A)·tr(R_B)/(N − 1),
dominates the biased value at high d (``null_xt``/``null_ty`` in the details record it).

Where it works. With a narrow kernel (small σ, e.g. the median heuristic at d ≥ 16) or a small ε,
G has no eigenvalue below εN to damp, R_T approaches the projection onto all N − 1 centred
directions and every score approaches its level under independence, tr(R_T)·tr(R_B)/(N − 1).
Rule: flagged saturated, with a warning, when tr(R_T) > ``SATURATED_TRACE`` (0.5) × (N − 1).

Deliberate differences from the official code: (1) G = H K H, Fukumizu et al.'s centred Gram
matrix, where the official code centres on one side only (K·H), which makes R non-symmetric —
its sum of R_A ∘ R_Bᵀ is nevertheless the same number (the tests check it against a numpy
transcription of the official formula);
(2) float64 instead of float32, and R through an eigendecomposition rather than an explicit
inverse; (3) labels one-hot over the classes present in the probe set (official: 10 classes; it
only changes the d in the kernel width); (4) ``sigma=0`` chooses σ by the median heuristic,
σ²·d = (median pairwise distance)², the kernel of ``cka`` (the official ``sigma_estimation``
uses the median *squared* distance as σ, a different scale).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .base import Estimator, check_range, flat, pair_median, sq_dists
from .cka import centered, hsic_unbiased

#: R_T with a trace above this fraction of N − 1 is close to the projection onto every centred
#: direction: each sample is its own "feature" and tr(R_T R_X) ≈ its value under independence.
SATURATED_TRACE = 0.5


def nhsic_gram(v: torch.Tensor, sigma: float) -> tuple[torch.Tensor, float]:
    """Gaussian Gram matrix exp(−‖a − a'‖² / (2σ²·d)) of the rows of ``v`` (σ = 0: median
    heuristic, exp(−‖a − a'‖² / (2·median²)) with the median pairwise distance); also the width
    2σ²·d used."""
    v = flat(v).double()
    d2 = sq_dists(v)
    if sigma > 0:
        width = 2.0 * sigma * sigma * v.shape[1]
    else:
        width = 2.0 * pair_median(d2.sqrt()) ** 2
        if width <= 0:
            return torch.ones_like(d2), 0.0
    return torch.exp(-d2 / width), width


def normalized_gram(k: torch.Tensor, epsilon: float) -> torch.Tensor:
    """R = G (G + εN·I)⁻¹ with G = H K H, through the eigendecomposition of G (symmetric)."""
    n = k.shape[0]
    g = centered(k)
    g = 0.5 * (g + g.T)  # exact symmetry for eigh
    lam, vec = torch.linalg.eigh(g)
    lam = lam.clamp_min(0.0)  # a Gram matrix is PSD; negative eigenvalues are rounding
    return (vec * (lam / (lam + epsilon * n))) @ vec.T


def nocco(r_a: torch.Tensor, r_b: torch.Tensor, unbiased: bool) -> float:
    """tr(R_A R_B), or its bias-corrected N²·HSIC_u(R_A, R_B)."""
    n = r_a.shape[0]
    if unbiased:
        return n * n * hsic_unbiased(r_a, r_b)
    return float((r_a * r_b).sum())


class NHSIC(Estimator):
    """Normalised HSIC of the HSIC bottleneck (Ma et al. 2020): tr(R_T R_X), Fukumizu's NOCCO."""

    name = "nhsic"
    unit = "score"
    kind = "dependence"
    min_samples = 10
    defaults: ClassVar[dict[str, Any]] = {"sigma": 5.0, "epsilon": 1e-5, "unbiased": False}

    def check_settings(self) -> None:
        check_range(self.name, "sigma", self.settings["sigma"], low=0)
        check_range(self.name, "epsilon", self.settings["epsilon"], low=0, open_low=True)

    def _estimate(self, t, x, y, *, seed, device):
        s = self.settings
        classes, labels = torch.unique(y, return_inverse=True)
        one_hot = torch.nn.functional.one_hot(labels, classes.numel()).double()
        grams = {}
        widths = {}
        for key, v in (("t", t), ("x", x), ("y", one_hot)):
            k, widths[key] = nhsic_gram(v, s["sigma"])
            grams[key] = normalized_gram(k, s["epsilon"])
        r_t, r_x, r_y = grams["t"], grams["x"], grams["y"]
        n = r_t.shape[0]
        tr = {key: float(r.trace()) for key, r in grams.items()}
        saturated = tr["t"] > SATURATED_TRACE * (n - 1)
        details: dict[str, Any] = {
            "width_t": widths["t"], "width_x": widths["x"], "width_y": widths["y"],
            "trace_r_t": tr["t"], "trace_r_x": tr["x"], "trace_r_y": tr["y"],
            # the permutation mean of tr(R_A R_B) under independence (centred R_A, R_B)
            "null_xt": tr["t"] * tr["x"] / (n - 1), "null_ty": tr["t"] * tr["y"] / (n - 1),
            "saturated_xt": saturated, "saturated_ty": saturated, "regime": []}
        if saturated:
            details["regime"].append(
                f"the normalised Gram matrix of T passes {tr['t']:.0f} of the N − 1 = {n - 1} "
                f"centred directions (tr R_T > {SATURATED_TRACE:g}·(N − 1)): the εN regulariser "
                f"no longer smooths, so both scores sit near their level under independence "
                f"({details['null_xt']:.3g}, {details['null_ty']:.3g}); raise sigma or epsilon, "
                f"or project the features")
        return nocco(r_t, r_x, s["unbiased"]), nocco(r_t, r_y, s["unbiased"]), details
