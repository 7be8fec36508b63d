"""The ``memorisation`` evaluator: how much of the corrupted training labels a model fits, and
its pure metric function :func:`memorisation`.

The metric function works on predictions and labels (tensors on any device; the arithmetic is
done on the CPU in float64). ``predictions`` are class indices (N,) or logits/scores (N, C),
whose argmax is taken. Every value is a percentage (0-100), like the engine's ``top1``, and a
value over an empty set is NaN (never 0, which would read as a measured failure).

It serves the label-noise setting of Sarfraz, Arani & Zonooz, "Knowledge Distillation Beyond
Model Compression" (ICPR 2020), as kdbench runs it: the ``label_noise`` data transform
(:mod:`kdbench.data.label_noise`) keeps the clean labels this evaluator reads.
"""

from __future__ import annotations

import math

import torch

from ..data.label_noise import CLEAN
from .base import EvalContext, Outputs, check_same_length, predicted_classes, register_evaluator

__all__ = ["Memorisation", "memorisation"]


def _percent(hits: torch.Tensor) -> float:
    return 100.0 * float(hits.double().mean()) if hits.numel() else math.nan


def memorisation(predictions: torch.Tensor, labels: torch.Tensor,
                 clean_labels: torch.Tensor) -> dict[str, float]:
    """How far a model fitted the corrupted training labels (evaluated at the end of training).

    ``labels`` are the labels it was trained on, ``clean_labels`` the true ones; a sample is
    *noisy* where they differ (exactly :func:`kdbench.data.label_noise.corrupt_labels`'s ``noisy``
    mask; a ``uniform`` draw that kept its label counts as clean). Over the noisy samples:

    * ``noisy_fit_noisy`` — % predicted as the given, wrong label ("memorised");
    * ``noisy_fit_true`` — % predicted as the true label ("corrected");
    * ``noisy_fit_other`` — % predicted as neither (the three add up to 100);

    and over the clean samples:

    * ``clean_fit`` — % predicted as the given (= true) label.

    Also ``noisy_count`` and ``clean_count`` (sample numbers, as floats). A metric over an empty
    subset (no noise, or everything noisy) is NaN. The split of the noisy subset into memorised /
    corrected / other is the one of Arpit et al., "A Closer Look at Memorization in Deep
    Networks" (ICML 2017) and of the noisy-label literature's training curves; the names are
    kdbench's.
    """
    what = "memorisation"
    pred = predicted_classes(predictions, what)
    given = labels.detach().to("cpu", torch.int64)
    true = clean_labels.detach().to("cpu", torch.int64)
    check_same_length(what, predictions=pred, labels=given, clean_labels=true)
    noisy = given != true
    pn, gn, tn = pred[noisy], given[noisy], true[noisy]
    fit_noisy, fit_true = pn == gn, pn == tn
    return {
        "noisy_fit_noisy": _percent(fit_noisy),
        "noisy_fit_true": _percent(fit_true),
        "noisy_fit_other": _percent(~(fit_noisy | fit_true)),
        "clean_fit": _percent(pred[~noisy] == given[~noisy]),
        "noisy_count": float(noisy.sum()),
        "clean_count": float((~noisy).sum()),
    }


@register_evaluator(
    "memorisation", every=0, lower_is_better=("noisy_fit_noisy",),
    description="after the last epoch: % of the noisy training labels fitted to the noisy vs "
                "the true label (label_noise's clean labels; NaN without noise)")
class Memorisation:
    """How much of the noisy training subset the model fits to its noisy label vs its true one,
    after the last epoch (``every=0``: memorisation is a property of the trained model).

    Predictions on the un-augmented training split (eval mode) against the labels trained on
    and the clean labels the ``label_noise`` transform keeps in the split's meta; without such
    a transform every label is clean, so the noisy-subset metrics are NaN and ``clean_fit`` is
    the training accuracy. Metrics (%, :func:`memorisation`): ``noisy_fit_noisy`` (memorised),
    ``noisy_fit_true`` (corrected), ``noisy_fit_other``, ``clean_fit``, and the subset sizes
    ``noisy_count``, ``clean_count``.
    """

    needs = ("train_logits",)
    metrics = ("noisy_fit_noisy", "noisy_fit_true", "noisy_fit_other", "clean_fit",
               "noisy_count", "clean_count")

    def __init__(self, ctx: EvalContext):
        self.ctx = ctx

    def __call__(self, out: Outputs) -> dict[str, float]:
        assert out.train_logits is not None and out.train_labels is not None
        clean = out.train_meta.get(CLEAN, out.train_labels)
        return memorisation(out.train_logits, out.train_labels, clean)
