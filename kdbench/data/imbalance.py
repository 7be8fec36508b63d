"""Class imbalance of the training split: the formula (:func:`imbalance_targets`,
:func:`imbalance_indices`) and the ``imbalance`` data transform (:class:`Imbalance`).

:func:`imbalance_indices` is a pure function on a label vector (int64, any device; the work is
done on the CPU), seeded by an explicit ``seed`` through its own :class:`torch.Generator` (the
global generators are never touched), returning what it did as a JSON-serialisable report for
the run record. It is meant for the *training* split only: the test split stays balanced, as in
the papers.

Used by Sarfraz, Arani & Zonooz, "Knowledge Distillation Beyond Model Compression" (ICPR 2020),
which compares KD methods under long-tailed subsampling and label noise (the latter:
:mod:`kdbench.data.label_noise`).

Class imbalance follows LDAM-DRW's ``IMBALANCECIFAR10`` (kaidic/LDAM-DRW ``imbalance_cifar.py``
commit 2536330, lines 17-49), the source of the standard CIFAR-10-LT/100-LT splits:
``exponential`` keeps ``int(n_max · (1/ρ)^(i/(C−1)))`` of class i, ``step`` keeps n_max for the
first half of the classes and ``int(n_max/ρ)`` for the rest. Class order is the label order
(class 0 is the head), as there.

The ``imbalance`` transform wraps :func:`imbalance_indices` as a data transform of the training
split (``data.transforms`` / ``--data-transform``); the test split is never touched, so it stays
balanced. It is seeded by its own ``seed`` option (default 0), not by the run's seed: the
long-tailed training set is the same for every student seed and for the teacher, so the spread
over seeds is the spread of training alone. Its order relative to ``label_noise`` matters: see
:mod:`kdbench.data.label_noise`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError, UnknownNameError
from .base import Split, check_labels, check_seed, salted_generator, transform_seed
from .registry import register_data_transform

__all__ = ["IMBALANCE_KINDS", "Imbalance", "Imbalanced", "imbalance_indices",
           "imbalance_targets"]

IMBALANCE_KINDS = ("exponential", "step")


@dataclass(frozen=True)
class Imbalanced:
    """The result of :func:`imbalance_indices`: sorted ``indices`` of the training samples to
    keep (int64) and the ``report`` (per-class counts before and after)."""

    indices: torch.Tensor
    report: dict[str, Any]


# ============================== the formula =====================================================


def imbalance_targets(n_max: int, num_classes: int, kind: str, ratio: float) -> list[int]:
    """How many samples each class may keep, before capping at what the class has.

    * ``exponential``: class i keeps ``int(n_max · (1/ρ)^(i/(C−1)))`` — LDAM-DRW's formula
      (``imbalance_cifar.py`` line 22), which gives CIFAR-10-LT at ρ = 100:
      5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50;
    * ``step``: the first ``C // 2`` classes keep n_max, the other ``C − C // 2`` keep
      ``int(n_max/ρ)`` — for odd C the tail is the larger half. (LDAM-DRW's lines 25-28 build
      only 2·(C//2) entries, so for odd C its last class silently gets no samples at all.)

    A guard of 1e-9 is added before truncating, so float error never drops an exact integer
    (``183 · (1/183)`` is 0.9999999999999999 in floating point).
    """
    if kind not in IMBALANCE_KINDS:
        raise UnknownNameError("class-imbalance kind", str(kind), IMBALANCE_KINDS)
    C, inv = int(num_classes), 1.0 / float(ratio)
    if kind == "exponential":
        return [int(n_max * inv ** (i / (C - 1)) + 1e-9) for i in range(C)]
    head = C // 2
    return [n_max] * head + [int(n_max * inv + 1e-9)] * (C - head)


def imbalance_indices(labels: torch.Tensor, num_classes: int, kind: str, ratio: float,
                      seed: int) -> Imbalanced:
    """The training samples to keep for a long-tailed split (the class-imbalance transform).

    ``n_max`` is the largest class count in ``labels`` and class i keeps
    ``min(n_i, target_i)`` samples with ``target_i`` from :func:`imbalance_targets`. On a
    balanced split (CIFAR) that is the standard long-tailed split; on a split that is not quite
    balanced (digits: 174-183 per class) each class is capped at its target and never
    over-sampled, so ρ = 1 keeps everything and the realised ratio ``max/min`` of the counts
    after may differ slightly from ρ (the report has the counts). A class with no samples to
    start with stays empty and is no error.

    Which samples a class keeps: the first ``keep_i`` of a seeded random permutation of its
    samples (the permutation does not depend on ρ, so with one seed a smaller ratio keeps a
    superset). The returned indices are sorted, so the kept samples stay in their original
    order. Class order is the label order: class 0 is the head.

    The report holds ``kind``, ``ratio``, ``seed``, ``num_classes``, ``n_max``,
    ``counts_before``, ``counts_after`` (lists) and ``kept`` (total).

    Reference: LDAM-DRW (Cao et al., NeurIPS 2019), kaidic/LDAM-DRW ``imbalance_cifar.py``
    lines 17-49, which takes n_max = N/C and a global ``np.random.seed`` shuffle; kdbench uses
    the largest class count (the same on CIFAR) and its own generator. Raises
    :class:`~kdbench.errors.ConfigError` for an unknown kind, ρ < 1, C < 2, labels outside
    0..C−1, or a ratio that would leave a class empty (naming the class and the largest ratio
    that keeps one sample).
    """
    what = "class imbalance"
    if not isinstance(kind, str) or kind not in IMBALANCE_KINDS:
        raise UnknownNameError("class-imbalance kind", str(kind), IMBALANCE_KINDS)
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) \
            or not 1.0 <= float(ratio) < math.inf:
        raise ConfigError(f"{what}: ratio must be a finite number >= 1, got {ratio!r}")
    ratio = float(ratio)
    seed = check_seed(seed, what)
    y = check_labels(labels, num_classes, what)
    C = int(num_classes)
    counts = torch.bincount(y, minlength=C).tolist()
    n_max = max(counts)
    targets = imbalance_targets(n_max, C, kind, ratio)
    emptied = [c for c, (n_c, t) in enumerate(zip(counts, targets)) if n_c > 0 and t < 1]
    if emptied:
        # the smallest target is int(n_max/ρ) in both kinds, so ρ ≤ n_max keeps one sample each
        named = ", ".join(map(str, emptied[:5]))
        named += f" and {len(emptied) - 5} more" if len(emptied) > 5 else ""
        noun = "class" if len(emptied) == 1 else "classes"
        raise ConfigError(f"{what}: {kind} ratio {ratio:g} leaves {noun} {named} empty "
                          f"(largest class {n_max}); a ratio <= {n_max} keeps one sample each")

    g = salted_generator(seed, salt=2)
    keep = []
    after = []
    for c in range(C):
        members = torch.nonzero(y == c).flatten()
        order = torch.randperm(members.numel(), generator=g)
        k = min(counts[c], targets[c])
        keep.append(members[order[:k]])
        after.append(k)
    indices = torch.sort(torch.cat(keep)).values.to(labels.device)
    report = {
        "kind": kind, "ratio": ratio, "seed": seed, "num_classes": C, "n_max": n_max,
        "counts_before": counts, "counts_after": after, "kept": sum(after),
    }
    return Imbalanced(indices, report)


# ============================== the data transform ==============================================


@register_data_transform(
    "imbalance", defaults={"kind": "exponential", "ratio": 10.0, "seed": 0},
    description="a long-tailed training split: exponential or step class counts with max/min "
                "ratio rho (the test split stays balanced)")
class Imbalance:
    """Subsample the training split to a long tail: class i keeps
    ``min(n_i, int(n_max·ρ^(−i/(C−1))))`` (``exponential``) or, for ``step``, n_max for the
    first C//2 classes and ``int(n_max/ρ)`` for the rest; ``ratio`` ρ ≥ 1, finite. Which
    samples a class keeps is seeded; they keep their order. The report is
    :func:`imbalance_indices`'s (``counts_before``, ``counts_after``, ``n_max``, ``kept``,
    ``seed``) plus ``realised_ratio`` (largest / smallest kept count)."""

    def __init__(self, kind: str = "exponential", ratio: float = 10.0, seed: int = 0):
        if kind not in IMBALANCE_KINDS:
            raise UnknownNameError("class-imbalance kind", str(kind), IMBALANCE_KINDS)
        if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) \
                or not 1.0 <= float(ratio) < math.inf:
            raise ConfigError(f"data transform 'imbalance' ratio must be a finite number >= 1, "
                              f"got {ratio!r}")
        self.kind, self.ratio, self.seed = kind, float(ratio), transform_seed(seed, "imbalance")

    def apply(self, split: Split, *, num_classes: int, split_name: str) -> tuple[Split, dict]:
        result = imbalance_indices(split.labels, num_classes, self.kind, self.ratio, self.seed)
        kept = [n for n in result.report["counts_after"] if n > 0]
        report = {**result.report,
                  "realised_ratio": max(kept) / min(kept) if kept else math.nan}
        return split.subset(result.indices), report
