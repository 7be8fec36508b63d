"""Built-in model plugin: registers the CIFAR zoo."""

from __future__ import annotations

from ..hookspecs import hookimpl
from . import resnet


@hookimpl
def register_models(register):
    for fn in (resnet.resnet8, resnet.resnet20, resnet.resnet56):
        register(fn.__name__, fn, family="resnet")
