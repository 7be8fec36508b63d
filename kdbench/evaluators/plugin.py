"""Built-in evaluator plugin."""

from __future__ import annotations

from ..hookspecs import hookimpl
from .builtin import Accuracy
from .retrieval import DISTANCES, Retrieval


@hookimpl
def register_evaluators(register):
    register("accuracy", Accuracy, needs=Accuracy.needs, metrics=Accuracy.metrics, every=1,
             lower_is_better=("test_loss",))
    # InDistill's retrieval evaluation: mAP and precision@100 by cosine and Euclidean distance
    register("retrieval", Retrieval, needs=Retrieval.needs, metrics=Retrieval.metrics, every=0,
             defaults={"distances": list(DISTANCES), "interpolation": "all_ranks",
                       "reference_batch_size": 128, "chunk_size": 256},
             types={"distances": list[str]})
