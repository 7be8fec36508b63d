"""Built-in evaluator plugin."""

from __future__ import annotations

from ..hookspecs import hookimpl
from .builtin import Accuracy


@hookimpl
def register_evaluators(register):
    register("accuracy", Accuracy, needs=Accuracy.needs, metrics=Accuracy.metrics, every=1,
             lower_is_better=("test_loss",))
