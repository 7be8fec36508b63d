"""Built-in model plugin: registers the CIFAR zoo."""

from __future__ import annotations

from ..hookspecs import hookimpl
from .zoo import ZOO


@hookimpl
def register_models(register):
    for name, (factory, family) in ZOO.items():
        register(name, factory, family=family)
