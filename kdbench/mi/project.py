"""Projecting features to a few dimensions before a density-based estimator (``kde``, ``binning``).

Binning and kernel density estimates need a number of samples exponential in the dimension: at
d ≥ 16 and N in the thousands every probe sample has its own bin (``binning``) or its own kernel
(``kde``), and both report log N whatever the data. The standard remedy is to estimate on a
low-dimensional projection of T (random projections are what sliced MI averages over, Goldfeld &
Greenewald, NeurIPS 2021; PCA keeps the directions of most variance):

- ``pca``: the top ``dim`` principal components of T (centred; deterministic given T);
- ``random``: ``dim`` orthonormal directions drawn from the Haar measure (QR of a seeded Gaussian
  matrix), so the estimate depends on the seed and ``--repeats`` measures its spread.

A projection is a function of T, so by the data-processing inequality the MI of the projected
features is at most that of T: the estimate is then of I(X; PT) and I(PT; Y), a lower value by
construction, comparable across checkpoints only at the same ``dim``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from .base import flat

METHODS = ("none", "pca", "random")


def project(t: torch.Tensor, method: str, dim: int, seed: int, name: str
            ) -> tuple[torch.Tensor, dict[str, Any]]:
    """``t`` (N, ...) flattened and projected to (N, ``dim``) by ``method``, with diagnostics
    (``dims_in``, ``dims``, and for ``pca`` the fraction of the variance kept)."""
    v = flat(t)
    d = v.shape[1]
    if method == "none":
        return v, {"dims_in": d, "dims": d}
    if not 1 <= dim <= d:
        raise ConfigError(f"MI estimator {name!r} setting project_dim={dim} must be between 1 "
                          f"and the feature dimension {d}")
    work = v.double()
    if method == "pca":
        centred = work - work.mean(0, keepdim=True)
        # the right singular vectors of the centred data are the principal axes
        _, s, vh = torch.linalg.svd(centred, full_matrices=False)
        total = float((s * s).sum())
        kept = float((s[:dim] * s[:dim]).sum()) / total if total > 0 else 1.0
        return (centred @ vh[:dim].T).to(v.dtype), {"dims_in": d, "dims": dim,
                                                    "pca_variance_kept": kept}
    g = torch.Generator().manual_seed(int(seed) * 9973 + 17)
    gauss = torch.randn(d, dim, generator=g, dtype=torch.float64).to(v.device)
    q, r = torch.linalg.qr(gauss)
    q = q * torch.sign(torch.diagonal(r))  # sign fix: Haar-distributed, not QR-convention-biased
    return (work @ q).to(v.dtype), {"dims_in": d, "dims": dim}
