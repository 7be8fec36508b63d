"""Label noise and class imbalance (kdbench.data.label_noise, kdbench.data.imbalance) against
counts computed independently."""

from __future__ import annotations

import json
import math
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest
import torch

from kdbench.data.imbalance import imbalance_indices, imbalance_targets
from kdbench.data.label_noise import corrupt_labels
from kdbench.errors import ConfigError


def unbalanced_labels(counts: list[int], seed: int = 0) -> torch.Tensor:
    """A shuffled label vector with the given per-class counts (like digits' 174-183)."""
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    np.random.default_rng(seed).shuffle(y)
    return torch.from_numpy(y).long()


DIGITS_LIKE = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def half_up(rate: float, n: int) -> int:
    """round(rate · n) half up, via Decimal on the float's exact value (not floor(x + .5))."""
    return int((Decimal(rate) * n).quantize(Decimal(1), rounding=ROUND_HALF_UP))


# ============================== label noise =====================================================


@pytest.mark.parametrize("kind", ["symmetric", "pairflip", "uniform"])
@pytest.mark.parametrize("rate", [0.0, 0.2, 0.45, 0.8])
def test_exact_per_class_counts_and_untouched_samples(kind, rate):
    y = unbalanced_labels(DIGITS_LIKE)
    out = corrupt_labels(y, 10, kind, rate, seed=3)
    yn, new = y.numpy(), out.labels.numpy()
    counts = np.bincount(yn, minlength=10)
    expected = [half_up(rate, int(n)) for n in counts]
    assert out.report["selected_per_class"] == expected
    changed = new != yn
    assert np.array_equal(out.noisy.numpy(), changed)
    assert np.array_equal(out.clean.numpy(), yn)
    per_class = [int(changed[yn == c].sum()) for c in range(10)]
    assert out.report["changed_per_class"] == per_class
    assert out.report["changed"] == int(changed.sum())
    assert math.isclose(out.report["changed_fraction"], changed.mean())
    if kind != "uniform":
        assert per_class == expected  # every selected label really moves
    else:
        assert all(p <= e for p, e in zip(per_class, expected))
    # samples that were not corrupted keep their label bit for bit
    assert np.array_equal(new[~changed], yn[~changed])
    assert out.labels.dtype == torch.int64
    json.dumps(out.report)  # the report goes into the run record as is


def test_round_half_up_on_a_hand_worked_case():
    # class 0: 5 samples, class 1: 3 samples; rate 0.5 → 2.5 → 3 and 1.5 → 2 (Python's
    # round would give 2 and 2)
    y = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1])
    out = corrupt_labels(y, 2, "pairflip", 0.5, seed=0)
    assert out.report["selected_per_class"] == [3, 2]
    assert out.labels.tolist().count(1) == 4  # three 0→1 join the one 1 left
    assert out.labels.tolist().count(0) == 4  # two 1→0 join the two 0s left
    assert int(out.noisy.sum()) == 5


def test_symmetric_never_keeps_and_pairflip_goes_to_the_next_class():
    y = unbalanced_labels(DIGITS_LIKE)
    sym = corrupt_labels(y, 10, "symmetric", 0.6, seed=1)
    sel = sym.noisy
    assert bool((sym.labels[sel] != y[sel]).all())
    # the symmetric targets cover all the other classes, roughly uniformly
    moved = (sym.labels[sel] - y[sel]) % 10
    offsets = np.bincount(moved.numpy(), minlength=10)
    assert offsets[0] == 0 and (offsets[1:] > 0.6 * offsets[1:].mean()).all()
    pf = corrupt_labels(y, 10, "pairflip", 0.6, seed=1)
    assert bool((pf.labels[pf.noisy] == (y[pf.noisy] + 1) % 10).all())
    assert int(pf.labels[(y == 9) & pf.noisy].ne(0).sum()) == 0  # 9 wraps round to 0


def test_uniform_realised_rate_is_about_r_times_c_minus_1_over_c():
    y = torch.arange(10).repeat_interleave(2000)
    out = corrupt_labels(y, 10, "uniform", 0.5, seed=7)
    assert out.report["selected"] == 10_000
    # binomial(10000, 0.9): mean 9000, sd 30
    assert abs(out.report["changed"] - 9000) < 150
    assert out.report["rate"] == 0.5 and out.report["kind"] == "uniform"


def test_same_seed_same_set_other_seed_other_set_and_nested_rates():
    y = unbalanced_labels(DIGITS_LIKE)
    a = corrupt_labels(y, 10, "symmetric", 0.3, seed=5)
    b = corrupt_labels(y, 10, "symmetric", 0.3, seed=5)
    c = corrupt_labels(y, 10, "symmetric", 0.3, seed=6)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.noisy, b.noisy)
    assert not torch.equal(a.noisy, c.noisy)
    assert int(a.noisy.sum()) == int(c.noisy.sum())
    # paired designs: a higher rate corrupts a superset, other kinds pick the same samples
    hi = corrupt_labels(y, 10, "symmetric", 0.6, seed=5)
    assert bool((hi.noisy | ~a.noisy).all())
    assert torch.equal(a.labels[a.noisy], hi.labels[a.noisy])
    pf = corrupt_labels(y, 10, "pairflip", 0.3, seed=5)
    assert torch.equal(pf.noisy, a.noisy)


def test_does_not_touch_global_rng_or_the_input():
    y = unbalanced_labels(DIGITS_LIKE)
    before = y.clone()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    corrupt_labels(y, 10, "symmetric", 0.4, seed=0)
    imbalance_indices(y, 10, "exponential", 10, seed=0)
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(y, before)


@pytest.mark.parametrize("kwargs, needle", [
    ({"rate": 1.0}, "rate must be in [0, 1), got 1.0"),
    ({"rate": -0.1}, "rate must be in [0, 1), got -0.1"),
    ({"rate": float("nan")}, "rate must be in [0, 1)"),
    ({"kind": "symetric"}, "did you mean symmetric"),
    ({"kind": "asym"}, "valid: pairflip, symmetric, uniform"),
    ({"num_classes": 1}, "num_classes must be an integer >= 2, got 1"),
    ({"labels": torch.tensor([0, 1, 10])}, "label 10 is outside the valid range 0..9"),
    ({"labels": torch.tensor([0, -1])}, "label -1 is outside the valid range 0..9"),
    ({"labels": torch.tensor([0.0, 1.0])}, "labels must be a 1-D integer tensor"),
    ({"seed": -1}, "seed must be a non-negative integer, got -1"),
])
def test_noise_errors(kwargs, needle):
    args = {"labels": torch.tensor([0, 1, 2]), "num_classes": 10, "kind": "symmetric",
            "rate": 0.2, "seed": 0, **kwargs}
    with pytest.raises(ConfigError) as err:
        corrupt_labels(**args)
    assert needle in str(err.value) and "\n" not in str(err.value)


# ============================== class imbalance =================================================


CIFAR10_LT_100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def test_cifar10_lt_counts_on_a_balanced_synthetic_split():
    y = torch.arange(10).repeat_interleave(5000)
    out = imbalance_indices(y, 10, "exponential", 100, seed=0)
    assert out.report["counts_after"] == CIFAR10_LT_100
    assert np.bincount(y[out.indices].numpy(), minlength=10).tolist() == CIFAR10_LT_100
    assert out.report["counts_before"] == [5000] * 10 and out.report["kept"] == 12406
    json.dumps(out.report)


@pytest.mark.parametrize("n_max, C, rho, total", [
    # the training-set sizes the long-tail literature quotes (Cao et al. 2019, Cui et al. 2019)
    (5000, 10, 100, 12406), (5000, 10, 50, 13996), (5000, 10, 10, 20431),
    (500, 100, 100, 10847), (500, 100, 50, 12608), (500, 100, 10, 19573),
])
def test_standard_long_tail_sizes(n_max, C, rho, total):
    assert sum(imbalance_targets(n_max, C, "exponential", rho)) == total


@pytest.mark.parametrize("kind", ["exponential", "step"])
@pytest.mark.parametrize("rho", [1, 2.5, 10, 100])
def test_every_class_follows_the_formula_on_unbalanced_input(kind, rho):
    y = unbalanced_labels(DIGITS_LIKE)
    out = imbalance_indices(y, 10, kind, rho, seed=2)
    counts = np.bincount(y.numpy(), minlength=10)
    n_max = counts.max()
    i = np.arange(10)
    if kind == "exponential":
        target = np.floor(n_max * np.exp(-np.log(rho) * i / 9) + 1e-9).astype(int)
    else:
        target = np.where(i < 5, n_max, np.floor(n_max / rho + 1e-9)).astype(int)
    expected = np.minimum(counts, target)
    kept = y[out.indices].numpy()
    assert np.bincount(kept, minlength=10).tolist() == expected.tolist()
    assert out.report["counts_after"] == expected.tolist()
    assert out.report["n_max"] == 183
    idx = out.indices.numpy()
    assert (np.diff(idx) > 0).all() and idx.min() >= 0 and idx.max() < len(y)
    if rho == 1:
        assert len(idx) == len(y)  # nothing removed, never over-sampled


def test_step_with_odd_number_of_classes_has_the_larger_tail():
    assert imbalance_targets(100, 5, "step", 10) == [100, 100, 10, 10, 10]
    assert imbalance_targets(183, 10, "step", 183) == [183] * 5 + [1] * 5


def test_imbalance_seed_changes_which_samples_not_how_many():
    y = torch.arange(10).repeat_interleave(300)
    a = imbalance_indices(y, 10, "exponential", 10, seed=1)
    b = imbalance_indices(y, 10, "exponential", 10, seed=1)
    c = imbalance_indices(y, 10, "exponential", 10, seed=2)
    assert torch.equal(a.indices, b.indices)
    assert not torch.equal(a.indices, c.indices)
    assert a.report["counts_after"] == c.report["counts_after"]
    # a milder ratio keeps a superset under the same seed
    mild = imbalance_indices(y, 10, "exponential", 2, seed=1)
    assert set(a.indices.tolist()) <= set(mild.indices.tolist())


def test_class_absent_from_the_start_stays_empty_without_error():
    y = torch.tensor([0] * 50 + [2] * 40)
    out = imbalance_indices(y, 3, "exponential", 4, seed=0)
    assert out.report["counts_after"] == [50, 0, 12]  # 50·(1/4)^1 = 12.5


@pytest.mark.parametrize("kwargs, needle", [
    ({"ratio": 0.5}, "ratio must be a finite number >= 1, got 0.5"),
    ({"ratio": float("inf")}, "ratio must be a finite number >= 1"),
    ({"kind": "exponental"}, "did you mean exponential"),
    ({"kind": "linear"}, "valid: exponential, step"),
    # 183·500^(-8/9) = 0.73 and 183/500 = 0.37: classes 8 and 9 would be empty
    ({"ratio": 500}, "exponential ratio 500 leaves classes 8, 9 empty (largest class 183); "
                     "a ratio <= 183 keeps one sample each"),
    ({"ratio": 1000, "num_classes": 3, "labels": torch.arange(3).repeat_interleave(999)},
     "leaves class 2 empty (largest class 999)"),
    ({"ratio": 200, "kind": "step"}, "leaves classes 5, 6, 7, 8, 9 empty"),
    ({"num_classes": 1, "labels": torch.zeros(5, dtype=torch.long)},
     "num_classes must be an integer >= 2, got 1"),
    ({"labels": torch.tensor([0, 12])}, "label 12 is outside the valid range 0..9"),
])
def test_imbalance_errors(kwargs, needle):
    args = {"labels": unbalanced_labels(DIGITS_LIKE), "num_classes": 10, "kind": "exponential",
            "ratio": 10, "seed": 0, **kwargs}
    with pytest.raises(ConfigError) as err:
        imbalance_indices(**args)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_ratio_equal_to_the_largest_class_keeps_exactly_one():
    # 183 · (1/183) is 0.9999999999999999 in floating point: the guard keeps one sample
    y = unbalanced_labels(DIGITS_LIKE)
    out = imbalance_indices(y, 10, "exponential", 183, seed=0)
    assert out.report["counts_after"][9] == 1
