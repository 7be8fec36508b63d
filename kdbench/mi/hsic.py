"""``hsic``: normalised HSIC, a kernel dependence score in [0, 1] (not nats).

HSIC (Gretton et al., ALT 2005) with the biased estimator HSIC(A, B) = tr(K H L H) / (N−1)²,
H = I − 11ᵀ/N, normalised as in the HSIC bottleneck (Ma, Lewis & Kleijn, AAAI 2020):

    nHSIC(A, B) = HSIC(A, B) / sqrt(HSIC(A, A) · HSIC(B, B))

(the (N−1)² cancels). X and T use Gaussian kernels exp(−‖a − a'‖² / 2σ²) with σ = ``sigma_factor``
× the median pairwise distance (the median heuristic); the labels use the delta kernel
1[y = y'] (a linear kernel on one-hot labels). 0 means no dependence the kernels can see; the
score is not a number of nats and is only comparable within one estimator and layer.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..errors import ConfigError
from .base import Estimator, sq_dists


def gaussian_gram(v: torch.Tensor, sigma_factor: float) -> tuple[torch.Tensor, float]:
    """Gaussian Gram matrix with the median-heuristic width; also the width used."""
    d2 = sq_dists(v)
    n = d2.shape[0]
    iu = torch.triu_indices(n, n, offset=1, device=d2.device)
    median = float(d2[iu[0], iu[1]].sqrt().median())
    sigma = sigma_factor * median
    if sigma <= 0:  # all samples identical: a constant kernel, no dependence to measure
        return torch.ones_like(d2), 0.0
    return torch.exp(-d2 / (2.0 * sigma * sigma)), sigma


def centered(k: torch.Tensor) -> torch.Tensor:
    return k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()


def nhsic(k: torch.Tensor, l: torch.Tensor) -> float:
    """Normalised HSIC of two Gram matrices (0 when either is constant)."""
    kc, lc = centered(k), centered(l)
    denom = float(((kc * kc).sum() * (lc * lc).sum()).sqrt())
    return float((kc * lc).sum()) / denom if denom > 0 else 0.0


class HSIC(Estimator):
    """Normalised HSIC dependence score (Gaussian kernels, median heuristic; delta kernel on Y)."""

    name = "hsic"
    unit = "score"
    kind = "dependence"
    min_samples = 10
    defaults: ClassVar[dict[str, Any]] = {"sigma_factor": 1.0}

    def _estimate(self, t, x, y, *, seed, device):
        factor = self.settings["sigma_factor"]
        if not factor > 0:
            raise ConfigError(f"hsic sigma_factor must be > 0, got {factor}")
        kt, sigma_t = gaussian_gram(t, factor)
        kx, sigma_x = gaussian_gram(x, factor)
        ly = (y[:, None] == y[None, :]).double()
        return nhsic(kx, kt), nhsic(kt, ly), {"sigma_t": sigma_t, "sigma_x": sigma_x}
