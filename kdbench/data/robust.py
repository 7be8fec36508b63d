"""The label-noise and class-imbalance data transforms (``label_noise``, ``imbalance``).

They wrap :func:`kdbench.data.corrupt.corrupt_labels` and
:func:`kdbench.data.corrupt.imbalance_indices` (formulas, references and where kdbench differs
from the reference code: that module's docstring) as data transforms of the training split
(``data.transforms`` / ``--data-transform``); the test split is never touched, so it stays clean
and balanced. Each is seeded by its own ``seed`` option (default 0), not by the run's seed: the
corrupted training set is the same for every student seed and for the teacher, as in the
noisy-label literature (Co-teaching always draws its noise with ``random_state=0``), so the
spread over seeds is the spread of training alone.

``label_noise`` keeps the clean labels and the noisy mask in the split's ``meta``
(:data:`CLEAN`, :data:`NOISY`), which :class:`~kdbench.data.base.Split.subset` carries along and
the ``memorisation`` evaluator reads. A second label-noise transform keeps the *original* clean
labels, so the mask always says which labels differ from the truth.

Order when both are given: the order of ``data.transforms`` decides. ``imbalance`` then
``label_noise`` corrupts exactly ``round(r·n_c)`` labels of every class *of the long-tailed set*
(the counts the run trains on); ``label_noise`` then ``imbalance`` draws the noise on the full set
and subsamples it afterwards, so the realised per-class rates of the kept samples wander around
r. The shipped study varies noise and imbalance separately; where both are combined it puts
``imbalance`` first (after a ``subset``, which always comes first: it defines the base set).
"""

from __future__ import annotations

import math
import numbers

from ..errors import ConfigError, UnknownNameError
from .base import Split
from .corrupt import IMBALANCE_KINDS, NOISE_KINDS, corrupt_labels, imbalance_indices

__all__ = ["CLEAN", "NOISY", "Imbalance", "LabelNoise"]

#: meta key of the clean (true) labels a label-noise transform keeps for evaluation
CLEAN = "clean_labels"
#: meta key of the bool mask of the samples whose training label differs from the clean one
NOISY = "noisy"


def _seed(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ConfigError(f"data transform {what!r} seed must be an integer >= 0, got {value!r}")
    return int(value)


class LabelNoise:
    """Corrupt the training labels: exactly ``round(rate·n_c)`` of every class c (round half up).

    ``kind``: ``symmetric`` (to one of the other C−1 classes, uniformly), ``pairflip``
    (c → c+1 mod C) or ``uniform`` (redrawn over all C classes, so the realised change rate is
    about rate·(C−1)/C). ``rate`` in [0, 1). The report is
    :func:`~kdbench.data.corrupt.corrupt_labels`'s (asked ``rate``, realised
    ``changed_fraction``, ``selected_per_class``, ``changed_per_class``, ``seed``) plus
    ``realised_rate`` (the fraction of the split whose label now differs from the clean one).
    """

    def __init__(self, kind: str = "symmetric", rate: float = 0.2, seed: int = 0):
        if kind not in NOISE_KINDS:
            raise UnknownNameError("label-noise kind", str(kind), NOISE_KINDS)
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) \
                or not 0.0 <= float(rate) < 1.0:
            raise ConfigError(f"data transform 'label_noise' rate must be in [0, 1), "
                              f"got {rate!r}")
        self.kind, self.rate, self.seed = kind, float(rate), _seed(seed, "label_noise")

    def apply(self, split: Split, *, num_classes: int, split_name: str) -> tuple[Split, dict]:
        result = corrupt_labels(split.labels, num_classes, self.kind, self.rate, self.seed)
        clean = split.meta.get(CLEAN, result.clean.to(split.labels.device))
        noisy = result.labels != clean
        meta = {**split.meta, CLEAN: clean, NOISY: noisy}
        n = len(split)
        report = {**result.report, "realised_rate": float(noisy.sum()) / n if n else 0.0}
        return Split(split.images, result.labels, meta), report


class Imbalance:
    """Subsample the training split to a long tail: class i keeps
    ``min(n_i, int(n_max·ρ^(−i/(C−1))))`` (``exponential``) or, for ``step``, n_max for the
    first C//2 classes and ``int(n_max/ρ)`` for the rest; ``ratio`` ρ ≥ 1, finite. Which
    samples a class keeps is seeded; they keep their order. The report is
    :func:`~kdbench.data.corrupt.imbalance_indices`'s (``counts_before``, ``counts_after``,
    ``n_max``, ``kept``, ``seed``) plus ``realised_ratio`` (largest / smallest kept count)."""

    def __init__(self, kind: str = "exponential", ratio: float = 10.0, seed: int = 0):
        if kind not in IMBALANCE_KINDS:
            raise UnknownNameError("class-imbalance kind", str(kind), IMBALANCE_KINDS)
        if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) \
                or not 1.0 <= float(ratio) < math.inf:
            raise ConfigError(f"data transform 'imbalance' ratio must be a finite number >= 1, "
                              f"got {ratio!r}")
        self.kind, self.ratio, self.seed = kind, float(ratio), _seed(seed, "imbalance")

    def apply(self, split: Split, *, num_classes: int, split_name: str) -> tuple[Split, dict]:
        result = imbalance_indices(split.labels, num_classes, self.kind, self.ratio, self.seed)
        kept = [n for n in result.report["counts_after"] if n > 0]
        report = {**result.report,
                  "realised_ratio": max(kept) / min(kept) if kept else math.nan}
        return split.subset(result.indices), report

