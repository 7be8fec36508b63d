"""The CIFAR zoo, registered beside its definitions: ``@register_model(family=...)``.

Each family module (``resnet``, ``wrn``, ``vgg``, ``mobilenetv2``, ``shufflenet``, ``cnn32``)
marks its factories where it defines them, as timm registers a model beside its definition::

    @register_model(family="mobilenetv2")
    def mobilenetv2_075(num_classes, in_chans=3): ...

    resnet50 = zoo_factory("resnet50", ...)     # a factory a helper made
    register_model(resnet50, family="resnet")

The registry name is the factory's ``__name__``, the description its docstring's first line.
``kdbench.models`` imports every family module (timm's way), so :data:`ZOO` is complete as soon
as the package is imported; the built-in model plugin (:mod:`kdbench.models.plugin`) registers it
in kdbench's registry and :mod:`kdbench.models.timm_zoo` in timm's as ``kdbench_<name>``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import PluginError
from .base import KDModel

Factory = Callable[..., KDModel]

#: registry name -> (factory, family), family module by family module (as ``kdbench.models``
#: imports them), each in its definition order
ZOO: dict[str, tuple[Factory, str]] = {}


def register_model(factory: Factory | None = None, /, *, family: str) -> Any:
    """Put ``factory`` into :data:`ZOO` under its ``__name__``; used as ``@register_model(
    family=...)`` or called on a factory made by a helper. Returns the factory unchanged."""
    def add(f: Factory) -> Factory:
        name = f.__name__
        if name in ZOO and ZOO[name][1] != family:  # the same family again: a reloaded module
            raise PluginError(f"zoo model {name!r} is defined twice (families "
                              f"{ZOO[name][1]!r} and {family!r})")
        ZOO[name] = (f, family)
        return f
    return add if factory is None else add(factory)
