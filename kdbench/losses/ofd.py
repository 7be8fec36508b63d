"""``ofd``: Heo et al., "A Comprehensive Overhaul of Feature Distillation" (ICCV 2019).

Connector-mapped student pre-activations against the teacher's, with a partial L2 distance below
per-channel margins taken from the teacher's BatchNorm. Official code
clovaai/overhaul-distillation; official CIFAR-100 defaults CE 1 and the distillation term
divided by B and by 1000 (``w_ofd = 0.001``; mdistiller's FEAT_WEIGHT 0.001 agrees). Fidelity:
``docs/fidelity/ofd.md``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import DistillContext, Distiller, need_maps, probe_pair, register_loss, require_teacher
from .connectors import ConvBN

__all__ = ["OFD", "ofd", "ofd_margin", "ofd_stage", "preact_batchnorms"]


def ofd_margin(gamma: torch.Tensor, beta: torch.Tensor, floor: float = 1e-3) -> torch.Tensor:
    """OFD's per-channel margin: the expectation of the negative part of the teacher's
    pre-activation, from the BatchNorm that produces it.

    Each channel's pre-activation is taken as Gaussian ``N(β, γ²)`` (BatchNorm's affine output
    of a normalised input), and the margin is ``E[x | x < 0] = β − |γ|·φ(β/|γ|) / Φ(−β/|γ|)``;
    where ``Φ(−β/|γ|) ≤ floor`` (almost never negative) it is ``−3|γ|`` instead (official
    ``CIFAR-100/distiller.py`` lines 29-41). A channel with γ = 0 (constant output; the official
    code divides by zero there) gets the formula's limit ``min(β, 0)``.
    """
    s = gamma.detach().double().abs()
    m = beta.detach().double().to(s.device)
    safe = torch.where(s > 0, s, torch.ones_like(s))
    z = m / safe
    cdf = torch.special.ndtr(-z)
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    margin = torch.where(cdf > floor, m - s * pdf / cdf.clamp_min(floor), -3.0 * s)
    margin = torch.where(s > 0, margin, m.clamp(max=0.0))
    return margin.float()


def ofd_stage(student_feat: torch.Tensor, teacher_feat: torch.Tensor,
              margin: torch.Tensor) -> torch.Tensor:
    """OFD's partial L2 distance on one stage, summed over elements and divided by B.

    With ``m`` the teacher channel's margin, ``s`` the connector's output and ``t`` the teacher's
    pre-activation: ``(s − m)²`` where ``t ≤ m < s``; ``(s − t)²`` where ``m < t ≤ 0`` and
    ``s > t``; ``(s − t)²`` where ``t > 0``; nothing where the teacher is negative and the student
    already below it (official ``distiller.py`` lines 9-13: target ``max(t, m)``, mask
    ``s > target or target > 0``; mdistiller's ``feat_loss`` writes the same three cases). A
    teacher map of another size is first average-pooled to the student's (mdistiller).
    """
    s, t = student_feat.float(), teacher_feat.float()
    if t.shape[-2:] != s.shape[-2:]:
        t = F.adaptive_avg_pool2d(t, s.shape[-2:])
    m = margin.float().view(1, -1, 1, 1).to(s.device)
    target = torch.maximum(t, m)
    keep = (s > target) | (target > 0)
    return ((s - target).pow(2) * keep).sum() / s.shape[0]


def ofd(student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor],
        margins: list[torch.Tensor]) -> torch.Tensor:
    """Heo et al., "A Comprehensive Overhaul of Feature Distillation" (ICCV 2019).

    ``Σ_i 2^-(n−1−i) · ofd_stage(r_i(s_i), t_i, m_i)`` over the n pre-ReLU stages, shallow to
    deep (the deepest weighted 1, halving towards the input), where the student's maps are
    already through their connectors r_i. The official trainer divides the sum by B (done here)
    and by 1000 (kdbench's ``w_ofd = 0.001``), ``train_with_distillation.py`` line 91.
    """
    n = len(student_feats)
    total = student_feats[0].new_zeros((), dtype=torch.float32)
    for i, (s, t, m) in enumerate(zip(student_feats, teacher_feats, margins)):
        total = total + ofd_stage(s, t, m) / 2 ** (n - 1 - i)
    return total


def preact_batchnorms(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The BatchNorm whose output feeds each ``preact`` tap of a CIFAR-zoo model (its γ, β set
    OFD's margins), shallow to deep — the official ``get_bn_before_relu``.

    ResNet: each stage's last block's last BN (the tap adds the shortcut to it, as in the
    official ResNet); WRN: the next stage's first ``bn1`` and the final ``bn1`` (the tap is that
    BN's output); VGG: each block's last BN; MobileNetV2: each tapped group's last projection BN
    (mdistiller); ShuffleNet V1: each stage's last unit's last BN (its tap adds the identity;
    mdistiller refuses ShuffleNets). A model may define ``preact_batchnorms()`` itself. Anything
    else (ShuffleNet V2, whose taps pass half their channels around any BN; timm models;
    ensembles) is a ConfigError.
    """
    from ..models.mobilenetv2 import TAPS as MOBILE_TAPS
    from ..models.mobilenetv2 import MobileNetV2
    from ..models.resnet import BasicBlock, ResNet
    from ..models.shufflenet import ShuffleNetV1
    from ..models.vgg import VGG
    from ..models.wrn import WideResNet

    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper
    own = getattr(model, "preact_batchnorms", None)
    if callable(own):
        return list(own())
    if isinstance(model, ResNet):
        return [layer[-1].bn2 if isinstance(layer[-1], BasicBlock) else layer[-1].bn3
                for layer in model.layers]
    if isinstance(model, WideResNet):
        return [model.layers[i + 1][0].bn1 for i in range(len(model.layers) - 1)] + [model.bn1]
    if isinstance(model, VGG):
        return [block[-1] for block in model.blocks[1:]]
    if isinstance(model, MobileNetV2):
        return [model.blocks[i][-1].conv[-1] for i in MOBILE_TAPS]
    if isinstance(model, ShuffleNetV1) and all(layer[-1].stride == 1 for layer in model.layers):
        return [layer[-1].conv3[1] for layer in model.layers]
    raise ConfigError(f"cannot find the BatchNorm before each pre-activation tap of "
                      f"{type(model).__name__} (OFD's margins need it; supported teachers: "
                      f"resnet, wrn, vgg, mobilenetv2, shufflev1)")


@register_loss(
    "ofd", family="feature", year=2019, repo="https://github.com/clovaai/overhaul-distillation",
    description="overhaul of feature distillation: pre-ReLU partial L2 above BN margins",
    paper="Heo et al., A Comprehensive Overhaul of Feature Distillation, ICCV 2019",
    defaults={"w_ce": 1.0, "w_ofd": 0.001}, taps=("logits", "preact"))
class OFD(Distiller):
    """Overhaul of feature distillation: connector-mapped student pre-activations against the
    teacher's, with OFD's partial L2 below per-channel margins taken from the teacher's BN.

    Where the two have different numbers of stages the deepest ones are paired (mdistiller's
    ``_align_list``). Margins are computed once, at build time, from the teacher's BN γ and β,
    and saved with the distiller.

    Difference from the official code (and mdistiller's): those run the teacher in *train*
    mode, so its BN normalises each batch with the batch's statistics (and updates its running
    ones); kdbench's engine keeps every teacher frozen in eval mode, so its pre-activations use
    the running statistics. Fidelity: ``docs/fidelity/ofd.md``.
    """

    taps = frozenset({"logits", "preact"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        teacher = require_teacher(ctx, "ofd")
        fs, ft = probe_pair(ctx, "ofd")
        need_maps(fs.preact, "student", "pre-activation stages", "ofd")
        need_maps(ft.preact, "teacher", "pre-activation stages", "ofd")
        bns = preact_batchnorms(teacher)
        t_ch = [t.shape[1] for t in ft.preact]
        if [bn.num_features for bn in bns] != t_ch:
            raise ConfigError(f"loss 'ofd': the teacher's BatchNorms before its pre-activation "
                              f"taps have {[bn.num_features for bn in bns]} channels, its taps "
                              f"{t_ch}")
        self.n = min(len(fs.preact), len(ft.preact))
        self.connectors = nn.ModuleList(
            ConvBN(s.shape[1], t.shape[1]) for s, t in zip(fs.preact[-self.n:],
                                                           ft.preact[-self.n:]))
        for i, bn in enumerate(bns[-self.n:]):
            self.register_buffer(f"margin{i}", ofd_margin(bn.weight, bn.bias))

    def margins(self) -> list[torch.Tensor]:
        return [getattr(self, f"margin{i}") for i in range(self.n)]

    def forward(self, student, teacher, target, index=None, epoch=0):
        s = [c(x) for c, x in zip(self.connectors, student.preact[-self.n:])]
        return {"ofd": ofd(s, teacher.preact[-self.n:], self.margins())}
