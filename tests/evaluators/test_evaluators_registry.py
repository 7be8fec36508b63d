"""The evaluators' registration beside their classes."""

from __future__ import annotations

from kdbench import plugins
from kdbench.evaluators import plugin  # noqa: F401 - imports (so collects) every evaluator's file
from kdbench.evaluators.base import register_evaluator


def test_each_evaluator_is_registered_from_its_own_file_with_its_declared_outputs():
    assert set(register_evaluator.items) == {"accuracy", "retrieval", "memorisation", "longtail",
                                         "agreement"}
    for name, (cls, _) in register_evaluator.items.items():
        assert cls.__module__ == f"kdbench.evaluators.{name}"
        entry = plugins.get("evaluator", name)
        assert entry.factory is cls and entry.source == "builtin (kdbench.evaluators.plugin)"
        assert entry.needs == cls.needs and entry.metrics == cls.metrics
