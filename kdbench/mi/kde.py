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

Official code: artemyk/ibsgd (``kde.py``, ``entropy_estimator``: the same bound, in Keras).
σ² is ``noise_variance`` (Saxe et al.: 0.1), in the units of the raw activations; with
``noise_relative=true`` it is ``noise_variance`` × the mean per-feature variance of T instead, so
the estimate no longer grows with the scale of the features (kdbench's option; Saxe et al. fix σ²
absolutely). For jointly Gaussian X and T = A·X the bound tends to
I(X; T + ε) = ½·log det(I + A·Σ_X·Aᵀ / σ²).

Where it works. I(X;T) = log N + mean_i log w_i with w_i = k(t_i, t_i) / Σ_j k(t_i, t_j) the weight
of sample i's own kernel in its mixture density, so the bound can never exceed log N, and it
reaches log N as soon as the probe samples are farther apart than σ: with σ² = 0.1 on
unit-variance features the audit (``docs/mi-audit.md``) finds exactly log N at d = 16 and 64 for
every continuous case — Gaussian channel, class mixture and independence alike — at N = 500 and
2000. Likewise I(T;Y) reaches H(Y) once the samples of each class are apart (+1.38 nats under
independence). The bound also takes T for a deterministic function of X: on a noisy channel or
independent T it measures the spread of T (H(T) at resolution σ), not I(X;T), whatever the
setting.
Rule: I(X;T) is flagged saturated when it is within 1 % (``base.SATURATION``) of log N; I(T;Y)
when the class-conditional terms Σ_y p(y)·(log N_y − Î(X;T | Y=y)) are within 1 % of
Σ_y p(y)·log N_y (every class's samples apart). Either flag emits a warning; the remedies are
settings: ``project=pca|random`` with ``project_dim=k`` (a few dimensions; see
:mod:`kdbench.mi.project`), a larger ``noise_variance``, or ``noise_relative=true``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from .base import SATURATION, Estimator, check_range, flat, near_ceiling, sq_dists
from .project import METHODS, project


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
    defaults: ClassVar[dict[str, Any]] = {"noise_variance": 0.1, "noise_relative": False,
                                          "project": "none", "project_dim": 2}
    choices: ClassVar[dict[str, tuple[str, ...]]] = {"project": METHODS}

    @property
    def stochastic(self) -> bool:  # a random projection depends on the seed
        return self.settings["project"] == "random"

    def check_settings(self) -> None:
        check_range(self.name, "noise_variance", self.settings["noise_variance"], low=0,
                    open_low=True)
        check_range(self.name, "project_dim", self.settings["project_dim"], low=1)

    def _estimate(self, t, x, y, *, seed, device):
        s = self.settings
        t, info = project(t, s["project"], s["project_dim"], seed, self.name)
        t = t.double()
        n, d = t.shape
        var = s["noise_variance"]
        if s["noise_relative"]:
            scale = float(t.var(0).mean())
            var = var * scale if scale > 0 else var
        h_t = kde_entropy_upper(t, var)
        h_noise = 0.5 * d * (math.log(2.0 * math.pi * var) + 1.0)
        h_t_given_y, class_headroom, class_ceiling, h_y = 0.0, 0.0, 0.0, 0.0
        for label in torch.unique(y):
            mask = y == label
            p, n_y = float(mask.double().mean()), int(mask.sum())
            h_class = kde_entropy_upper(t[mask], var)
            h_t_given_y += p * h_class
            h_y -= p * math.log(p)
            if n_y > 1:
                class_headroom += p * (math.log(n_y) - (h_class - h_noise))
                class_ceiling += p * math.log(n_y)
        i_xt, i_ty = h_t - h_noise, h_t - h_t_given_y
        details: dict[str, Any] = {
            "h_t": h_t, "h_t_given_x": h_noise, "h_t_given_y": h_t_given_y, **info,
            "noise_variance_used": var, "ceiling_xt": math.log(n), "ceiling_ty": h_y,
            "saturated_xt": near_ceiling(i_xt, math.log(n)),
            "saturated_ty": class_ceiling > 0 and class_headroom < SATURATION * class_ceiling}
        regime = []
        if details["saturated_xt"] or details["saturated_ty"]:
            d2 = sq_dists(t)
            iu = torch.triu_indices(n, n, offset=1)
            details["median_sq_distance"] = float(d2[iu[0], iu[1]].median())
            why = (f"the probe samples are apart at noise variance {var:.3g} (median squared "
                   f"distance {details['median_sq_distance']:.3g}, d = {d})")
            fix = ("project=pca project_dim=2..4, a larger noise_variance or "
                   "noise_relative=true, or another estimator (recon, infonce)")
            if details["saturated_xt"]:
                regime.append(f"I(X;T) = {i_xt:.4f} is within {SATURATION:.0%} of its ceiling "
                              f"log N = {math.log(n):.4f}: {why}, so it measures N, not the "
                              f"features; use {fix}")
            if details["saturated_ty"]:
                regime.append(f"I(T;Y) = {i_ty:.4f}: the samples of every class are apart "
                              f"({why}), so it is H(Y) = {h_y:.4f} minus the headroom of "
                              f"I(X;T) by construction; use {fix}")
        details["regime"] = regime
        return i_xt, i_ty, details
