"""``recon``: reconstruction- and probe-based MI, the Checkpoint-KD paper's estimator after InfoPro.

Wang et al. (Checkpoint KD, NeurIPS 2022) follow InfoPro (Wang, Ni, Song, Yang & Huang, ICLR 2021):

    I(X;T) ≈ H(X) − min_dec  E[−log p_dec(x | t)]      (a small decoder reconstructs X from T)
    I(T;Y) ≈ H(Y) − min_clf  E[−log q_clf(y | t)]      (a classifier probe predicts Y from T)

Both minima are taken on a held-out split with early stopping. Putting the reconstruction loss
into nats: the decoder's output is the mean of a Gaussian with one variance per input dimension,
fitted to its held-out squared error (σ_j² = MSE_j, the maximum-likelihood choice), so
E[−log p(x|t)] = Σ_j ½·log(2πe·MSE_j). H(X) is the same Gaussian cross-entropy of the decoder-free
baseline (the training-split mean; σ_j² = its held-out squared error MSE0_j), so

    I(X;T) ≈ Σ_j ½·log(MSE0_j / MSE_j)        (2πe cancels; inputs standardised per dimension)

which is exact, −½·Σ log(1−ρ_j²), for jointly Gaussian pairs with a linear decoder. The true H(X)
of images differs from this Gaussian one by a constant that does not depend on the checkpoint, so
it cancels in Algorithm 1's min–max normalisation. Likewise H(Y) is the held-out cross-entropy of
the class prior (training-split frequencies) and the probe starts from that prior, so epoch 0 of
both trainings is the baseline and neither estimate is below zero by more than split noise.

Networks (InfoPro's auxiliary nets): for feature maps, the decoder upsamples T bilinearly to the
input size, then conv3×3 → 12·widen channels → BN → ReLU → conv3×3 → input channels (InfoPro's
sigmoid/BCE replaced by the Gaussian mean above); the probe is InfoPro's "1c2f" head (conv3×3
stride 2 → BN → ReLU → global pool → fc 128 → ReLU → fc). For vectors (the pooled embedding): a
one-hidden-layer MLP decoder and InfoPro's "0c2f" probe (fc 128 → ReLU → fc). Adam, early
stopping on the held-out objective.
``hidden=0`` makes the vector decoder affine (kdbench's option; InfoPro's decoders are conv nets).
``threads`` (default 1; 0 keeps torch's setting) is the number of CPU threads the small
networks train with: one is the fastest for them; raise it for conv decoders on large maps.

Where it works. X must be continuous: when the decoder reconstructs an input dimension exactly
(discrete inputs, or X a function of T) its held-out error hits ``MSE_FLOOR`` and the estimate is
½·log(1e6) ≈ 6.9 nats per such dimension (+108 nats for 16 discrete codes at d = 16 in the
audit). Rule: I(X;T) is flagged saturated, with a warning, when more than 1 % of the input
dimensions are at the floor (ceiling: every dimension at the floor).

Bias. (1) Σ_j I(X_j; T) is what the per-dimension Gaussian decoder measures; for independent
input dimensions it is at most I(X;T) (equal when the posterior of X given T factorises, e.g.
T_j depends on X_j only), so a channel that mixes the dimensions is underestimated even with
unlimited samples. (2) A decoder fitted on N_train samples has a held-out error inflated by
about d_T / N_train per output dimension (ordinary least squares: a factor 1 + d_T/(N_train −
d_T − 1)), which costs ≈ (d_X/2)·log(1 + d_T/N_train) nats: at d = 64 and N = 2000 (N_train
1600) that is 1.3 nats, and the default decoder reports 0.85–0.92 of a true 2.0 nats (diagonal
Gaussian channel, seeds 0–1). Measured (``benchmarks/mi_audit.py``, ``docs/mi-audit.md``):
within 0.2 nats of the 2.0 at d = 64 only from N ≈ 32 000 probe samples, with ``hidden=0
batch_size=512 patience=30`` (1.95, 1.90) or ``hidden=1024 lr=1e-4 patience=30`` (1.87, 1.84);
at N = 16 000 the affine decoder gives 1.78, 1.76.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import Estimator, flat, split_indices
from .training import fit_early_stopping, standardize

MSE_FLOOR = 1e-6  # in standardised units: caps one dimension's contribution at ½·log(1e6) nats
#: I(X;T) is flagged saturated when more than this share of the input dimensions is
#: reconstructed down to MSE_FLOOR: the value is then set by the floor
FLOOR_SHARE = 0.01


class _MapDecoder(nn.Module):
    """InfoPro's decoder: bilinear upsampling to the input size, conv-BN-ReLU-conv."""

    def __init__(self, in_ch: int, out_ch: int, size: tuple[int, int], widen: int):
        super().__init__()
        mid = 12 * widen
        self.size = size
        self.body = nn.Sequential(nn.Conv2d(in_ch, mid, 3, 1, 1), nn.BatchNorm2d(mid), nn.ReLU(),
                                  nn.Conv2d(mid, out_ch, 3, 1, 1))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = F.interpolate(t, size=self.size, mode="bilinear", align_corners=True)
        return self.body(t)


class _MLPDecoder(nn.Module):
    """One hidden ReLU layer of ``hidden`` units; ``hidden=0``: a linear (affine) decoder."""

    def __init__(self, d_in: int, out_shape: tuple[int, ...], hidden: int):
        super().__init__()
        self.out_shape = out_shape
        layers: list[nn.Module] = [nn.Linear(d_in, hidden), nn.ReLU()] if hidden > 0 else []
        self.body = nn.Sequential(*layers, nn.Linear(hidden if hidden > 0 else d_in,
                                                     math.prod(out_shape)))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.body(flat(t)).view(t.shape[0], *self.out_shape)


def probe_head(t_shape: tuple[int, ...], num_classes: int, widen: int = 1) -> nn.Module:
    """InfoPro's classifier probe: "1c2f" on feature maps, "0c2f" on vectors; the last layer is
    returned as ``head[-1]`` so callers can start it at the class prior."""
    if len(t_shape) == 3:
        c = t_shape[0]
        width, stride = (c * widen, 1) if c >= 64 else (2 * c * widen, 2)
        return nn.Sequential(nn.Conv2d(c, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width),
                             nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(width, 128 * widen), nn.ReLU(),
                             nn.Linear(128 * widen, num_classes))
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(t_shape), 128 * widen), nn.ReLU(),
                         nn.Linear(128 * widen, num_classes))


class Recon(Estimator):
    """Reconstruction/probe MI (Checkpoint KD after InfoPro): H(X) − min NLL, H(Y) − min CE."""

    name = "recon"
    unit = "nats"
    kind = "estimate"
    stochastic = True
    min_samples = 20
    defaults: ClassVar[dict[str, Any]] = {
        "holdout": 0.2, "lr": 1e-3, "epochs": 200, "patience": 20, "batch_size": 128,
        "hidden": 256, "threads": 1, "widen": 1}

    def _estimate(self, t, x, y, *, seed, device):
        s = self.settings
        t, x = t.float(), x.float()  # the networks train in float32
        train, held = split_indices(t.shape[0], s["holdout"], seed)
        train, held = train.to(device), held.to(device)
        ts, _ = standardize(flat(t), train)
        ts = ts.view_as(t)
        i_xt, dx = self._i_xt(ts, x, train, held, seed)
        i_ty, dy = self._i_ty(ts, y, train, held, seed)
        # I(T;Y) ≤ the prior's held-out CE (a probe that is always right)
        details = {**dx, **dy, "n_train": int(train.numel()), "n_heldout": int(held.numel()),
                   "ceiling_ty": dy["h_y"], "saturated_ty": False, "regime": []}
        if details["saturated_xt"]:
            details["regime"].append(
                f"the decoder reconstructs {dx['floor_dims']} of {dx['x_dims']} input "
                f"dimensions to the error floor ({MSE_FLOOR:g} in standardised units): X is "
                f"(close to) a function of T, e.g. discrete inputs, and I(X;T) = {i_xt:.4g} "
                f"is set by that floor (ceiling {dx['ceiling_xt']:.4g}), not by the data")
        return i_xt, i_ty, details

    # -- I(X;T): decoder ----------------------------------------------------------------------
    def _i_xt(self, t, x, train, held, seed) -> tuple[float, dict[str, Any]]:
        s = self.settings
        xs, keep = standardize(flat(x), train)
        xs = xs.view_as(x)
        if t.dim() == 4 and x.dim() == 4:
            decoder: nn.Module = _MapDecoder(t.shape[1], x.shape[1], tuple(x.shape[2:]),
                                             s["widen"])
        else:
            decoder = _MLPDecoder(flat(t).shape[1], tuple(x.shape[1:]), s["hidden"])
        decoder = decoder.to(t.device)

        def train_loss(idx: torch.Tensor) -> torch.Tensor:
            return F.mse_loss(decoder(t[idx]), xs[idx])

        def heldout() -> tuple[float, torch.Tensor]:
            err = flat(decoder(t[held]) - xs[held])[:, keep]
            mse = err.pow(2).mean(0).clamp_min(MSE_FLOOR)
            return float(0.5 * torch.log(2 * math.pi * math.e * mse).sum()), mse

        fit = fit_early_stopping(
            decoder, train_loss, heldout, train, lr=s["lr"], epochs=s["epochs"],
            patience=s["patience"], batch_size=s["batch_size"], seed=seed,
            what=f"{self.name} decoder")
        # epoch 0 is the zero-initialised decoder, i.e. the training mean: the H(X) baseline
        with torch.no_grad():
            mse0 = flat(xs[held])[:, keep].pow(2).mean(0).clamp_min(MSE_FLOOR)
        floor_dims = int((fit.extra <= MSE_FLOOR).sum()) if fit.extra is not None else 0
        kept = int(keep.sum())
        return fit.initial - fit.best, {
            "h_x": fit.initial, "recon_nll": fit.best, "decoder_epoch": fit.epoch,
            "x_dims": kept, "floor_dims": floor_dims,
            "ceiling_xt": float(0.5 * torch.log(mse0 / MSE_FLOOR).sum()),
            "saturated_xt": floor_dims > FLOOR_SHARE * kept}

    # -- I(T;Y): classifier probe -------------------------------------------------------------
    def _i_ty(self, t, y, train, held, seed) -> tuple[float, dict[str, Any]]:
        s = self.settings
        classes, labels = torch.unique(y, return_inverse=True)
        k = classes.numel()
        head = probe_head(tuple(t.shape[1:]), k, s["widen"]).to(t.device)
        counts = torch.bincount(labels[train], minlength=k).double() + 1.0  # Laplace smoothing
        with torch.no_grad():  # start at the class prior: epoch 0 is the H(Y) baseline
            head[-1].weight.zero_()
            head[-1].bias.copy_((counts / counts.sum()).log().float())

        def train_loss(idx: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(head(t[idx]), labels[idx])

        def heldout() -> tuple[float, None]:
            return float(F.cross_entropy(head(t[held]), labels[held])), None

        fit = fit_early_stopping(
            head, train_loss, heldout, train, lr=s["lr"], epochs=s["epochs"],
            patience=s["patience"], batch_size=s["batch_size"], seed=seed + 1,
            what=f"{self.name} classifier probe")
        return fit.initial - fit.best, {"h_y": fit.initial, "probe_ce": fit.best,
                                        "probe_epoch": fit.epoch}
