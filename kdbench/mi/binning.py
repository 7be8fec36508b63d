"""``binning``: discretise the activations and count (Shwartz-Ziv & Tishby, 2017).

Each unit's activation is put into one of ``bins`` equal-width bins spanning the layer's range
(the paper: 30 bins; Saxe et al. 2018 use a fixed width, ``bin_size``, e.g. 0.5, for unbounded
ReLU units). A sample's binned activation vector is one discrete symbol T̂, and with plug-in
(empirical) entropies

    I(X;T) = H(T̂) − H(T̂ | X̂) = H(X̂) + H(T̂) − H(X̂, T̂)
    I(T;Y) = H(T̂) + H(Y) − H(T̂, Y)

The inputs are discretised by the same rule: binary inputs (the paper's) are unchanged, images
become distinct symbols, so for distinct probe images H(T̂ | X̂) = 0 and I(X;T) = H(T̂) ≤ log N —
the estimate then measures how many probe samples the layer still tells apart at this
resolution, the known limitation Saxe et al. discuss. Low-dimensional continuous pairs give the
textbook histogram estimator. Official code: ravidziv/IDNNs, simplified in artemyk/ibsgd
(``simplebinmi.py``: 30 bin edges on [−1, 1] for tanh units); kdbench spans the observed range
of the layer instead of [−1, 1], which coincides with it when tanh units reach ±1 and also works
for unbounded ReLU units.

Where it works. With ``bins``^d cells and N samples, at d ≥ 16 every probe sample has its own
cell whatever the data, so I(X;T) = H(T̂) = log N and I(T;Y) = H(Y) exactly (the audit,
``docs/mi-audit.md``: every continuous case at d = 16 and 64, independence included). Like
``kde`` it takes T for a function of X: for continuous inputs it measures H(T̂), not I(X;T).
Rule: both values are flagged saturated when H(T̂) is within 1 % (``base.SATURATION``) of log N
(then at most a few percent of the samples share a cell, and I(T;Y) is within 0.01·log N of H(Y)
by construction); the flag emits a warning. The remedies are settings: ``project=pca|random``
with ``project_dim=k`` (binning T on a few directions; see :mod:`kdbench.mi.project`), or fewer
``bins``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from .base import (
    SATURATION,
    Estimator,
    check_range,
    flat,
    joint_ids,
    near_ceiling,
    plugin_entropy,
    row_ids,
)
from .project import METHODS, project


def discretize(v: torch.Tensor, bins: int, bin_size: float) -> torch.Tensor:
    """Integer bin index of every value of ``v``: fixed width if ``bin_size`` > 0, else ``bins``
    equal-width bins over the range of all of ``v``."""
    if bin_size > 0:
        return torch.floor(v / bin_size).long()
    lo, hi = v.min(), v.max()
    if hi <= lo:
        return torch.zeros_like(v, dtype=torch.long)
    return ((v - lo) / (hi - lo) * bins).floor().long().clamp(max=bins - 1)


class Binning(Estimator):
    """Binned plug-in MI (Shwartz-Ziv & Tishby 2017): equal-width bins, empirical entropies."""

    name = "binning"
    unit = "nats"
    kind = "estimate"
    min_samples = 10
    defaults: ClassVar[dict[str, Any]] = {"bins": 30, "bin_size": 0.0, "project": "none",
                                          "project_dim": 2}
    choices: ClassVar[dict[str, tuple[str, ...]]] = {"project": METHODS}

    @property
    def stochastic(self) -> bool:  # a random projection depends on the seed
        return self.settings["project"] == "random"

    def check_settings(self) -> None:
        s = self.settings
        if s["bins"] < 2 and s["bin_size"] <= 0:
            from ..errors import ConfigError
            raise ConfigError(f"MI estimator 'binning' needs bins >= 2 or bin_size > 0, got "
                              f"bins={s['bins']}, bin_size={s['bin_size']}")
        check_range(self.name, "project_dim", s["project_dim"], low=1)

    def _estimate(self, t, x, y, *, seed, device):
        s = self.settings
        bins, size = s["bins"], s["bin_size"]
        t, info = project(t, s["project"], s["project_dim"], seed, self.name)
        t_id = row_ids(discretize(t, bins, size))
        x_id = row_ids(discretize(flat(x), bins, size))
        h_t, h_x, h_y = plugin_entropy(t_id), plugin_entropy(x_id), plugin_entropy(y)
        i_xt = h_x + h_t - plugin_entropy(joint_ids(x_id, t_id))
        i_ty = h_t + h_y - plugin_entropy(joint_ids(t_id, y))
        n = t.shape[0]
        saturated = near_ceiling(h_t, math.log(n))
        symbols = int(t_id.max()) + 1
        details: dict[str, Any] = {
            "h_t": h_t, "h_x": h_x, "h_y": h_y, "t_symbols": symbols,
            "x_symbols": int(x_id.max()) + 1, **info, "ceiling_xt": math.log(n),
            "ceiling_ty": h_y, "saturated_xt": saturated, "saturated_ty": saturated,
            "regime": []}
        if saturated:
            details["regime"].append(
                f"{symbols} of {n} probe samples fall in distinct cells (H(T̂) = {h_t:.4f} is "
                f"within {SATURATION:.0%} of log N = {math.log(n):.4f}) at {info['dims']} "
                f"dimensions, so I(X;T) = log N and I(T;Y) = H(Y) = {h_y:.4f} by construction, "
                f"whatever the data; use project=pca project_dim=2..4, fewer bins, or another "
                f"estimator (recon, infonce)")
        return i_xt, i_ty, details
