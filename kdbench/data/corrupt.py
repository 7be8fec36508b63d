"""Training-split corruptions for robustness studies: label noise and class imbalance.

Pure functions on a label vector (int64, any device; the work is done on the CPU), each seeded by
an explicit ``seed`` through its own :class:`torch.Generator` (the global generators are never
touched), each returning what it did as a JSON-serialisable report for the run record. They are
meant for the *training* split only: the test split stays clean and balanced, as in the papers.

Used by Sarfraz, Arani & Zonooz, "Knowledge Distillation Beyond Model Compression" (ICPR 2020),
which compares KD methods under symmetric/asymmetric label noise and long-tailed subsampling.

Label noise (:func:`corrupt_labels`) follows the conventions of the noisy-label literature, read
in bhanML/Co-teaching ``data/utils.py`` (commit 7c7fbe2, lines 98-172) and the same authors'
NeurAI-Lab/NCT (commit 53bb93a: ``data_prep/cifar.py`` lines 94-102 call a Co-teaching-style
``noisify`` whose source is not in that repository; ``utilities/utils.py`` line 54
``get_random_labels``):

* ``symmetric`` — a corrupted label moves to one of the other C−1 classes, uniformly
  (Co-teaching's transition matrix: 1−r on the diagonal, r/(C−1) elsewhere);
* ``pairflip`` — class c moves to c+1 mod C (Co-teaching's ``noisify_pairflip``, the
  "asymmetric" noise of Han et al., NeurIPS 2018);
* ``uniform`` — a corrupted label is redrawn over all C classes, so some keep their label and the
  realised change rate is ≈ r·(C−1)/C (the convention of NCT's target variability and of papers
  that call it "symmetric"; named differently here so the two are never confused).

Where kdbench differs from both references: they flip every sample with probability r
(``np.random.RandomState(0).multinomial`` per sample, Co-teaching line 113-119 — and
``noisify`` ignores its ``random_state`` argument, always passing 0, lines 176-178), so the
realised rate wanders around r. Here exactly ``round(r·n_c)`` samples of each class c are
selected (round half up), so every class carries the asked rate and two seeds differ only in
*which* samples. The references' clean mask (``noise_or_not``, True where the label is *clean*)
is returned here as ``noisy`` (True where the label was *changed*).

Class imbalance (:func:`imbalance_indices`) follows LDAM-DRW's ``IMBALANCECIFAR10``
(kaidic/LDAM-DRW ``imbalance_cifar.py`` commit 2536330, lines 17-49), the source of the standard
CIFAR-10-LT/100-LT splits: ``exponential`` keeps ``int(n_max · (1/ρ)^(i/(C−1)))`` of class i,
``step`` keeps n_max for the first half of the classes and ``int(n_max/ρ)`` for the rest. Class
order is the label order (class 0 is the head), as there.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError, UnknownNameError

__all__ = ["IMBALANCE_KINDS", "NOISE_KINDS", "Imbalanced", "NoisyLabels", "corrupt_labels",
           "imbalance_indices", "imbalance_targets"]

NOISE_KINDS = ("pairflip", "symmetric", "uniform")
IMBALANCE_KINDS = ("exponential", "step")


@dataclass(frozen=True)
class NoisyLabels:
    """The result of :func:`corrupt_labels`.

    ``labels`` are the labels to train on, ``clean`` the original ones, ``noisy`` a bool mask of
    the samples whose label was changed (``labels != clean``), ``report`` what was done.
    """

    labels: torch.Tensor
    clean: torch.Tensor
    noisy: torch.Tensor
    report: dict[str, Any]


@dataclass(frozen=True)
class Imbalanced:
    """The result of :func:`imbalance_indices`: sorted ``indices`` of the training samples to
    keep (int64) and the ``report`` (per-class counts before and after)."""

    indices: torch.Tensor
    report: dict[str, Any]


# ============================== validation ======================================================


def _check_labels(labels: torch.Tensor, num_classes: int, what: str) -> torch.Tensor:
    """The labels as a CPU int64 vector, after checking C ≥ 2 and every label in 0..C−1."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) \
            or num_classes < 2:
        raise ConfigError(f"{what}: num_classes must be an integer >= 2, got {num_classes!r}")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 \
            or labels.dtype.is_floating_point or labels.dtype.is_complex \
            or labels.dtype == torch.bool:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ConfigError(f"{what}: labels must be a 1-D integer tensor, got {shape}")
    y = labels.detach().to("cpu", torch.int64)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise ConfigError(f"{what}: label {bad} is outside the valid range 0..{num_classes - 1}")
    return y


def _check_seed(seed: int, what: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"{what}: seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _generator(seed: int, salt: int) -> torch.Generator:
    # a salt per transform, so noise and imbalance with the same run seed draw independent streams
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + salt) % (2**63 - 1))
    return g


def _round_half_up(x: float) -> int:
    # round(0.5·5) is 2 in Python (half to even); a count of corrupted samples rounds half up
    return int(math.floor(x + 0.5))


# ============================== label noise =====================================================


def corrupt_labels(labels: torch.Tensor, num_classes: int, kind: str, rate: float,
                   seed: int) -> NoisyLabels:
    """Corrupt exactly ``round(rate · n_c)`` labels of every class c (the label-noise transform).

    Selection: for each class c in label order, a seeded random permutation of its samples; the
    first ``k_c = round(rate · n_c)`` (round half up) are corrupted. New labels (one draw per
    sample, made for all samples after the selection, used only where selected):

    * ``symmetric``: ``(c + u) mod C`` with u uniform in 1..C−1 — never the old label;
    * ``pairflip``: ``(c + 1) mod C``;
    * ``uniform``: u uniform in 0..C−1 — a selected label may stay the same, so the realised
      changed fraction is ≈ rate·(C−1)/C.

    Because the permutation and the draws do not depend on ``rate`` or ``kind``, with one seed a
    higher rate corrupts a superset of the samples a lower one does, and symmetric, pairflip and
    uniform select the same samples: comparisons across rates and kinds are paired.

    The report holds ``kind``, ``rate`` (asked), ``seed``, ``num_classes``, ``selected`` (total),
    ``changed`` (total), ``changed_fraction`` (realised, over all samples),
    ``selected_per_class`` and ``changed_per_class`` (lists indexed by the clean class).

    References and where this differs from them: see the module docstring (exact per-class
    counts instead of a per-sample coin flip; a ``noisy`` mask instead of a clean one).
    Raises :class:`~kdbench.errors.ConfigError` for an unknown kind, a rate outside [0, 1),
    C < 2, labels outside 0..C−1 or a negative seed.
    """
    what = "label noise"
    if not isinstance(kind, str) or kind not in NOISE_KINDS:
        raise UnknownNameError("label-noise kind", str(kind), NOISE_KINDS)
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) \
            or not 0.0 <= float(rate) < 1.0:
        raise ConfigError(f"{what}: rate must be in [0, 1), got {rate!r}")
    rate = float(rate)
    seed = _check_seed(seed, what)
    y = _check_labels(labels, num_classes, what)
    C, n = int(num_classes), y.numel()

    g = _generator(seed, salt=1)
    selected = torch.zeros(n, dtype=torch.bool)
    selected_per_class = []
    for c in range(C):
        members = torch.nonzero(y == c).flatten()
        order = torch.randperm(members.numel(), generator=g)
        k = _round_half_up(rate * members.numel())
        selected[members[order[:k]]] = True
        selected_per_class.append(k)

    if kind == "symmetric":
        new = (y + torch.randint(1, C, (n,), generator=g)) % C
    elif kind == "pairflip":
        new = (y + 1) % C
    else:
        new = torch.randint(0, C, (n,), generator=g)
    noisy_labels = torch.where(selected, new, y)
    noisy = noisy_labels != y
    changed_per_class = torch.bincount(y[noisy], minlength=C).tolist()
    report = {
        "kind": kind, "rate": rate, "seed": seed, "num_classes": C,
        "selected": int(selected.sum()), "changed": int(noisy.sum()),
        "changed_fraction": float(noisy.sum()) / n if n else 0.0,
        "selected_per_class": selected_per_class, "changed_per_class": changed_per_class,
    }
    device = labels.device
    return NoisyLabels(noisy_labels.to(device), y.to(device), noisy.to(device), report)


# ============================== class imbalance =================================================


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
    seed = _check_seed(seed, what)
    y = _check_labels(labels, num_classes, what)
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

    g = _generator(seed, salt=2)
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
