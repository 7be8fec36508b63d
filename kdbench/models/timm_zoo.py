"""The CIFAR zoo in timm's own registry: importing this module registers ``kdbench_<name>``.

    import kdbench.models.timm_zoo  # noqa: F401
    model = timm.create_model("kdbench_resnet20", num_classes=100)

The ``kdbench_`` prefix keeps the zoo apart from timm's ImageNet models of similar names
(timm's ``resnet50`` is the 7×7-stem ImageNet network, ours the 3×3-stem CIFAR one). The models
default to 100 classes (CIFAR-100, the zoo's benchmark) and have no pretrained weights; a local
file loads with ``timm.create_model(..., checkpoint_path=PATH)`` or ``load_state_dict``.
kdbench itself reaches them as ``resnet20`` (or ``timm/kdbench_resnet20``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from timm.models import register_model

from ..errors import ConfigError
from .base import KDModel
from .registry import ZOO

PREFIX = "kdbench_"

#: timm drops these itself for its own models; a zoo factory does not take them
_TIMM_ONLY = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def _entrypoint(name: str, factory: Callable[..., KDModel]) -> Callable[..., KDModel]:
    def entry(pretrained: bool = False, num_classes: int = 100, in_chans: int = 3,
              **kwargs: Any) -> KDModel:
        if pretrained:
            raise ConfigError(f"{PREFIX}{name} has no pretrained weights; load a local state "
                              f"dict (checkpoint_path=..., or --student-weights)")
        device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
        for key in _TIMM_ONLY:
            kwargs.pop(key, None)
        model = factory(num_classes, in_chans, **kwargs)
        return model.to(device=device, dtype=dtype) if device or dtype else model

    entry.__name__ = entry.__qualname__ = PREFIX + name
    entry.__module__ = __name__
    entry.__doc__ = factory.__doc__
    return entry


for _name, (_factory, _family) in ZOO.items():
    globals()[PREFIX + _name] = register_model(_entrypoint(_name, _factory))
