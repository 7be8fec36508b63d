"""Ensemble teachers: equal-weight averages of several frozen members' outputs.

Checkpoint KD (Wang et al., NeurIPS 2022) distils from an ensemble by averaging the members'
*logits* with equal weights, ``z = 1/K Σ_k z_k`` (its reference code, ``avg_teacher``), and
compares a *snapshot* ensemble (checkpoints of one trajectory) with an *independent* one (final
checkpoints of K runs). The alternative averages *probabilities*: the teacher distribution at
the distillation temperature T is ``p^T = 1/K Σ_k softmax(z_k / T)``, returned as the logits
``T · log p^T`` so that a KD loss's ``softmax(· / T)`` gives back exactly ``p^T``.
"""

from __future__ import annotations

import copy
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

    ``forward`` is the single place the members run. With ``batched`` (``engine.ensemble_vmap``)
    members of one architecture run as one forward: their weights stacked by
    ``torch.func.stack_module_state`` and the model mapped over them with ``torch.vmap``, the
    same outputs as the loop. It is off by default: on the 2-core AVX2 CPU it was measured on it
    ran at 0.6–0.85× the loop's speed (see the README's Performance section).
    """

    has_features = False

    def __init__(self, members: list[nn.Module], mode: str = "logit", temperature: float = 1.0,
                 batched: bool = False):
        super().__init__()
        if len(members) < 2:
            raise ConfigError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList(members)
        self.mode = mode
        self.temperature = float(temperature)
        # members never change architecture: decide once, not on every forward
        self.batched = batched and self.same_architecture()
        self._stacked: tuple | None = None  # (weights' addresses, params, buffers, meta model)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The members' logits stacked as (K, B, C)."""
        if self.batched:
            return self._vmapped_logits(x)
        return torch.stack([m(x) for m in self.members])

    def same_architecture(self) -> bool:
        first = self.members[0]
        shapes = [(k, v.shape) for k, v in first.state_dict().items()]
        return all(type(m) is type(first) and [(k, v.shape) for k, v in m.state_dict().items()]
                   == shapes for m in self.members[1:])

    def _vmapped_logits(self, x: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call, stack_module_state

        # restack when the members' weights moved (device, layout) or changed in place
        key = tuple((t.data_ptr(), t._version) for m in self.members
                    for t in (*m.parameters(), *m.buffers()))
        if self._stacked is None or self._stacked[0] != key:
            params, buffers = stack_module_state(list(self.members))
            base = copy.deepcopy(self.members[0]).to("meta")
            self._stacked = (key, params, buffers, base)
        _, params, buffers, base = self._stacked

        def one(p, b, inputs):
            return functional_call(base, (p, b), (inputs,))
        return torch.vmap(one, in_dims=(0, 0, None))(params, buffers, x)

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
