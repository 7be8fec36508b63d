"""Evaluators: what is measured on a model, and when, as plugins.

The machinery (:class:`EvalContext`, :class:`Outputs`, :class:`Suite`, :func:`build_suite`,
:func:`summarize`) is in :mod:`.base`; each built-in evaluator is one file holding its pure metric
functions and its class, registered beside it: ``accuracy`` (top-1/top-5 and test loss, every
epoch), ``retrieval`` (InDistill's mAP), ``memorisation`` (label noise) and ``longtail`` (class
imbalance). :mod:`.plugin` hands them to the plugin registry.
"""

from __future__ import annotations

from .base import (
    EvalContext,
    Outputs,
    Suite,
    build_suite,
    model_outputs,
    summarize,
    test_accuracy,
)

__all__ = ["EvalContext", "Outputs", "Suite", "build_suite", "model_outputs", "summarize",
           "test_accuracy"]

#: old module paths (kdbench < 0.3) -> where their names live now (see kdbench.compat)
MOVED: dict[str, str | tuple[str, ...]] = {
    "builtin": "kdbench.evaluators.accuracy",
    "robust": ("kdbench.evaluators.memorisation", "kdbench.evaluators.longtail"),
    "robustness": ("kdbench.evaluators.memorisation", "kdbench.evaluators.longtail"),
}
