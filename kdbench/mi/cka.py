"""``cka``: kernel centered alignment of T with X and with Y, a dependence score (not nats).

Centered kernel alignment (Cortes, Mohri & Rostamizadeh, "Algorithms for learning kernels based
on centered alignment", JMLR 2012; as a similarity of representations: Kornblith, Norouzi, Lee &
Hinton, "Similarity of neural network representations revisited", ICML 2019, official code
google-research/google-research ``representation_similarity``):

    CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) · HSIC(L, L))

with HSIC (Gretton, Bousquet, Smola & Schölkopf, ALT 2005) estimated either by the biased
V-statistic HSIC_b = tr(K H L H) / N², H = I − 11ᵀ/N (Kornblith et al.'s default; the N² cancels),
or — ``unbiased=true`` — by the unbiased U-statistic of Song, Smola, Gretton, Bedo & Borgwardt
("Feature selection via dependence maximization", JMLR 2012, eq. 5), with K̃, L̃ the Gram
matrices with their diagonals set to zero:

    HSIC_u = [tr(K̃ L̃) + (1ᵀK̃1)(1ᵀL̃1) / ((N−1)(N−2)) − 2/(N−2) · 1ᵀK̃L̃1] / (N(N−3))

(Kornblith et al.'s ``debiased=True`` gives the same ratio through U-centred Gram matrices).
X and T use Gaussian kernels exp(−‖a − a'‖² / 2σ²) with σ = ``sigma_factor`` × the median pairwise
distance over pairs i < j (Kornblith et al.'s ``gram_rbf`` threshold, default 1; their median
runs over all N² squared distances, diagonal zeros included, which makes σ slightly smaller);
Y uses the delta kernel 1[y = y'].

Where it works. The biased score is not 0 under independence: its mean grows with the effective
dimension of the kernels over N (0.18 at d = 64, N = 500 for independent Gaussians, see
``docs/mi-audit.md``), so at high d it rises and falls with the features' spectrum as much as with
their dependence on X. The unbiased score is centred at 0 under independence (and can be slightly
negative). Neither is a number of nats; compare scores within one estimator, layer and N only.

Earlier kdbench registered this estimator as ``hsic`` and credited it to Ma et al.'s normalised
HSIC; that name stays as a deprecated alias that warns. The HSIC bottleneck's own normalisation
is ``nhsic`` (:mod:`kdbench.mi.nhsic`).
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch

from .base import Estimator, check_range, pair_median, sq_dists


def gaussian_gram(v: torch.Tensor, sigma_factor: float) -> tuple[torch.Tensor, float]:
    """Gaussian Gram matrix with the median-heuristic width; also the width used."""
    d2 = sq_dists(v)
    median = pair_median(d2.sqrt())
    sigma = sigma_factor * median
    if sigma <= 0:  # all samples identical: a constant kernel, no dependence to measure
        return torch.ones_like(d2), 0.0
    return torch.exp(-d2 / (2.0 * sigma * sigma)), sigma


def delta_gram(y: torch.Tensor) -> torch.Tensor:
    """The delta kernel on labels, 1[y = y'] (a linear kernel on one-hot labels)."""
    return (y[:, None] == y[None, :]).double()


def centered(k: torch.Tensor) -> torch.Tensor:
    """H K H, H = I − 11ᵀ/N: the Gram matrix of the centred features."""
    return k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()


def hsic_biased(k: torch.Tensor, l: torch.Tensor) -> float:
    """HSIC_b = tr(K H L H) / N² (Gretton et al. 2005, with Song et al.'s 1/N²)."""
    n = k.shape[0]
    return float((centered(k) * l).sum()) / (n * n)


def hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> float:
    """HSIC_u, the unbiased U-statistic of Song et al. (JMLR 2012, eq. 5); needs N ≥ 4."""
    n = k.shape[0]
    kt = k - torch.diag_embed(k.diagonal())
    lt = l - torch.diag_embed(l.diagonal())
    k_row, l_row = kt.sum(1), lt.sum(1)
    value = ((kt * lt).sum() + kt.sum() * lt.sum() / ((n - 1) * (n - 2))
             - 2.0 / (n - 2) * (k_row * l_row).sum())
    return float(value) / (n * (n - 3))


def alignment(k: torch.Tensor, l: torch.Tensor, unbiased: bool) -> float:
    """CKA of two Gram matrices (0 when either has no centred variation)."""
    hsic = hsic_unbiased if unbiased else hsic_biased
    denom = hsic(k, k) * hsic(l, l)
    return hsic(k, l) / denom ** 0.5 if denom > 0 else 0.0


class CKA(Estimator):
    """Kernel CKA of T with X and with Y (Gaussian kernels, median heuristic; delta kernel on Y)."""

    name = "cka"
    unit = "score"
    kind = "dependence"
    min_samples = 10
    defaults: ClassVar[dict[str, Any]] = {"sigma_factor": 1.0, "unbiased": False}

    def check_settings(self) -> None:
        check_range(self.name, "sigma_factor", self.settings["sigma_factor"], low=0,
                    open_low=True)

    def _estimate(self, t, x, y, *, seed, device):
        factor, unbiased = self.settings["sigma_factor"], self.settings["unbiased"]
        kt, sigma_t = gaussian_gram(t, factor)
        kx, sigma_x = gaussian_gram(x, factor)
        ly = delta_gram(y)
        return alignment(kx, kt, unbiased), alignment(kt, ly, unbiased), {
            "sigma_t": sigma_t, "sigma_x": sigma_x}


class HSICAlias(CKA):
    """Deprecated alias of cka: kernel CKA HSIC(T,X)/√(HSIC(T,T)·HSIC(X,X)), not nHSIC.

    Ma et al.'s normalised HSIC is ``nhsic``; creating this one emits a ``FutureWarning``.
    """

    name = "hsic"

    def __init__(self, **settings: Any) -> None:
        warnings.warn("kdbench: MI estimator 'hsic' is kernel CKA and is now named 'cka' "
                      "(Ma et al.'s normalised HSIC is 'nhsic'); 'hsic' will be removed",
                      FutureWarning, stacklevel=2)
        super().__init__(**settings)
