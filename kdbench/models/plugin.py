"""Built-in model plugin: registers the CIFAR zoo and the ``timm/*`` namespace.

The zoo is what the family modules registered beside their definitions
(:data:`kdbench.models.registry.ZOO`, complete once ``kdbench.models`` is imported).
"""

from __future__ import annotations

from ..hookspecs import hookimpl
from . import timm_adapter
from .registry import ZOO


@hookimpl
def register_models(register):
    for name, (factory, family) in ZOO.items():
        register(name, factory, family=family)
    # timm is imported only when a timm/ name is used: it costs seconds to import
    register("timm/*", timm_adapter.create, family="timm", validate=timm_adapter.validate,
             description="any timm architecture as timm/<name> (pretrained=False; local "
                         "weights via --student-weights)")
