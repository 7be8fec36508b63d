"""Built-in evaluator plugin."""

from __future__ import annotations

from ..hookspecs import hookimpl
from .builtin import Accuracy
from .retrieval import DISTANCES, Retrieval
from .robust import LongTail, Memorisation


@hookimpl
def register_evaluators(register):
    register("accuracy", Accuracy, needs=Accuracy.needs, metrics=Accuracy.metrics, every=1,
             lower_is_better=("test_loss",), units={"test_loss": "cross-entropy, nats"})
    # InDistill's retrieval evaluation: mAP and precision@100 by cosine and Euclidean distance
    register("retrieval", Retrieval, needs=Retrieval.needs, metrics=Retrieval.metrics, every=0,
             units={m: "0-1" for m in Retrieval.metrics},
             defaults={"distances": list(DISTANCES), "interpolation": "all_ranks",
                       "reference_batch_size": 128, "chunk_size": 256},
             types={"distances": list[str]})
    # the robustness settings (label noise, class imbalance): kdbench.evaluators.robust
    register("memorisation", Memorisation, needs=Memorisation.needs,
             metrics=Memorisation.metrics, every=0, lower_is_better=("noisy_fit_noisy",),
             description="after the last epoch: % of the noisy training labels fitted to the "
                         "noisy vs the true label (label_noise's clean labels; NaN without noise)")
    register("longtail", LongTail, needs=LongTail.needs, metrics=LongTail.metrics, every=1,
             defaults={"many_above": 100, "few_below": 20},
             description="test accuracy over the many/medium/few-shot classes by training "
                         "count (> many_above, < few_below), per class after the last epoch")
