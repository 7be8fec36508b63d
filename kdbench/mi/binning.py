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
textbook histogram estimator.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .base import Estimator, flat, joint_ids, plugin_entropy, row_ids


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
    defaults: ClassVar[dict[str, Any]] = {"bins": 30, "bin_size": 0.0}

    def _estimate(self, t, x, y, *, seed, device):
        bins, size = self.settings["bins"], self.settings["bin_size"]
        if bins < 2 and size <= 0:
            from ..errors import ConfigError
            raise ConfigError(f"binning needs bins >= 2 or bin_size > 0, got bins={bins}")
        t_id = row_ids(discretize(flat(t), bins, size))
        x_id = row_ids(discretize(flat(x), bins, size))
        h_t, h_x, h_y = plugin_entropy(t_id), plugin_entropy(x_id), plugin_entropy(y)
        i_xt = h_x + h_t - plugin_entropy(joint_ids(x_id, t_id))
        i_ty = h_t + h_y - plugin_entropy(joint_ids(t_id, y))
        return i_xt, i_ty, {"h_t": h_t, "h_x": h_x, "h_y": h_y,
                            "t_symbols": int(t_id.max()) + 1, "x_symbols": int(x_id.max()) + 1}
