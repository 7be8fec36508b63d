"""Student-side trainable modules that map features into a loss's comparison space.

Shapes follow RepDistiller's modules of the same role (``ConvReg``, ``Embed``, ``LinearEmbed``,
``Paraphraser``, ``Translator``, VID's regressor); initialisation is PyTorch's default, as there.
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
