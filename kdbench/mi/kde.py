"""``kde``: the pairwise-distance upper bound on the entropy of noisy activations.

Kolchinsky & Tracey (Entropy 2017, "Estimating mixture entropy with pairwise distances"), as used
by Saxe et al. (ICLR 2018): the layer is read as T + ε with Gaussian noise ε ~ N(0, σ²·I), so the
N probe activations t_i define a mixture of N Gaussians whose entropy has the KL-based upper bound

    Ĥ(T) = d/2 − (1/N)·Σ_i log[(1/N)·Σ_j N(t_i; t_j, σ²I)]
         = d/2 − (1/N)·Σ_i [logsumexp_j(−‖t_i − t_j‖² / 2σ²) − log N − (d/2)·log(2πσ²)]

With T a deterministic function of X, H(T | X) is the noise entropy (d/2)·(log(2πσ²) + 1), and
by class, H(T | Y) = Σ_y p(y)·Ĥ(T | Y = y) (the same bound on each class's samples):

    I(X;T) = Ĥ(T) − (d/2)·(log(2πσ²) + 1)          (an upper bound, at most log N)
    I(T;Y) = Ĥ(T) − Σ_y p(y)·Ĥ(T | Y = y)

σ² is ``noise_variance`` (Saxe et al.: 0.1), in the units of the raw activations. For jointly
Gaussian X and T = A·X the bound tends to I(X; T + ε) = ½·log det(I + A·Σ_X·Aᵀ / σ²).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from ..errors import ConfigError
from .base import Estimator, flat, sq_dists


def kde_entropy_upper(t: torch.Tensor, var: float) -> float:
    """Kolchinsky–Tracey upper bound (nats) on the entropy of the mixture of N(t_i, var·I)."""
    n, d = t.shape[0], flat(t).shape[1]
    dists = sq_dists(t)
    lprobs = (torch.logsumexp(-dists / (2.0 * var), dim=1) - math.log(n)
              - 0.5 * d * math.log(2.0 * math.pi * var))
    return float(0.5 * d - lprobs.mean())


class KDE(Estimator):
    """Kolchinsky–Tracey pairwise-distance upper bound with Gaussian noise (Saxe et al. 2018)."""

    name = "kde"
    unit = "nats"
    kind = "upper bound"
    min_samples = 10
    defaults: ClassVar[dict[str, Any]] = {"noise_variance": 0.1}

    def _estimate(self, t, x, y, *, seed, device):
        var = self.settings["noise_variance"]
        if not var > 0:
            raise ConfigError(f"kde noise_variance must be > 0, got {var}")
        d = flat(t).shape[1]
        h_t = kde_entropy_upper(t, var)
        h_t_given_x = 0.5 * d * (math.log(2.0 * math.pi * var) + 1.0)
        h_t_given_y = 0.0
        for label in torch.unique(y):
            mask = y == label
            h_t_given_y += float(mask.double().mean()) * kde_entropy_upper(t[mask], var)
        return h_t - h_t_given_x, h_t - h_t_given_y, {
            "h_t": h_t, "h_t_given_x": h_t_given_x, "h_t_given_y": h_t_given_y, "dims": d}
