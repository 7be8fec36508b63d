"""torchvision's ImageNet classification state dicts -> the parameter names of timm's models.

For each timm architecture (the class of the model inside ``timm/<name>``) that computes what a
torchvision family computes, an explicit list of :class:`Rule` s: a regular expression matched
at the start of a torchvision parameter name, what that prefix becomes in timm, whether the
tensor is reshaped to timm's shape (the same numbers, e.g. a ``Linear`` stored as a 1×1
convolution), or ``None``: timm has no such part and the tensor is left out. The first matching
rule applies; a name no rule matches is kept as it is (torchvision's and timm's names agree).
Loading through these rules is recorded as ``weights_layout: torchvision``.

What differs, per family (torchvision -> timm; the full table with the measured logits is in
the README, "Using published teachers"):

- ``vgg*`` -> ``vgg*``: the classifier's two hidden ``Linear`` s are timm's ``pre_logits``
  convolutions (7×7 and 1×1: the same numbers reshaped);
- ``regnet_x_*``/``regnet_y_*`` -> ``regnetx_*``/``regnety_*`` (``400mf`` is ``004``; three of
  torchvision's variants have other widths and are timm's ``*_tv``): every name;
- ``convnext_*`` -> ``convnext_*``: every name; the block's ``layer_scale`` (C,1,1) is timm's
  ``gamma`` (C);
- ``mobilenet_v3_*`` -> ``mobilenetv3_*_100``: blocks numbered through in torchvision, by stage
  in timm; the ``Linear`` after the pooling is timm's ``conv_head`` (a 1×1 conv);
- ``efficientnet_b*``, ``efficientnet_v2_*``, ``mobilenet_v2`` -> ``efficientnet_b*``,
  ``efficientnetv2_*``, ``mobilenetv2_100`` (timm's ``EfficientNet`` class builds all three):
  every name;
- ``densenet*`` -> ``densenet*``: the old ``norm.1``/``conv.2`` names torchvision's published
  files keep;
- ``inception_v3`` -> ``inception_v3``: timm has no auxiliary classifier (``AuxLogits.*`` is
  left out);
- ``vit_*`` -> ``vit_*_patch*_224``: every name; the attention's ``in_proj`` is timm's ``qkv``
  (q, k, v in the same order).

ResNets, ResNeXts and wide ResNets need no rules: their names are timm's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Rule:
    """``pattern`` (matched at the start of a torchvision name) -> ``to`` (a replacement for the
    matched prefix, with ``\\1`` groups, or a function of the match; ``None``: the tensor is left
    out); ``reshape``: the tensor takes the shape of the model's tensor of that name."""

    pattern: str
    to: str | Callable[[re.Match], str] | None
    reshape: bool = False


# ---- fixed rule lists ----------------------------------------------------------------------------

VGG = [  # features.<i> are timm's; classifier 0/3/6: Linear(25088|4096, 4096), Linear(4096, 1000)
    Rule(r"classifier\.0\.", "pre_logits.fc1.", reshape=True),  # (4096, 512*7*7) -> 7×7 conv
    Rule(r"classifier\.3\.", "pre_logits.fc2.", reshape=True),  # (4096, 4096) -> 1×1 conv
    Rule(r"classifier\.6\.", "head.fc."),
]

_REGNET_PART = {"proj.0": "downsample.conv", "proj.1": "downsample.bn",
                "f.a.0": "conv1.conv", "f.a.1": "conv1.bn", "f.b.0": "conv2.conv",
                "f.b.1": "conv2.bn", "f.se.fc1": "se.fc1", "f.se.fc2": "se.fc2",
                "f.c.0": "conv3.conv", "f.c.1": "conv3.bn"}

REGNET = [  # trunk_output.block<s>.block<s>-<j> (j from 0) is timm's s<s>.b<j+1>
    Rule(r"stem\.0\.", "stem.conv."),
    Rule(r"stem\.1\.", "stem.bn."),
    Rule(r"trunk_output\.block(\d+)\.block\d+-(\d+)\.(proj\.[01]|f\.[abc]\.[01]|f\.se\.fc[12])\.",
         lambda m: f"s{m.group(1)}.b{int(m.group(2)) + 1}.{_REGNET_PART[m.group(3)]}."),
    Rule(r"fc\.", "head.fc."),
]

_CONVNEXT_PART = {"0": "conv_dw", "2": "norm", "3": "mlp.fc1", "5": "mlp.fc2"}

CONVNEXT = [  # features: 0 the stem, odd i the blocks of stage i//2, even i >= 2 its downsampling
    Rule(r"features\.0\.([01])\.", r"stem.\1."),
    Rule(r"features\.([1357])\.(\d+)\.layer_scale",
         lambda m: f"stages.{int(m.group(1)) // 2}.blocks.{m.group(2)}.gamma", reshape=True),
    Rule(r"features\.([1357])\.(\d+)\.block\.([0235])\.",
         lambda m: f"stages.{int(m.group(1)) // 2}.blocks.{m.group(2)}."
                   f"{_CONVNEXT_PART[m.group(3)]}."),
    Rule(r"features\.([246])\.([01])\.", lambda m: f"stages.{int(m.group(1)) // 2}.downsample."
                                                   f"{m.group(2)}."),
    Rule(r"classifier\.0\.", "head.norm."),  # LayerNorm2d after the pooling, as timm's head
    Rule(r"classifier\.2\.", "head.fc."),
]

DENSENET = [  # the names of torchvision's published files (its loader renames them the same way)
    Rule(r"(features\.denseblock\d+\.denselayer\d+\.(?:norm|relu|conv))\.([12])\.", r"\1\2."),
]

INCEPTION_V3 = [  # torchvision builds the auxiliary classifier for its weights; timm has none
    Rule(r"AuxLogits\.", None),
]

VIT = [  # vit_b_16 -> vit_base_patch16_224, vit_b_32, vit_l_16, vit_l_32, vit_h_14 alike
    Rule(r"class_token", "cls_token"),
    Rule(r"conv_proj\.", "patch_embed.proj."),
    Rule(r"encoder\.pos_embedding", "pos_embed"),
    Rule(r"encoder\.layers\.encoder_layer_(\d+)\.ln_1\.", r"blocks.\1.norm1."),
    Rule(r"encoder\.layers\.encoder_layer_(\d+)\.self_attention\.in_proj_weight",
         r"blocks.\1.attn.qkv.weight"),
    Rule(r"encoder\.layers\.encoder_layer_(\d+)\.self_attention\.in_proj_bias",
         r"blocks.\1.attn.qkv.bias"),
    Rule(r"encoder\.layers\.encoder_layer_(\d+)\.self_attention\.out_proj\.",
         r"blocks.\1.attn.proj."),
    Rule(r"encoder\.layers\.encoder_layer_(\d+)\.ln_2\.", r"blocks.\1.norm2."),
    # mlp.0/mlp.3 (torchvision >= 0.13), linear_1/linear_2 in files saved before
    Rule(r"encoder\.layers\.encoder_layer_(\d+)\.mlp\.(?:0|linear_1)\.", r"blocks.\1.mlp.fc1."),
    Rule(r"encoder\.layers\.encoder_layer_(\d+)\.mlp\.(?:3|linear_2)\.", r"blocks.\1.mlp.fc2."),
    Rule(r"encoder\.ln\.", "norm."),
    Rule(r"heads\.head\.", "head."),
]


# ---- rule lists that depend on the stage lengths of the variant ----------------------------------

#: a timm block's (convolution, norm) pairs in the order torchvision's block holds them; "se":
#: the squeeze-excitation, where the block has one
_BLOCK_PARTS = {
    "DepthwiseSeparableConv": [("conv_dw", "bn1"), "se", ("conv_pw", "bn2")],
    "InvertedResidual": [("conv_pw", "bn1"), ("conv_dw", "bn2"), "se", ("conv_pwl", "bn3")],
    "EdgeResidual": [("conv_exp", "bn1"), "se", ("conv_pwl", "bn2")],  # EfficientNetV2's fused
    "ConvBnAct": [("conv", "bn1")],
}


def _parts(block: nn.Module) -> list[tuple[str, str] | str]:
    kind = type(block).__name__
    if kind not in _BLOCK_PARTS:
        raise KeyError(kind)
    has_se = not isinstance(getattr(block, "se", nn.Identity()), nn.Identity)
    return [p for p in _BLOCK_PARTS[kind] if p != "se" or has_se]


def _block_rules(tv: str, timm: str, parts: list[tuple[str, str] | str],
                 sequential: bool) -> list[Rule]:
    """One block: torchvision's ``<tv>.<k>.0.``/``.1.`` (conv, norm) and ``<tv>.<k>.fc1.``/
    ``fc2.`` (squeeze-excitation) for part k; ``sequential``: MobileNetV2's ``conv.<k>``, whose
    last convolution and norm are two entries rather than one pair."""
    rules = []
    for k, part in enumerate(parts):
        at = f"{re.escape(tv)}\\.{k}\\."
        if part == "se":
            rules += [Rule(at + r"fc1\.", f"{timm}.se.conv_reduce."),
                      Rule(at + r"fc2\.", f"{timm}.se.conv_expand.")]
        elif sequential and k == len(parts) - 1:
            rules += [Rule(at, f"{timm}.{part[0]}."),
                      Rule(f"{re.escape(tv)}\\.{k + 1}\\.", f"{timm}.{part[1]}.")]
        else:
            rules += [Rule(at + r"0\.", f"{timm}.{part[0]}."),
                      Rule(at + r"1\.", f"{timm}.{part[1]}.")]
    return rules


def efficientnet(model: nn.Module) -> list[Rule]:
    """timm's ``EfficientNet`` class, for torchvision's EfficientNet-B0..B7 (``features.<s+1>.
    <j>.block.<k>``: stages as timm's) and MobileNetV2 (``features.<n>.conv.<k>``: blocks
    numbered through, from 1)."""
    blocks = [(s, j, b) for s, stage in enumerate(model.blocks) for j, b in enumerate(stage)]
    rules = [Rule(r"features\.0\.0\.", "conv_stem."), Rule(r"features\.0\.1\.", "bn1.")]
    for n, (s, j, block) in enumerate(blocks, start=1):
        parts = _parts(block)
        rules += _block_rules(f"features.{s + 1}.{j}.block", f"blocks.{s}.{j}", parts, False)
        rules += _block_rules(f"features.{n}.conv", f"blocks.{s}.{j}", parts, True)
    for last in (len(model.blocks) + 1, len(blocks) + 1):  # the 1×1 head conv of either
        rules += [Rule(rf"features\.{last}\.0\.", "conv_head."),
                  Rule(rf"features\.{last}\.1\.", "bn2.")]
    return [*rules, Rule(r"classifier\.1\.", "classifier.")]


def mobilenetv3(model: nn.Module) -> list[Rule]:
    """timm's ``MobileNetV3``, for torchvision's MobileNetV3 (``features.<n>.block.<k>``: blocks
    numbered through, from 1; the last, a 1×1 conv, ``features.<n>.0``/``.1``); torchvision's
    ``Linear`` after the pooling is timm's ``conv_head``, a 1×1 conv with a bias."""
    blocks = [(s, j, b) for s, stage in enumerate(model.blocks) for j, b in enumerate(stage)]
    rules = [Rule(r"features\.0\.0\.", "conv_stem."), Rule(r"features\.0\.1\.", "bn1.")]
    for n, (s, j, block) in enumerate(blocks, start=1):
        parts = _parts(block)
        if type(block).__name__ == "ConvBnAct":
            rules += [Rule(rf"features\.{n}\.0\.", f"blocks.{s}.{j}.conv."),
                      Rule(rf"features\.{n}\.1\.", f"blocks.{s}.{j}.bn1.")]
        else:
            rules += _block_rules(f"features.{n}.block", f"blocks.{s}.{j}", parts, False)
    return [*rules, Rule(r"classifier\.0\.", "conv_head.", reshape=True),
            Rule(r"classifier\.3\.", "classifier.")]


#: timm architecture (the class of the model inside ``timm/<name>``) -> torchvision's names for it
RULES: dict[str, list[Rule] | Callable[[nn.Module], list[Rule]]] = {
    "VGG": VGG,
    "RegNet": REGNET,
    "ConvNeXt": CONVNEXT,
    "DenseNet": DENSENET,
    "InceptionV3": INCEPTION_V3,
    "VisionTransformer": VIT,
    "EfficientNet": efficientnet,
    "MobileNetV3": mobilenetv3,
}


def bn_eps(model: nn.Module) -> float | None:
    """The BatchNorm eps torchvision's family normalises with where timm's default (1e-5)
    differs: MobileNetV3 and EfficientNetV2 use 1e-3 (timm's ``bn_eps`` option builds that)."""
    kind = type(model).__name__
    if kind == "MobileNetV3" or (kind == "EfficientNet" and any(
            type(m).__name__ == "EdgeResidual" for m in model.modules())):
        return 1e-3
    return None


def bn_eps_mismatch(model: nn.Module) -> str | None:
    """What differs when ``model``'s BatchNorm eps is not torchvision's for its family (its
    logits then differ from torchvision's: 1e-3 against 1e-5 moves MobileNetV3-Small's by ~2e-5
    and EfficientNetV2-S's by ~1e-3 on random weights), else ``None``."""
    want = bn_eps(model)
    if want is None:
        return None
    found = sorted({m.eps for m in model.modules()
                    if isinstance(m, nn.modules.batchnorm._BatchNorm)})
    if not found or found == [want]:
        return None
    return (f"torchvision's weights for it were trained with BatchNorm eps {want:g}, the model "
            f"has {', '.join(f'{e:g}' for e in found)}: its logits differ from torchvision's "
            f"unless built with bn_eps={want:g} (--teacher-opt/--student-opt bn_eps={want:g})")


def rules_for(model: nn.Module) -> list[Rule] | None:
    """The rules for a timm model, or ``None`` when torchvision has no such family (or the
    variant is built of blocks the rules do not know)."""
    rules = RULES.get(type(model).__name__)
    if callable(rules):
        try:
            return rules(model)
        except (KeyError, AttributeError, TypeError):  # e.g. EfficientNetV2's EdgeResidual
            return None
    return rules


def convert(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """A torchvision state dict in timm's names for ``model`` (timm's own module, no
    ``model.`` prefix), or ``None`` when no rules apply. A tensor whose rule reshapes it takes
    the model's shape only when it holds as many numbers; otherwise it is left as it is, so the
    mismatch is reported with both shapes."""
    rules = rules_for(model)
    if rules is None:
        return None
    own = model.state_dict()
    compiled = [(re.compile(rule.pattern), rule) for rule in rules]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for pattern, rule in compiled:
            m = pattern.match(key)
            if m is None:
                continue
            if rule.to is None:
                break
            to = rule.to(m) if callable(rule.to) else m.expand(rule.to)
            new = to + key[m.end():]
            if rule.reshape and new in own and own[new].numel() == value.numel():
                value = value.reshape(own[new].shape)
            out[new] = value
            break
        else:
            out[key] = value
    return out
