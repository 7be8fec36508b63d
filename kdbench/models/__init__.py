"""Architectures: the CIFAR zoo and adapters, all behind :class:`KDModel`'s feature view.

One file per family (``resnet``, ``wrn``, ``vgg``, ``mobilenetv2``, ``shufflenet``, ``cnn32``),
each registering its models beside their definitions (:mod:`.registry`); importing this package
imports every family, as timm's ``timm.models`` does, so the zoo (:data:`.registry.ZOO`) is
complete wherever it is read. :mod:`.timm_adapter` brings any timm model behind the same view.
"""

from __future__ import annotations

# each family module registers its models in .registry.ZOO when imported
from . import cnn32, mobilenetv2, resnet, shufflenet, vgg, wrn  # noqa: F401
from .base import Features, KDModel, StageInfo, count_parameters

__all__ = [
    "Features",
    "KDModel",
    "StageInfo",
    "count_parameters",
    "create_meta_model",
    "create_model",
    "load_weights",
]

#: old module paths (kdbench < 0.3) -> where their names live now (see kdbench.compat)
MOVED: dict[str, str | tuple[str, ...]] = {
    "zoo": "kdbench.models.registry",
}


def create_model(name: str, num_classes: int, in_chans: int = 3, **kwargs) -> KDModel:
    """Build a registered architecture by name (``resnet20``, ``timm/resnet18``, ...).

    Keyword arguments whose value is None are dropped, so layered configuration never
    clobbers a model's own defaults.
    """
    from ..plugins import get

    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return get("model", name).create(num_classes=num_classes, in_chans=in_chans, **kwargs)


def create_meta_model(name: str, num_classes: int, in_chans: int = 3, **kwargs) -> KDModel:
    """:func:`create_model` on PyTorch's ``meta`` device: shapes without memory or
    initialisation work (parameter and MAC counts).

    The name is resolved first, outside the meta context, so plugin modules (and timm) that a
    first lookup imports create their module-level tensors on the real device.
    """
    import torch

    from ..plugins import get

    entry = get("model", name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    with torch.device("meta"):
        return entry.create(num_classes=num_classes, in_chans=in_chans, **kwargs)


def load_weights(model, path: str, **options):
    """Load a local weights file into ``model``: a state dict (``.pt``/``.pth``, or a
    checkpoint holding one), ``.safetensors``, RepDistiller's and mdistiller's checkpoints,
    timm's; never running code from the file. Returns what was read (:class:`.weights.Loaded`:
    format, key layout, SHA-256). See :mod:`.weights`."""
    from . import weights

    return weights.load_weights(model, path, **options)
