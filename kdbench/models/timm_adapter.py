"""Any timm model as ``timm/<name>``, behind the same feature view as the CIFAR zoo.

The feature view comes from timm's uniform API: ``forward_intermediates`` gives the stage outputs
(``model.feature_info`` says their channels and reductions without running data) and the final
features, ``forward_head(·, pre_logits=True)`` the pooled embedding, ``forward_head`` the logits.
timm stages end inside blocks we cannot split, so timm models have no pre-activation tap
(``has_preact`` False); a model without ``forward_intermediates`` is logit-only
(``has_features`` False) and still works with logit losses.

CNNs expose every ``feature_info`` entry (for a ResNet: the stem's activation and layers 1–4).
Transformers, whose every block is an entry, expose four evenly spaced blocks (for 12 blocks:
3, 6, 9, 12), as NCHW maps without prefix tokens. ``out_indices`` chooses others.

Models trained at a fixed size (ViTs: ``fixed_input_size`` in their pretrained config) are built
with ``dynamic_img_size`` and ``dynamic_img_pad`` when they support it, so the position embedding
of the 224 grid is resampled to whatever grid the dataset gives (32×32 CIFAR → 2×2 patches at
patch 16), and local 224 weights still load. Their minimum input is one patch. Models that
cannot do that need their configured size.

Nothing is ever downloaded: models are created with ``pretrained=False``; weights come from a
local file (``--student-weights``), timm's own state-dict layout or ours.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, UnknownNameError
from .base import Features, KDModel, StageInfo

#: more feature_info entries than this means a transformer-like model: expose four of them
MAX_STAGES = 6


def timm_names() -> list[str]:
    """Every architecture name timm knows (the kdbench zoo included, as ``kdbench_*``)."""
    import timm

    from . import timm_zoo  # noqa: F401 - registers the zoo in timm's registry

    return timm.list_models()


def validate(variant: str) -> None:
    """Raise UnknownNameError (with close matches) for a name timm does not know."""
    names = timm_names()
    if variant.split(".", 1)[0] not in set(names):
        raise UnknownNameError("model", f"timm/{variant}", [f"timm/{n}" for n in names],
                               hint="`kdbench models --timm PATTERN` lists timm models")


def create(num_classes: int, in_chans: int = 3, *, variant: str,
           out_indices: list[int] | tuple[int, ...] | None = None, **kwargs: Any) -> KDModel:
    """Build timm's ``variant`` (never pretrained) with our head size and input channels."""
    import timm

    from . import timm_zoo  # noqa: F401

    if kwargs.pop("pretrained", False):
        raise ConfigError("timm models are never downloaded here; load local weights with "
                          "--student-weights PATH (a state dict or .safetensors file)")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    base = dict(pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    cfg = timm.models.get_pretrained_cfg(variant.split(".", 1)[0])
    attempts = [base]
    if cfg is not None and cfg.fixed_input_size and not {"img_size", "dynamic_img_size"} & set(
            kwargs):
        attempts.insert(0, dict(base, dynamic_img_size=True, dynamic_img_pad=True))
    for i, attempt in enumerate(attempts):
        try:
            model = timm.create_model(variant, **attempt)
            break
        except TypeError as exc:
            if i + 1 == len(attempts) or "unexpected keyword" not in str(exc):
                raise
    if isinstance(model, KDModel):  # a kdbench zoo model registered in timm
        return model
    return TimmModel(model, variant, out_indices, fixed_size=_fixed_size(model, cfg))


def _fixed_size(model: nn.Module, cfg: Any) -> int:
    """The smallest input side a model takes: one patch for a dynamic-size transformer, its
    configured size for a fixed-size one, 1 for a CNN (padded convolutions take anything)."""
    embed = getattr(model, "patch_embed", None)
    if embed is not None and not getattr(embed, "strict_img_size", True):
        return max(getattr(embed, "patch_size", (1, 1)))
    if embed is not None or (cfg is not None and cfg.fixed_input_size):
        size = getattr(embed, "img_size", None) or (cfg.input_size[1:] if cfg else (1, 1))
        return max(size)
    return 1


class TimmModel(KDModel):
    """A timm model with the kdbench feature view. Its parameters live under ``model.``; a
    state dict in timm's own layout (no prefix) loads too, dropping a classifier whose shape
    does not match (as timm does when it loads pretrained weights for another class count)."""

    def __init__(self, model: nn.Module, name: str,
                 out_indices: list[int] | tuple[int, ...] | None = None, fixed_size: int = 1):
        super().__init__()
        self.model = model
        self.timm_name = name
        self.num_classes = model.num_classes
        self.in_chans = getattr(model, "in_chans", None) or _first_conv_in(model)
        self.embedding_dim = getattr(model, "head_hidden_size", None) or model.num_features
        self.min_input_size = fixed_size
        self.has_preact = False
        info = list(getattr(model, "feature_info", None) or [])
        #: how much the network shrinks its input, and the input it was made for (timm's
        #: pretrained config): what the up-front input-size warning says
        self.reduction = max((int(i.get("reduction", 1)) for i in info), default=1)
        cfg = getattr(model, "pretrained_cfg", None) or {}
        size = cfg.get("input_size") if isinstance(cfg, dict) else None
        self.expected_input_size = int(size[-1]) if size else None
        self.has_features = bool(info) and callable(getattr(model, "forward_intermediates", None))
        if not self.has_features:
            self.out_indices: list[int] = []
            self.stage_info = []
            return
        n = len(info)
        if out_indices is None:
            out_indices = list(range(n)) if n <= MAX_STAGES else [
                round(n * k / 4) - 1 for k in range(1, 5)]
        bad = [i for i in out_indices if not -n <= i < n]
        if bad:
            raise ConfigError(f"timm/{name}: out_indices {bad} out of range (it has {n} "
                              f"feature stages, 0..{n - 1})")
        self.out_indices = [i % n for i in out_indices]
        self.stage_info = [StageInfo(str(info[i].get("module", f"stage{i}")),
                                     int(info[i]["num_chs"]), int(info[i]["reduction"]))
                           for i in self.out_indices]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def features(self, x: torch.Tensor) -> Features:
        if not self.has_features:
            return Features(logits=self.model(x))
        final, stages = self.model.forward_intermediates(x, indices=self.out_indices,
                                                         output_fmt="NCHW")
        embedding = self.model.forward_head(final, pre_logits=True)
        return Features(self.model.forward_head(final), embedding, list(stages))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if state_dict and not any(k.startswith("model.") for k in state_dict):
            state_dict = self._adopt_timm_state(state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _adopt_timm_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        own = self.model.state_dict()
        head = _classifier_keys(self.model)
        dropped = [k for k in head if k in state and state[k].shape != own[k].shape]
        if dropped:
            warnings.warn(f"kdbench: timm/{self.timm_name}: keeping a fresh classifier, the "
                          f"weights' {', '.join(dropped)} have another shape "
                          f"({tuple(state[dropped[0]].shape)} vs {tuple(own[dropped[0]].shape)})",
                          RuntimeWarning, stacklevel=3)
            state = {**state, **{k: own[k] for k in dropped}}
        return {f"model.{k}": v for k, v in state.items()}


def _classifier_keys(model: nn.Module) -> list[str]:
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(classifier, nn.Module):
        return []
    ids = {id(p) for p in classifier.parameters()}
    return [k for k, p in model.named_parameters() if id(p) in ids]


def _first_conv_in(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return 3
