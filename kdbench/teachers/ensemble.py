"""Ensemble teachers: equal-weight averages of several frozen members' outputs.

Checkpoint KD (Wang et al., NeurIPS 2022) distils from an ensemble by averaging the members'
*logits* with equal weights, ``z = 1/K Σ_k z_k`` (its reference code, ``avg_teacher``), and
compares a *snapshot* ensemble (checkpoints of one trajectory) with an *independent* one (final
checkpoints of K runs). The alternative averages *probabilities*: the teacher distribution at
the distillation temperature T is ``p^T = 1/K Σ_k softmax(z_k / T)``, returned as the logits
``T · log p^T`` so that a KD loss's ``softmax(· / T)`` gives back exactly ``p^T``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


def combine(logits: torch.Tensor, mode: str = "logit", temperature: float = 1.0) -> torch.Tensor:
    """Ensemble logits from the members' stacked logits (K, B, C)."""
    if mode == "logit":
        return logits.mean(dim=0)
    if mode == "prob":
        t = float(temperature)
        log_p = F.log_softmax(logits.float() / t, dim=-1)
        return t * (torch.logsumexp(log_p, dim=0) - math.log(logits.shape[0]))
    raise ConfigError(f"unknown ensemble mode {mode!r} (valid: logit, prob)")


class EnsembleTeacher(nn.Module):
    """K frozen members behind one ``forward(x) -> logits`` (no feature view: logit losses only).

    ``forward`` is the single place the members run: a faster variant (e.g. batching members of
    one architecture with ``torch.func.vmap``) replaces it and nothing else.
    """

    has_features = False

    def __init__(self, members: list[nn.Module], mode: str = "logit", temperature: float = 1.0):
        super().__init__()
        if len(members) < 2:
            raise ConfigError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList(members)
        self.mode = mode
        self.temperature = float(temperature)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The members' logits stacked as (K, B, C)."""
        return torch.stack([m(x) for m in self.members])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return combine(self.member_logits(x), self.mode, self.temperature)

    def features(self, x: torch.Tensor) -> Any:  # pragma: no cover - guarded by config.resolve
        raise ConfigError("an ensemble teacher gives logits only; use a logit loss (e.g. kd)")


def evenly_spaced(saved: list[int], k: int) -> list[int]:
    """``k`` of the ``saved`` epochs, evenly spaced along them, the latest included.

    Member j (1..k) is saved epoch number ⌊j·n/k + ½⌋ of n; e.g. 10 checkpoints every 20
    epochs and k = 3 give 60, 140, 200.
    """
    saved = sorted(saved)
    n = len(saved)
    if not 1 <= k <= n:
        raise ConfigError(f"cannot pick {k} ensemble members from {n} saved checkpoints "
                          f"(saved: {', '.join(map(str, saved))})")
    return [saved[math.floor(j * n / k + 0.5) - 1] for j in range(1, k + 1)]
