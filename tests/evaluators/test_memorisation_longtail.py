"""Robustness metrics (kdbench.evaluators.memorisation, kdbench.evaluators.longtail) on
hand-worked cases and a numpy loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdbench.data.label_noise import corrupt_labels
from kdbench.errors import ConfigError
from kdbench.evaluators.longtail import long_tail_accuracy, per_class_accuracy, shot_groups
from kdbench.evaluators.memorisation import memorisation


def test_memorisation_hand_worked():
    clean = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    given = torch.tensor([1, 2, 0, 2, 1, 2, 0, 0])  # first 4 and the last are noisy
    pred = torch.tensor([1, 1, 0, 1, 1, 0, 0, 0])
    # noisy samples (clean→given, pred): 0→1 p1 memorised; 1→2 p1 corrected; 2→0 p0 memorised;
    # 0→2 p1 neither; 1→0 p0 memorised  → 3/5 memorised, 1/5 corrected, 1/5 other
    # clean samples (given, pred): 1 p1 ✓, 2 p0 ✗, 0 p0 ✓ → 2/3
    m = memorisation(pred, given, clean)
    assert m["noisy_fit_noisy"] == pytest.approx(60.0)
    assert m["noisy_fit_true"] == pytest.approx(20.0)
    assert m["noisy_fit_other"] == pytest.approx(20.0)
    assert m["clean_fit"] == pytest.approx(200.0 / 3)
    assert (m["noisy_count"], m["clean_count"]) == (5.0, 3.0)


def test_memorisation_takes_logits_and_matches_a_loop_on_real_noise():
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 5, (400,), generator=g)
    noisy = corrupt_labels(clean, 5, "symmetric", 0.4, seed=1)
    logits = torch.randn(400, 5, generator=g)
    m = memorisation(logits, noisy.labels, noisy.clean)
    p, y, t = logits.argmax(1).numpy(), noisy.labels.numpy(), clean.numpy()
    mem = cor = oth = n = 0
    for pi, yi, ti in zip(p, y, t):
        if yi != ti:
            n += 1
            mem += pi == yi
            cor += pi == ti
            oth += pi not in (yi, ti)
    assert m["noisy_count"] == n == noisy.report["changed"]
    assert m["noisy_fit_noisy"] == pytest.approx(100 * mem / n)
    assert m["noisy_fit_true"] == pytest.approx(100 * cor / n)
    assert m["noisy_fit_other"] == pytest.approx(100 * oth / n)
    assert m["noisy_fit_noisy"] + m["noisy_fit_true"] + m["noisy_fit_other"] == pytest.approx(100)


def test_memorisation_without_noise_is_nan_not_zero():
    y = torch.tensor([0, 1, 1])
    m = memorisation(y, y, y)
    assert math.isnan(m["noisy_fit_noisy"]) and math.isnan(m["noisy_fit_true"])
    assert m["clean_fit"] == 100.0 and m["noisy_count"] == 0.0


def test_per_class_accuracy_hand_worked_and_absent_class():
    y = torch.tensor([0, 0, 0, 0, 1, 1, 3])
    p = torch.tensor([0, 1, 0, 0, 1, 0, 2])
    acc = per_class_accuracy(p, y, 4)
    assert acc[0] == pytest.approx(75.0) and acc[1] == pytest.approx(50.0)
    assert math.isnan(acc[2]) and acc[3] == 0.0


def test_shot_groups_thresholds_and_boundaries():
    counts = [500, 101, 100, 57, 20, 19, 5]
    assert shot_groups(counts) == {"many": [0, 1], "medium": [2, 3, 4], "few": [5, 6]}
    # OLTR's code (>= 100 many, <= 20 few)
    assert shot_groups(counts, many_above=99, few_below=21) == {
        "many": [0, 1, 2], "medium": [3], "few": [4, 5, 6]}
    with pytest.raises(ConfigError, match="few_below"):
        shot_groups(counts, many_above=10, few_below=20)


def test_long_tail_accuracy_is_the_mean_of_class_accuracies_per_group():
    train_counts = [300, 150, 50, 10]  # many: 0, 1; medium: 2; few: 3
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 4, (200,), generator=g)
    p = torch.where(torch.rand(200, generator=g) < 0.7, y, torch.randint(0, 4, (200,),
                                                                       generator=g))
    out = long_tail_accuracy(p, y, train_counts)
    yn, pn = y.numpy(), p.numpy()
    cls = [100 * np.mean(pn[yn == c] == c) for c in range(4)]
    assert out["acc_many"] == pytest.approx((cls[0] + cls[1]) / 2)
    assert out["acc_medium"] == pytest.approx(cls[2])
    assert out["acc_few"] == pytest.approx(cls[3])
    assert out["acc_per_class"] == pytest.approx(cls)
    # each class weighs the same: not the accuracy over the group's pooled samples
    pooled = 100 * np.mean(pn[yn <= 1] == yn[yn <= 1])
    assert abs(out["acc_many"] - pooled) > 1e-6


def test_long_tail_empty_group_is_nan():
    out = long_tail_accuracy(torch.tensor([0, 1]), torch.tensor([0, 1]), [5000, 2997])
    assert out["acc_many"] == 100.0
    assert math.isnan(out["acc_medium"]) and math.isnan(out["acc_few"])


@pytest.mark.parametrize("call, needle", [
    (lambda: memorisation(torch.zeros(3, dtype=torch.long), torch.zeros(2, dtype=torch.long),
                          torch.zeros(2, dtype=torch.long)), "lengths differ (predictions=3"),
    (lambda: per_class_accuracy(torch.zeros(2, dtype=torch.long), torch.tensor([0, 4]), 3),
     "label 4 is outside the valid range 0..2"),
    (lambda: memorisation(torch.zeros(2, 2, 2), torch.zeros(2), torch.zeros(2)),
     "predictions must be class indices (N,) or logits (N, C)"),
])
def test_errors(call, needle):
    with pytest.raises(ConfigError) as err:
        call()
    assert needle in str(err.value) and "\n" not in str(err.value)
