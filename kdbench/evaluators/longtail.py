"""The ``longtail`` evaluator: test accuracy per class and per long-tail group (many-, medium-
and few-shot classes), and its pure metric functions :func:`per_class_accuracy`,
:func:`shot_groups` and :func:`long_tail_accuracy`.

The metric functions work on predictions and labels (tensors on any device; the arithmetic is
done on the CPU in float64). ``predictions`` are class indices (N,) or logits/scores (N, C),
whose argmax is taken. Every accuracy is a percentage (0-100), like the engine's ``top1``, and a
value over an empty set is NaN (never 0, which would read as a measured failure).

It serves the class-imbalance setting of Sarfraz, Arani & Zonooz, "Knowledge Distillation
Beyond Model Compression" (ICPR 2020), as kdbench runs it: the ``imbalance`` data transform
(:mod:`kdbench.data.imbalance`) makes the long tail whose training counts define the groups.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from .base import EvalContext, Outputs, check_same_length, predicted_classes, register_evaluator

__all__ = ["LongTail", "long_tail_accuracy", "per_class_accuracy", "shot_groups"]


def per_class_accuracy(predictions: torch.Tensor, labels: torch.Tensor,
                       num_classes: int) -> list[float]:
    """Top-1 accuracy (%) of each class c = 0..C−1 over the samples labelled c; NaN for a class
    with no samples in ``labels``."""
    what = "per-class accuracy"
    pred = predicted_classes(predictions, what)
    y = labels.detach().to("cpu", torch.int64)
    check_same_length(what, predictions=pred, labels=y)
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


@register_evaluator(
    "longtail", every=1, defaults={"many_above": 100, "few_below": 20},
    description="test accuracy over the many/medium/few-shot classes by training count "
                "(> many_above, < few_below), per class after the last epoch")
class LongTail:
    """Test accuracy by long-tail group, every epoch (it reuses the test logits the accuracy
    evaluator needs, so it costs no extra forward pass).

    Groups by the *training* count n_c of each class in the run's training split after its
    transforms (the ``imbalance`` transform's long tail; with label noise, counted by the labels
    trained on): ``many`` n_c > ``many_above`` (100), ``few`` n_c < ``few_below`` (20),
    ``medium`` the rest — OLTR's thresholds (Liu et al., CVPR 2019; see :func:`shot_groups`).
    ``acc_many``, ``acc_medium``, ``acc_few``: the mean of the group's per-class test accuracies
    (%), NaN for a group with no class. After the last epoch the row also holds every class's
    accuracy as ``acc_class_<c>`` (in the record's curve; its last row), not summarised into
    ``_last``/``_best``: their number depends on the dataset. Which class is in which group
    follows from the thresholds (in the config) and the training counts (the ``imbalance``
    report in ``record["data"]``).
    """

    needs = ("test_logits",)
    metrics = ("acc_many", "acc_medium", "acc_few")

    def __init__(self, ctx: EvalContext, many_above: int = 100, few_below: int = 20):
        if few_below < 0 or many_above < 0 or few_below > many_above + 1:
            raise ConfigError(f"evaluator 'longtail' thresholds must satisfy 0 <= few_below <= "
                              f"many_above + 1, got few_below={few_below}, "
                              f"many_above={many_above}")
        self.ctx, self.many_above, self.few_below = ctx, int(many_above), int(few_below)
        self.train_counts = ctx.dataset.train.class_counts(ctx.num_classes)

    def __call__(self, out: Outputs) -> dict[str, float]:
        assert out.test_logits is not None
        acc = long_tail_accuracy(out.test_logits, out.test_labels, self.train_counts,
                                 self.many_above, self.few_below)
        values = {k: float(acc[k]) for k in self.metrics}  # type: ignore[arg-type]
        if out.last:
            per_class = acc["acc_per_class"]
            assert isinstance(per_class, list)
            values.update({f"acc_class_{c}": v for c, v in enumerate(per_class)})
        return values
