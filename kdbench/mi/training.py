"""The one small training loop the trained estimators share: Adam, minibatches, early stopping
on a held-out objective, and divergence reported as :class:`EstimatorDiverged`."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .base import EstimatorDiverged

#: A minibatch loss this many times larger (in magnitude) than the first one, or non-finite,
#: counts as divergence: early stopping would otherwise quietly fall back to the untrained
#: baseline and report "no information".
DIVERGENCE_FACTOR = 1e4


@dataclass
class Fit:
    """Outcome of :func:`fit_early_stopping`: the held-out value before training and at best."""

    initial: float
    best: float
    epoch: int
    extra: Any


def fit_early_stopping(model: nn.Module, train_loss: Callable[[torch.Tensor], torch.Tensor],
                       heldout: Callable[[], tuple[float, Any]], train_idx: torch.Tensor, *,
                       lr: float, epochs: int, patience: int, batch_size: int, seed: int, what: str,
                       maximize: bool = False) -> Fit:
    """Train ``model``, leave it at its best held-out state and return a :class:`Fit`.

    ``train_loss(idx)`` is the minibatch loss on ``idx``, a shuffled slice of ``train_idx``;
    ``heldout()`` returns (value, extra) on the held-out split, evaluated before training (epoch 0)
    and after every epoch; training stops ``patience`` epochs after the last improvement. A
    non-finite or exploding (``DIVERGENCE_FACTOR``) training loss, or a non-finite held-out value,
    raises :class:`EstimatorDiverged` naming ``what`` and the epoch.
    """
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    sign = -1.0 if maximize else 1.0

    def evaluate(epoch: int) -> tuple[float, Any]:
        model.eval()
        with torch.no_grad():
            value, extra = heldout()
        model.train()
        if not math.isfinite(value):
            raise EstimatorDiverged(f"{what} diverged: non-finite held-out value at epoch "
                                    f"{epoch} (lr {lr:g})")
        return value, extra

    best, extra = evaluate(0)
    initial = best
    best_epoch, best_state = 0, copy.deepcopy(model.state_dict())
    n_train = train_idx.numel()
    first = None
    for epoch in range(1, epochs + 1):
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch)
        order = train_idx[torch.randperm(n_train, generator=g).to(train_idx.device)]
        for start in range(0, n_train, batch_size):
            idx = order[start:start + batch_size]
            if idx.numel() < 2:  # a batch of one breaks BatchNorm and contrastive losses
                continue
            loss = train_loss(idx)
            value = float(loss.detach())
            first = value if first is None else first
            if not math.isfinite(value) or abs(value) > DIVERGENCE_FACTOR * max(abs(first), 1.0):
                raise EstimatorDiverged(f"{what} diverged: training loss {value:.3g} at epoch "
                                        f"{epoch} (first minibatch {first:.3g}; lr {lr:g})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        value, ex = evaluate(epoch)
        if sign * value < sign * best:
            best, extra, best_epoch = value, ex, epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return Fit(initial, best, best_epoch, extra)


def standardize(v: torch.Tensor, train_idx: torch.Tensor, eps: float = 1e-8
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature z-scores with the training split's statistics, and the kept-feature mask.

    A feature constant on the training split (a ReLU unit dead on those samples) is set to 0
    everywhere: nothing can be learnt from it, and dividing its held-out values by a zero
    spread would blow them up.
    """
    mean = v[train_idx].mean(0, keepdim=True)
    std = v[train_idx].std(0, keepdim=True)
    keep = (std > eps).squeeze(0)
    scale = torch.where(std > eps, 1.0 / std.clamp_min(eps), torch.zeros_like(std))
    return (v - mean) * scale, keep
