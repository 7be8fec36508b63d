"""Robustness metrics: memorisation of noisy labels, per-class and long-tail group accuracy.

Pure functions on predictions and labels (tensors on any device; the arithmetic is done on the
CPU in float64). ``predictions`` are class indices (N,) or logits/scores (N, C), whose argmax is
taken. Every value is a percentage (0-100), like the engine's ``top1``, and a value over an empty
set is NaN (never 0, which would read as a measured failure).

They serve Sarfraz, Arani & Zonooz, "Knowledge Distillation Beyond Model Compression"
(ICPR 2020): label noise (how much of the corrupted training labels a student fits) and class
imbalance (accuracy on the many-, medium- and few-shot classes).
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError

__all__ = ["long_tail_accuracy", "memorisation", "per_class_accuracy", "shot_groups"]


def _classes(predictions: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(predictions, torch.Tensor) or predictions.dim() not in (1, 2):
        shape = tuple(predictions.shape) if isinstance(predictions, torch.Tensor) else None
        raise ConfigError(f"{what}: predictions must be class indices (N,) or logits (N, C), "
                          f"got shape {shape}")
    p = predictions.argmax(dim=1) if predictions.dim() == 2 else predictions
    return p.detach().to("cpu", torch.int64)


def _same_length(what: str, **vectors: torch.Tensor) -> None:
    lengths = {name: int(v.shape[0]) for name, v in vectors.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise ConfigError(f"{what}: lengths differ ({shown})")


def _percent(hits: torch.Tensor) -> float:
    return 100.0 * float(hits.double().mean()) if hits.numel() else math.nan


def memorisation(predictions: torch.Tensor, labels: torch.Tensor,
                 clean_labels: torch.Tensor) -> dict[str, float]:
    """How far a model fitted the corrupted training labels (evaluated at the end of training).

    ``labels`` are the labels it was trained on, ``clean_labels`` the true ones; a sample is
    *noisy* where they differ (exactly :func:`kdbench.data.corrupt.corrupt_labels`'s ``noisy``
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
    pred = _classes(predictions, what)
    given = labels.detach().to("cpu", torch.int64)
    true = clean_labels.detach().to("cpu", torch.int64)
    _same_length(what, predictions=pred, labels=given, clean_labels=true)
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


def per_class_accuracy(predictions: torch.Tensor, labels: torch.Tensor,
                       num_classes: int) -> list[float]:
    """Top-1 accuracy (%) of each class c = 0..C−1 over the samples labelled c; NaN for a class
    with no samples in ``labels``."""
    what = "per-class accuracy"
    pred = _classes(predictions, what)
    y = labels.detach().to("cpu", torch.int64)
    _same_length(what, predictions=pred, labels=y)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise ConfigError(f"{what}: label {bad} is outside the valid range 0..{num_classes - 1}")
    total = torch.bincount(y, minlength=num_classes).double()
    correct = torch.bincount(y[pred == y], minlength=num_classes).double()
    return [100.0 * float(c / t) if t > 0 else math.nan for c, t in zip(correct, total)]


def shot_groups(train_counts: list[int] | torch.Tensor, many_above: int = 100,
                few_below: int = 20) -> dict[str, list[int]]:
    """The classes of each long-tail group, from the *training* count n_c of every class.

    ``many``: n_c > ``many_above``; ``few``: n_c < ``few_below``; ``medium``: the rest
    (``few_below`` ≤ n_c ≤ ``many_above``). Defaults 100 and 20: Liu et al., "Large-Scale
    Long-Tailed Recognition in an Open World" (OLTR, CVPR 2019) — many-shot > 100, few-shot
    < 20 images, as the paper says and as facebookresearch/classifier-balancing ``utils.py``
    ``shot_acc`` (commit 22370c6) codes it. OLTR's own ``utils.py`` (commit f50e375, lines
    70-75) uses ≥ 100 and ≤ 20 instead; that differs only for classes with exactly 100 or 20
    images (CIFAR-100-LT at ρ = 100 has one with 20): pass ``many_above=99, few_below=21`` to
    reproduce it.
    """
    if not few_below <= many_above + 1:
        raise ConfigError(f"long-tail groups: few_below ({few_below}) must be <= many_above + 1 "
                          f"({many_above + 1})")
    counts = [int(n) for n in (train_counts.tolist() if isinstance(train_counts, torch.Tensor)
                               else train_counts)]
    groups: dict[str, list[int]] = {"many": [], "medium": [], "few": []}
    for c, n in enumerate(counts):
        key = "many" if n > many_above else "few" if n < few_below else "medium"
        groups[key].append(c)
    return groups


def long_tail_accuracy(predictions: torch.Tensor, labels: torch.Tensor,
                       train_counts: list[int] | torch.Tensor, many_above: int = 100,
                       few_below: int = 20) -> dict[str, float | list[float]]:
    """Accuracy on the test split by long-tail group, plus every class's accuracy.

    ``acc_many``, ``acc_medium``, ``acc_few``: the *mean of the per-class accuracies* of the
    group's classes (each class weighs the same, as in OLTR's ``shot_acc``), groups from the
    training counts by :func:`shot_groups`. A group with no class — or none with test samples —
    is NaN (OLTR's code would average an empty list, classifier-balancing reports 0).
    ``acc_per_class``: the list of :func:`per_class_accuracy` (NaN for a class absent from the
    test split). The number of classes is ``len(train_counts)``.
    """
    num_classes = len(train_counts)
    acc = per_class_accuracy(predictions, labels, num_classes)
    groups = shot_groups(train_counts, many_above, few_below)
    out: dict[str, float | list[float]] = {}
    for name, members in groups.items():
        seen = [acc[c] for c in members if not math.isnan(acc[c])]
        out[f"acc_{name}"] = sum(seen) / len(seen) if seen else math.nan
    out["acc_per_class"] = acc
    return out
