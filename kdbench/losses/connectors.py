"""Student-side trainable modules that map features into a loss's comparison space.

Shapes follow RepDistiller's modules of the same role (``ConvReg``, ``Embed``, ``LinearEmbed``,
``Paraphraser``, ``Translator``, VID's regressor); initialisation is PyTorch's default, as there.
The modules of ReviewKD (``ABF``, ``ReviewFusion``), OFD and KD-SVD (``ConvBN``) follow each
method's official code, shapes and initialisation, cited per class.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


class ConvReg(nn.Module):
    """FitNet's convolutional regressor from a student map (C_s, H_s, W_s) to a teacher map's shape.

    Halving: 3×3 stride-2 conv; doubling: 4×4 stride-2 transposed conv; otherwise a valid conv of
    kernel ``1 + H_s − H_t`` (identity size when equal). Then BatchNorm, and a ReLU unless
    ``relu=False`` (AB's connectors regress pre-activations).
    """

    def __init__(self, s_shape: tuple[int, ...], t_shape: tuple[int, ...], relu: bool = True):
        super().__init__()
        (sc, sh, sw), (tc, th, tw) = s_shape[-3:], t_shape[-3:]
        if sh == 2 * th:
            self.conv: nn.Module = nn.Conv2d(sc, tc, 3, stride=2, padding=1)
        elif sh * 2 == th:
            self.conv = nn.ConvTranspose2d(sc, tc, 4, stride=2, padding=1)
        elif sh >= th and sw >= tw:
            self.conv = nn.Conv2d(sc, tc, (1 + sh - th, 1 + sw - tw))
        else:
            raise ConfigError(f"no regressor from a student map of {sh}×{sw} to a teacher map of "
                              f"{th}×{tw} (the student's must be at least as large, or half)")
        self.bn = nn.BatchNorm2d(tc)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x


class Embed(nn.Module):
    """Linear projection to ``dim`` followed by L2 normalisation (CRD's embedding heads)."""

    def __init__(self, dim_in: int, dim: int = 128, normalize: bool = True):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim)
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x.flatten(1))
        return F.normalize(x, dim=1, eps=1e-12) if self.normalize else x


def _leaky() -> nn.Module:
    return nn.LeakyReLU(0.1)


def _conv_stack(conv, channels: list[int], bn: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for cin, cout in itertools.pairwise(channels):
        layers.append(conv(cin, cout, 3, 1, 1))
        if bn:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(_leaky())
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    """FT's teacher-side auto-encoder: three 3×3 convs to ``k·C`` factor channels and three
    transposed convs back, LeakyReLU 0.1, no BatchNorm (RepDistiller's defaults)."""

    def __init__(self, channels: int, k: float = 0.5):
        super().__init__()
        mid = max(1, int(channels * k))
        self.encoder = _conv_stack(nn.Conv2d, [channels, channels, mid, mid], bn=False)
        self.decoder = _conv_stack(nn.ConvTranspose2d, [mid, mid, channels, channels], bn=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        factor = self.encoder(x)
        return factor, self.decoder(factor)


class Translator(nn.Module):
    """FT's student-side encoder: three 3×3 convs from the student's channels to the teacher's
    factor channels ``k·C_t``, with BatchNorm and LeakyReLU 0.1."""

    def __init__(self, s_channels: int, t_channels: int, k: float = 0.5):
        super().__init__()
        mid = max(1, int(t_channels * k))
        self.encoder = _conv_stack(nn.Conv2d, [s_channels, s_channels, mid, mid], bn=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class VIDRegressor(nn.Module):
    """VID's per-stage mean predictor (1×1 conv, ReLU, 1×1 conv, ReLU, 1×1 conv; hidden width =
    the teacher's channels) and its per-channel variance ``softplus(log_scale) + ε``, initialised
    to ``init_var``."""

    def __init__(self, s_channels: int, t_channels: int, init_var: float = 5.0,
                 eps: float = 1e-5):
        super().__init__()
        mid = t_channels
        self.regressor = nn.Sequential(
            nn.Conv2d(s_channels, mid, 1, bias=False), nn.ReLU(),
            nn.Conv2d(mid, mid, 1, bias=False), nn.ReLU(),
            nn.Conv2d(mid, t_channels, 1, bias=False))
        # softplus⁻¹(init_var − ε), so that the initial variance is exactly init_var
        self.log_scale = nn.Parameter(
            torch.full((t_channels,), math.log(math.expm1(init_var - eps))))
        self.eps = eps

    def variance(self) -> torch.Tensor:
        return F.softplus(self.log_scale) + self.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.regressor(x)


# ============================== ReviewKD, OFD, KD-SVD ============================================


class ABF(nn.Module):
    """ReviewKD's attention-based fusion of one student feature with the fused deeper ones.

    ``conv1`` (1×1, BN) maps the student feature to ``mid`` channels; with ``fuse`` the deeper
    fused map is upsampled (nearest) to this feature's size and the two are blended by a
    two-channel sigmoid attention ``z = σ(conv1×1([x, y]))``: ``x·z₀ + y·z₁``. The blend is
    resized (nearest) to the teacher's size, passed on to the next shallower ABF, and mapped by
    ``conv2`` (3×3, BN) to the teacher's channels. Official ``CIFAR-100/model/reviewkd.py``
    lines 20-56, including the Kaiming-uniform (a = 1) initialisation of both convolutions.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False),
                                   nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channels, out_channels, 3, padding=1,
                                             bias=False), nn.BatchNorm2d(out_channels))
        self.att_conv = (nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid())
                         if fuse else None)
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None,
                out_size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(output in the teacher's shape, fused map handed to the next shallower ABF)."""
        x = self.conv1(x)
        if self.att_conv is not None:
            if residual is None:
                raise ValueError("a fusing ABF needs the deeper fused map")
            residual = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
            z = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * z[:, :1] + residual * z[:, 1:]
        if out_size is not None and tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode="nearest")
        return self.conv2(x), x


class ReviewFusion(nn.Module):
    """ReviewKD's review path: one ABF per student feature (shallow to deep), run from the
    deepest (no fusion) to the shallowest, each fusing the deeper result into its own feature.

    ``mid`` channels are ``min(max_mid, in_channels[-1])`` (official ``reviewkd.py`` line 69:
    512 and the deepest student feature's width, i.e. its pooled embedding).
    """

    def __init__(self, in_channels: list[int], out_channels: list[int], max_mid: int = 512):
        super().__init__()
        self.mid_channels = min(max_mid, in_channels[-1])
        n = len(in_channels)
        self.abfs = nn.ModuleList(ABF(c_in, self.mid_channels, c_out, i < n - 1)
                                  for i, (c_in, c_out) in enumerate(zip(in_channels,
                                                                        out_channels)))

    def forward(self, feats: list[torch.Tensor],
                out_sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        """The fused student features, shallow to deep, each of its teacher feature's size."""
        outs: list[torch.Tensor] = []
        residual = None
        for abf, x, size in zip(reversed(self.abfs), reversed(feats), reversed(out_sizes)):
            out, residual = abf(x, residual, size)
            outs.append(out)
        return outs[::-1]


class ConvBN(nn.Module):
    """A 1×1 conv (no bias) and BatchNorm from the student's channels to the teacher's: OFD's
    connector (official ``CIFAR-100/distiller.py`` lines 15-27, conv weights N(0, 2/(k²·C_out)),
    BN γ = 1, β = 0) and the connector of the authors' TF2 KD-SVD."""

    def __init__(self, s_channels: int, t_channels: int, kernel_size: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(s_channels, t_channels, kernel_size, padding=(kernel_size - 1) // 2,
                              bias=False)
        self.bn = nn.BatchNorm2d(t_channels)
        fan_out = kernel_size * kernel_size * t_channels
        nn.init.normal_(self.conv.weight, 0.0, math.sqrt(2.0 / fan_out))
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))
