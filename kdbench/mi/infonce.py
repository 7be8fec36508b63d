"""``infonce``: the InfoNCE lower bound with a learned critic.

InfoNCE (van den Oord et al., 2018; the bound I_NCE of Poole et al., ICML 2019): for a batch of
B pairs (a_i, b_i) and a critic f,

    I(A;B) ≥ E[ (1/B)·Σ_i log( e^{f(a_i, b_i)} / ((1/B)·Σ_j e^{f(a_i, b_j)}) ) ]

which can never exceed log B (flagged as saturated, with a warning, when the estimate is within
1 % of log B: the true I may be far above it). The critic is separable, f(a, b) = g(a)ᵀh(b)
(Poole et al.'s choice): g and h are MLPs with ``layers`` hidden layers of ``hidden`` ReLU units
and a ``embed``-dimensional output; for labels h is a learned vector per class. The critic is
trained on minibatches with Adam (Poole et al.: lr 5e-4) and the bound is evaluated on the
held-out split as one batch (B = its size, so the ceiling is log B); the reported value is the
best held-out bound (early stopping). Inputs are standardised per feature with the training
split's statistics.
``threads`` (default 1; 0 keeps torch's setting) is the number of CPU threads the small
networks train with: one is the fastest for them; raise it for conv decoders on large maps.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from .base import SATURATION, Estimator, flat, near_ceiling, split_indices
from .training import fit_early_stopping, standardize


def infonce(scores: torch.Tensor) -> torch.Tensor:
    """InfoNCE bound (nats) from a B×B critic matrix whose diagonal holds the positive pairs."""
    b = scores.shape[0]
    return (scores.diagonal() - torch.logsumexp(scores, dim=1)).mean() + math.log(b)


def mlp(d_in: int, hidden: int, layers: int, d_out: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    for _ in range(layers):
        mods += [nn.Linear(d_in, hidden), nn.ReLU()]
        d_in = hidden
    return nn.Sequential(*mods, nn.Linear(d_in, d_out))


class InfoNCE(Estimator):
    """InfoNCE lower bound, learned separable critic g(a)ᵀh(b) (van den Oord 2018, Poole 2019)."""

    name = "infonce"
    unit = "nats"
    kind = "lower bound"
    stochastic = True
    min_samples = 20
    defaults: ClassVar[dict[str, Any]] = {
        "holdout": 0.2, "lr": 5e-4, "epochs": 200, "patience": 20, "batch_size": 128,
        "hidden": 256, "threads": 1, "layers": 2, "embed": 32}

    def _estimate(self, t, x, y, *, seed, device):
        s = self.settings
        t, x = t.float(), x.float()  # the networks train in float32
        train, held = split_indices(t.shape[0], s["holdout"], seed)
        train, held = train.to(device), held.to(device)
        ts = standardize(flat(t), train)[0]
        xs = standardize(flat(x), train)[0]
        classes, labels = torch.unique(y, return_inverse=True)
        i_xt, e_xt = self._bound(ts, mlp(xs.shape[1], s["hidden"], s["layers"], s["embed"]), xs,
                                 train, held, seed, "I(X;T) critic")
        i_ty, e_ty = self._bound(ts, nn.Embedding(classes.numel(), s["embed"]), labels,
                                 train, held, seed + 1, "I(T;Y) critic")
        log_b = math.log(held.numel())
        p = torch.bincount(labels).double() / labels.numel()
        h_y = float(-(p[p > 0] * p[p > 0].log()).sum())
        details: dict[str, Any] = {
            "critic_epoch_xt": e_xt, "critic_epoch_ty": e_ty, "log_batch": log_b,
            "n_train": int(train.numel()), "n_heldout": int(held.numel()),
            "ceiling_xt": log_b, "ceiling_ty": min(log_b, h_y),
            "saturated_xt": near_ceiling(i_xt, log_b), "saturated_ty": False, "regime": []}
        if details["saturated_xt"]:
            details["regime"].append(
                f"I(X;T) = {i_xt:.4f} is within {SATURATION:.0%} of the bound's ceiling log B = "
                f"{log_b:.4f} (B = {held.numel()} held-out samples): the true value may be "
                f"much larger; raise --samples (B = holdout × samples)")
        return i_xt, i_ty, details

    def _bound(self, t, h_net: nn.Module, b, train, held, seed, what) -> tuple[float, int]:
        s = self.settings
        g_net = mlp(t.shape[1], s["hidden"], s["layers"], s["embed"])
        critic = nn.ModuleList([g_net, h_net]).to(t.device)

        def bound(idx: torch.Tensor) -> torch.Tensor:
            return infonce(g_net(t[idx]) @ h_net(b[idx]).T)

        fit = fit_early_stopping(
            critic, lambda idx: -bound(idx), lambda: (float(bound(held)), None), train,
            lr=s["lr"], epochs=s["epochs"], patience=s["patience"], batch_size=s["batch_size"],
            seed=seed, what=f"{self.name} {what}", maximize=True)
        return fit.best, fit.epoch
