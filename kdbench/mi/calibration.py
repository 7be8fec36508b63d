"""Two calibration checks of Algorithm 1's decision rule for an MI estimator, on cases whose
answer is known (tests and ``benchmarks/mi_audit.py --selection`` run them for every estimator):

* :func:`equal_checkpoints` — K checkpoints of equal quality: each checkpoint's features are a
  fresh draw from ONE distribution (T = M·onehot(Y) + noise, M fixed) on one shared probe set,
  so the estimates differ only by their sampling and training noise. A rule that chooses here
  chooses noise; it should choose in at most about one trial in eight.
* :func:`shared_block_effect` — the noise as blocked repeats make it: every block (a repeat's
  seed and split, or a half-sample) shifts all checkpoints alike by an effect of sd 1, and each
  estimate has its own small noise (sd 0.02); one checkpoint is better by 0.5 on both series. A
  rule that models the blocks chooses it; one that pools the block effect as noise (sd ≈ 1)
  declines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .selection import Selection, algorithm1


@dataclass
class NullTrial:
    """One trial of :func:`equal_checkpoints`: the selection and the estimates behind it."""

    selection: Selection
    seconds: float


def equal_checkpoints(estimator: Any, *, checkpoints: int = 10, samples: int = 200,
                      dim: int = 8, classes: int = 4, repeats: int = 3, resamples: int = 10,
                      seed: int = 0) -> NullTrial:
    """Algorithm 1 on ``checkpoints`` equally good feature sets (see the module docstring).
    A seeded estimator runs ``repeats`` seeds per checkpoint (blocks: the same seeds at every
    checkpoint); a deterministic one runs once plus ``resamples`` half-samples."""
    import time

    from .analysis import MIRequest, estimate_blocks
    from .selection import complete_blocks

    g = torch.Generator().manual_seed(10007 * seed + 17)
    y = torch.randint(0, classes, (samples,), generator=g)
    x = torch.randn(samples, dim, generator=g)
    means = 1.5 * torch.randn(classes, dim, generator=g)
    stochastic = bool(getattr(estimator, "stochastic", True))
    request = MIRequest(getattr(estimator, "name", "?"), samples=samples, seed=seed,
                        repeats=repeats, resamples=resamples)
    t0 = time.perf_counter()
    rows = []
    for _ in range(checkpoints):
        t = means[y] + torch.randn(samples, dim, generator=g)
        rows.append(estimate_blocks(estimator, t, x, y, request,
                                    repeats if stochastic else 1, torch.device("cpu")))
    epochs = list(range(1, checkpoints + 1))
    repeat_blocks = complete_blocks([r["seeds"] for r in rows], [r["values"] for r in rows])
    selection = algorithm1(
        epochs, [r["i_xt"] for r in rows], [r["i_ty"] for r in rows],
        repeats=repeat_blocks if stochastic else [r["values"] for r in rows],
        stochastic=stochastic, resamples=None if stochastic else [r["resamples"] for r in rows],
        ceilings=[(r["details"].get("ceiling_xt"), r["details"].get("ceiling_ty"))
                  for r in rows],
        saturated=[(bool(r["details"].get("saturated_xt")),
                    bool(r["details"].get("saturated_ty"))) for r in rows])
    return NullTrial(selection, time.perf_counter() - t0)


def shared_block_effect(*, stochastic: bool, checkpoints: int = 10, blocks: int = 3,
                        better: int = 6, lead: float = 0.5, block_sd: float = 1.0,
                        own_sd: float = 0.02, seed: int = 0) -> Selection:
    """Algorithm 1 on synthetic blocked estimates (see the module docstring): checkpoint
    ``better`` (1-based) leads every other by ``lead`` on both series."""
    g = torch.Generator().manual_seed(7 * seed + 3)
    base = torch.linspace(0.0, 0.2, checkpoints, dtype=torch.float64)  # a slight trend
    truth = torch.stack([base, base.flip(0)], dim=1)  # the series disagree: no free winner
    truth[better - 1] = truth.max(dim=0).values + lead
    effects = block_sd * torch.randn(blocks, 2, generator=g, dtype=torch.float64)
    noise = own_sd * torch.randn(checkpoints, blocks, 2, generator=g, dtype=torch.float64)
    values = truth[:, None, :] + effects[None, :, :] + noise  # (checkpoint, block, series)
    epochs = list(range(1, checkpoints + 1))
    if stochastic:
        means = values.mean(dim=1)
        return algorithm1(epochs, means[:, 0].tolist(), means[:, 1].tolist(),
                          repeats=values.tolist(), stochastic=True)
    # a deterministic estimate: the full-sample value, its noise measured on the half-samples
    full = truth + own_sd * torch.randn(checkpoints, 2, generator=g, dtype=torch.float64)
    return algorithm1(epochs, full[:, 0].tolist(), full[:, 1].tolist(),
                      repeats=[[row] for row in full.tolist()], stochastic=False,
                      resamples=values.tolist())
