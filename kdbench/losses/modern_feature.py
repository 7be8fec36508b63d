"""Feature losses beyond RepDistiller's set: ReviewKD (CVPR 2021), OFD (ICCV 2019) and KD-SVD
(ECCV 2018), each as its official code computes it (see :mod:`.functional_modern_feature`).

Taps: ReviewKD fuses the student's post-activation stages and pooled embedding and matches the
teacher's pre-activation stages and embedding; OFD matches pre-activation stages; KD-SVD the
post-activation stages. Connectors are sized by probing both models at build time.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ..models.base import Features
from . import functional_modern_feature as MF
from .base import DistillContext, Distiller, option, paired, probe, require_teacher
from .connectors_modern import ConvBN, ReviewFusion

__all__ = ["KDSVD", "OFD", "ReviewKD", "preact_batchnorms", "review_channels"]


def _probe_pair(ctx: DistillContext, loss: str) -> tuple[Features, Features]:
    teacher = require_teacher(ctx, loss)
    return probe(ctx.student, ctx.input_shape), probe(teacher, ctx.input_shape)


def _as_map(embedding: torch.Tensor) -> torch.Tensor:
    return embedding.reshape(*embedding.shape[:2], 1, 1)


def _need(maps: list[torch.Tensor], role: str, what: str, loss: str) -> None:
    if not maps:
        raise ConfigError(f"loss {loss!r} needs the {role}'s {what}, but the model gives none "
                          f"(use a CIFAR-zoo model)")


# ============================== ReviewKD ========================================================


class ReviewKD(Distiller):
    """Knowledge review: the student's stages and pooled embedding, fused deep to shallow by ABF
    modules, matched to the teacher's pre-activation stages and pooled embedding by HCL.

    The term is ``min(epoch / warmup, 1) · hcl(...)`` with kdbench's epochs counted from 0, as
    the official trainer counts them (``CIFAR-100/train.py`` lines 210 and 225: the first epoch
    has no review term); mdistiller counts from 1, one epoch ahead.

    The official per-student lists (``reviewkd.py`` ``build_review_kd``) are derived here from
    the models (:func:`review_channels`): ``in_channels`` = the student's stage channels and its
    embedding width, ``out_channels`` = the teacher's, ``shapes``/``out_shapes`` = the spatial
    sizes of those features (1 for the embedding). This reproduces every official list (resnet,
    resnet×4, wrn, vgg, MobileNetV2, ShuffleNet students) and pairs others the same way.
    Student and teacher need the same number of stages.

    Other differences: the ABFs resize to the actual sizes of the maps (the official code to the
    configured square sizes, the same on its pairs); ``weight_table`` (off by default, like
    DKD's ``beta_table``) applies the official per-pair weights; a ShuffleNet V2 *teacher*'s
    pre-activations are channel-shuffled in kdbench (not in the official model).
    """

    taps = frozenset({"logits", "stages", "preact", "embedding"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        fs, ft = _probe_pair(ctx, "reviewkd")
        self.student_preact = bool(self.options["student_preact"])
        s_maps, t_maps = self.student_maps(fs), self.teacher_maps(ft)
        paired(s_maps, t_maps, "reviewkd", "stages (plus the pooled embedding)")
        max_mid = option(self.options, "max_mid_channels", "reviewkd", positive=True,
                         integer=True)
        self.warmup = option(self.options, "warmup", "reviewkd", nonneg=True, integer=True)
        self.review = ReviewFusion([m.shape[1] for m in s_maps], [m.shape[1] for m in t_maps],
                                   max_mid)

    def student_maps(self, f: Features) -> list[torch.Tensor]:
        maps = f.preact if self.student_preact else f.stages
        _need(maps, "student", "pre-activation stages" if self.student_preact else "stages",
              "reviewkd")
        if f.embedding is None:
            raise ConfigError("loss 'reviewkd' needs the student's pooled embedding")
        return [*maps, _as_map(f.embedding)]

    @staticmethod
    def teacher_maps(f: Features) -> list[torch.Tensor]:
        _need(f.preact, "teacher", "pre-activation stages", "reviewkd")
        if f.embedding is None:
            raise ConfigError("loss 'reviewkd' needs the teacher's pooled embedding")
        return [*f.preact, _as_map(f.embedding)]

    def warmup_factor(self, epoch: int) -> float:
        return min(epoch / self.warmup, 1.0) if self.warmup > 0 else 1.0

    def forward(self, student, teacher, target, index=None, epoch=0):
        t_maps = self.teacher_maps(teacher)
        fused = self.review(self.student_maps(student), [tuple(t.shape[-2:]) for t in t_maps])
        return {"reviewkd": self.warmup_factor(epoch) * MF.hcl(fused, t_maps)}


def review_channels(student: nn.Module, teacher: nn.Module,
                    input_shape: tuple[int, int, int] = (3, 32, 32),
                    student_preact: bool = False) -> dict[str, list[int] | int]:
    """ReviewKD's configuration lists for a pair, in the official ``build_review_kd`` layout:
    ``in_channels``/``out_channels`` shallow to deep, ``shapes``/``out_shapes`` deep to shallow
    (spatial sizes of the student's and the teacher's features), and ``mid_channels``."""
    fs, ft = probe(student, input_shape), probe(teacher, input_shape)
    s = [*(fs.preact if student_preact else fs.stages), _as_map(fs.embedding)]
    t = [*ft.preact, _as_map(ft.embedding)]
    return {"in_channels": [m.shape[1] for m in s], "out_channels": [m.shape[1] for m in t],
            "shapes": [m.shape[2] for m in reversed(s)],
            "out_shapes": [m.shape[2] for m in reversed(t)],
            "mid_channels": min(512, s[-1].shape[1])}


# ============================== OFD =============================================================


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


class OFD(Distiller):
    """Overhaul of feature distillation: connector-mapped student pre-activations against the
    teacher's, with OFD's partial L2 below per-channel margins taken from the teacher's BN.

    Where the two have different numbers of stages the deepest ones are paired (mdistiller's
    ``_align_list``). Margins are computed once, at build time, from the teacher's BN γ and β,
    and saved with the distiller.

    Difference from the official code (``train_with_distillation.py`` line 75, and mdistiller's
    ``OFD.train``): those run the teacher in *train* mode, so its BN normalises each batch with
    the batch's statistics (and updates its running ones); kdbench's engine keeps every teacher
    frozen in eval mode, so its pre-activations use the running statistics.
    """

    taps = frozenset({"logits", "preact"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        teacher = require_teacher(ctx, "ofd")
        fs, ft = _probe_pair(ctx, "ofd")
        _need(fs.preact, "student", "pre-activation stages", "ofd")
        _need(ft.preact, "teacher", "pre-activation stages", "ofd")
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
            self.register_buffer(f"margin{i}", MF.ofd_margin(bn.weight, bn.bias))

    def margins(self) -> list[torch.Tensor]:
        return [getattr(self, f"margin{i}") for i in range(self.n)]

    def forward(self, student, teacher, target, index=None, epoch=0):
        s = [c(x) for c, x in zip(self.connectors, student.preact[-self.n:])]
        return {"ofd": MF.ofd(s, teacher.preact[-self.n:], self.margins())}


# ============================== KD-SVD ==========================================================


class KDSVD(Distiller):
    """KD-SVD on the post-activation stages: RBF correlations of consecutive stages' leading
    singular vectors, student against teacher (the official ECCV 2018 code; mdistiller taps the
    same stages).

    Student and teacher need equal channels per stage (the official and mdistiller pairs); with
    ``connector`` each student stage first goes through a 1×1 conv + BN to the teacher's
    channels, as in the authors' TF2 re-implementation (``distiller/KDSVD.py``). The official
    VGG experiment taps each block after its max-pooling; kdbench taps the stage outputs, as
    mdistiller does. See :func:`~.functional_modern_feature.kdsvd` for the loss's differences.
    """

    taps = frozenset({"logits", "stages"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        fs, ft = _probe_pair(ctx, "kdsvd")
        _need(fs.stages, "student", "stages", "kdsvd")
        paired(fs.stages, ft.stages, "kdsvd")
        if len(fs.stages) < 2:
            raise ConfigError("loss 'kdsvd' correlates consecutive stages, but the models have "
                              f"{len(fs.stages)} stage")
        self.k = option(self.options, "k", "kdsvd", positive=True, integer=True)
        self.extra = option(self.options, "extra", "kdsvd", nonneg=True, integer=True)
        s_ch, t_ch = [s.shape[1] for s in fs.stages], [t.shape[1] for t in ft.stages]
        if bool(self.options["connector"]):
            self.connectors = nn.ModuleList(ConvBN(s, t) for s, t in zip(s_ch, t_ch))
        elif s_ch != t_ch:
            raise ConfigError(f"loss 'kdsvd' needs equal channels in student and teacher at "
                              f"every stage, but the student has {s_ch} and the teacher {t_ch} "
                              f"(set option connector=true to map them)")
        else:
            self.connectors = None

    def forward(self, student, teacher, target, index=None, epoch=0):
        s = student.stages
        if self.connectors is not None:
            s = [c(x) for c, x in zip(self.connectors, s)]
        return {"kdsvd": MF.kdsvd(s, teacher.stages, self.k, self.extra)}
