"""Built-in evaluator plugin: ``accuracy``, ``retrieval``, ``memorisation``, ``longtail`` and
``agreement``.

Each evaluator is registered beside its class (``@register_evaluator`` of :mod:`.base`);
importing their files collects them, and the hook hands them to the plugin registry with the
``needs`` and ``metrics`` each class declares.
"""

from __future__ import annotations

from ..hookspecs import hookimpl
from . import accuracy, agreement, longtail, memorisation, retrieval  # noqa: F401 - they register
from .base import register_evaluator


@hookimpl
def register_evaluators(register):
    for name, (cls, fields) in register_evaluator.items.items():
        register(name, cls, needs=cls.needs, metrics=cls.metrics, **fields)
