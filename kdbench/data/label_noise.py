"""Label noise on the training split: the formula (:func:`corrupt_labels`) and the
``label_noise`` data transform (:class:`LabelNoise`).

:func:`corrupt_labels` is a pure function on a label vector (int64, any device; the work is done
on the CPU), seeded by an explicit ``seed`` through its own :class:`torch.Generator` (the global
generators are never touched), returning what it did as a JSON-serialisable report for the run
record. It is meant for the *training* split only: the test split stays clean, as in the papers.

Used by Sarfraz, Arani & Zonooz, "Knowledge Distillation Beyond Model Compression" (ICPR 2020),
which compares KD methods under symmetric/asymmetric label noise and long-tailed subsampling
(the latter: :mod:`kdbench.data.imbalance`).

Label noise follows the conventions of the noisy-label literature, read in bhanML/Co-teaching
``data/utils.py`` (commit 7c7fbe2, lines 98-172) and the same authors' NeurAI-Lab/NCT (commit
53bb93a: ``data_prep/cifar.py`` lines 94-102 call a Co-teaching-style ``noisify`` whose source is
not in that repository; ``utilities/utils.py`` line 54 ``get_random_labels``):

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

The ``label_noise`` transform wraps :func:`corrupt_labels` as a data transform of the training
split (``data.transforms`` / ``--data-transform``); the test split is never touched. It is seeded
by its own ``seed`` option (default 0), not by the run's seed: the corrupted training set is the
same for every student seed and for the teacher, as in the noisy-label literature (Co-teaching
always draws its noise with ``random_state=0``), so the spread over seeds is the spread of
training alone. It keeps the clean labels and the noisy mask in the split's ``meta``
(:data:`CLEAN`, :data:`NOISY`), which :class:`~kdbench.data.base.Split.subset` carries along and
the ``memorisation`` evaluator reads. A second label-noise transform keeps the *original* clean
labels, so the mask always says which labels differ from the truth.

Order when ``label_noise`` and ``imbalance`` are both given: the order of ``data.transforms``
decides. ``imbalance`` then ``label_noise`` corrupts exactly ``round(r·n_c)`` labels of every class
*of the long-tailed set* (the counts the run trains on); ``label_noise`` then ``imbalance`` draws
the noise on the full set and subsamples it afterwards, so the realised per-class rates of the
kept samples wander around r. The shipped study varies noise and imbalance separately; where both
are combined it puts ``imbalance`` first (after a ``subset``, which always comes first: it defines
the base set).
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

__all__ = ["CLEAN", "NOISE_KINDS", "NOISY", "LabelNoise", "NoisyLabels", "corrupt_labels"]

NOISE_KINDS = ("pairflip", "symmetric", "uniform")

#: meta key of the clean (true) labels a label-noise transform keeps for evaluation
CLEAN = "clean_labels"
#: meta key of the bool mask of the samples whose training label differs from the clean one
NOISY = "noisy"


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


def _round_half_up(x: float) -> int:
    # round(0.5·5) is 2 in Python (half to even); a count of corrupted samples rounds half up
    return int(math.floor(x + 0.5))


# ============================== the formula =====================================================


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
    seed = check_seed(seed, what)
    y = check_labels(labels, num_classes, what)
    C, n = int(num_classes), y.numel()

    g = salted_generator(seed, salt=1)
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


# ============================== the data transform ==============================================


@register_data_transform(
    "label_noise", defaults={"kind": "symmetric", "rate": 0.2, "seed": 0},
    description="label noise on the training split: exactly round(rate·n_c) labels of each "
                "class changed (symmetric | pairflip | uniform), clean labels kept")
class LabelNoise:
    """Corrupt the training labels: exactly ``round(rate·n_c)`` of every class c (round half up).

    ``kind``: ``symmetric`` (to one of the other C−1 classes, uniformly), ``pairflip``
    (c → c+1 mod C) or ``uniform`` (redrawn over all C classes, so the realised change rate is
    about rate·(C−1)/C). ``rate`` in [0, 1). The report is :func:`corrupt_labels`'s (asked
    ``rate``, realised ``changed_fraction``, ``selected_per_class``, ``changed_per_class``,
    ``seed``) plus ``realised_rate`` (the fraction of the split whose label now differs from the
    clean one).
    """

    def __init__(self, kind: str = "symmetric", rate: float = 0.2, seed: int = 0):
        if kind not in NOISE_KINDS:
            raise UnknownNameError("label-noise kind", str(kind), NOISE_KINDS)
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) \
                or not 0.0 <= float(rate) < 1.0:
            raise ConfigError(f"data transform 'label_noise' rate must be in [0, 1), "
                              f"got {rate!r}")
        self.kind, self.rate, self.seed = kind, float(rate), transform_seed(seed, "label_noise")

    def apply(self, split: Split, *, num_classes: int, split_name: str) -> tuple[Split, dict]:
        result = corrupt_labels(split.labels, num_classes, self.kind, self.rate, self.seed)
        clean = split.meta.get(CLEAN, result.clean.to(split.labels.device))
        noisy = result.labels != clean
        meta = {**split.meta, CLEAN: clean, NOISY: noisy}
        n = len(split)
        report = {**result.report, "realised_rate": float(noisy.sum()) / n if n else 0.0}
        return Split(split.images, result.labels, meta), report
