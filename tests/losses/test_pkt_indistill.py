"""InDistill's curriculum, layer MSE and two-kernel PKT against hand-worked and numpy values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdbench.errors import ConfigError
from kdbench.losses.pkt_indistill import (
    curriculum_epochs,
    curriculum_layer,
    indistill_pkt,
    layer_mse,
)

# ---- curriculum --------------------------------------------------------------------------------


def test_reference_schedule_three_layers_a2():
    # kd_from_aux_to_student.py: epoch < 3 → conv1, < 7 → conv2, < 12 → conv3, then PKT
    assert curriculum_epochs(3) == (3, 4, 5)
    expected = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, None, None, None]
    assert [curriculum_layer(e, 3) for e in range(15)] == expected
    assert curriculum_layer(69, 3) is None


def test_other_offsets_and_depths():
    assert curriculum_epochs(4, a=0) == (1, 2, 3, 4)
    assert [curriculum_layer(e, 4, a=0) for e in range(11)] == [0, 1, 1, 2, 2, 2, 3, 3, 3, 3,
                                                                 None]
    assert curriculum_epochs(1, a=5) == (6,)
    assert [curriculum_layer(e, 1, a=5) for e in (0, 5, 6)] == [0, 0, None]


@pytest.mark.parametrize("kwargs,match", [
    ({"num_layers": 3, "a": -1}, r"a=-1 is invalid \(valid: an integer ≥ 0"),
    ({"num_layers": 3, "a": 1.5}, r"a=1.5 is invalid"),
    ({"num_layers": 0, "a": 2}, r"num_layers=0 \(valid: an integer ≥ 1\)"),
])
def test_bad_schedules_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        curriculum_epochs(**kwargs)
    with pytest.raises(ConfigError, match=match):
        curriculum_layer(0, **kwargs)


def test_negative_epoch_is_a_config_error():
    with pytest.raises(ConfigError, match=r"epoch -1 is invalid"):
        curriculum_layer(-1, 3)


# ---- layer MSE ---------------------------------------------------------------------------------


def test_layer_mse_is_the_mean_over_batch_and_features():
    t = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # (1, 2, 1, 2)
    s = torch.zeros(1, 2, 1, 2)
    assert layer_mse(t, s).item() == pytest.approx((1 + 4 + 9 + 16) / 4)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 8, 6, 6)), rng.normal(size=(5, 8, 6, 6))
    ref = sum(((x - y) ** 2).sum() for x, y in zip(a, b)) / a.size
    got = layer_mse(torch.from_numpy(a), torch.from_numpy(b)).item()
    assert got == pytest.approx(ref, rel=1e-12)


def test_layer_mse_shape_mismatch_is_one_line():
    with pytest.raises(ConfigError, match=r"teacher \(2, 8, 6, 6\) and student \(2, 4, 6, 6\)"):
        layer_mse(torch.zeros(2, 8, 6, 6), torch.zeros(2, 4, 6, 6))


# ---- InDistill's PKT ---------------------------------------------------------------------------


def _numpy_indistill_pkt(s: np.ndarray, t: np.ndarray, eps: float = 1e-6) -> float:
    """Pair by pair: both kernels, conditional distributions per row, KL both ways."""
    def conditionals(e):
        b = len(e)
        cos, euc = np.empty((b, b)), np.empty((b, b))
        for i in range(b):
            for j in range(b):
                u = e[i] / (np.linalg.norm(e[i]) + eps)
                v = e[j] / (np.linalg.norm(e[j]) + eps)
                cos[i, j] = (1.0 + u @ v) / 2.0
                euc[i, j] = 1.0 / (1.0 + np.sqrt(np.sum((e[i] - e[j]) ** 2) + eps))
        return [k / k.sum(axis=1, keepdims=True) for k in (cos, euc)]

    total = 0.0
    for p, q in zip(conditionals(t), conditionals(s)):
        jeffreys = np.sum(p * np.log(p / q)) + np.sum(q * np.log(q / p))
        total += jeffreys / p.size
    return total


@pytest.mark.parametrize("b,ds,dt", [(6, 4, 9), (16, 64, 128)])
def test_pkt_equals_an_independent_numpy_computation(b, ds, dt):
    rng = np.random.default_rng(b)
    s = np.maximum(rng.normal(size=(b, ds)), 0)  # post-ReLU embeddings, as fc1 gives
    t = np.maximum(rng.normal(size=(b, dt)), 0) * 3.0
    got = indistill_pkt(torch.from_numpy(s), torch.from_numpy(t)).item()
    assert got == pytest.approx(_numpy_indistill_pkt(s, t), rel=1e-9)
    # float32 (the training dtype) is looser: ‖a‖² + ‖a‖² − 2a·a rounds to ~1e-7·‖a‖², more
    # than ε = 1e-6 for these norms, so the diagonal distance is rounding, not √ε (the
    # reference's float32 arithmetic does the same)
    got32 = indistill_pkt(torch.from_numpy(s).float(), torch.from_numpy(t).float()).item()
    assert got32 == pytest.approx(_numpy_indistill_pkt(s, t), rel=2e-2)


def test_pkt_hand_worked_two_points():
    """Student: two orthogonal unit vectors; teacher: two equal vectors (ε set to 0 to keep the
    numbers round).

    Student cosine kernel [[1, .5], [.5, 1]] → rows (2/3, 1/3); distance √2, kernel
    1/(1+√2) → rows (1+√2, 1)/(2+√2). Teacher: every kernel entry 1 → rows (1/2, 1/2).
    Jeffreys per row: (1/2−2/3)·log((1/2)/(2/3)) + (1/2−1/3)·log((1/2)/(1/3)), and the same
    with p = (1+√2)/(2+√2); mean over the 4 entries = the per-row sum (two equal rows) / 2.
    """
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    t = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    row_cos = (0.5 - 2 / 3) * np.log(0.5 / (2 / 3)) + (0.5 - 1 / 3) * np.log(0.5 / (1 / 3))
    p = (1 + np.sqrt(2)) / (2 + np.sqrt(2))
    row_euc = (0.5 - p) * np.log(0.5 / p) + (0.5 - (1 - p)) * np.log(0.5 / (1 - p))
    expected = (2 * row_cos) / 4 + (2 * row_euc) / 4
    assert indistill_pkt(s, t, eps=0.0).item() == pytest.approx(expected, rel=1e-12)


def test_pkt_is_symmetric_zero_on_equal_inputs_and_differentiable():
    torch.manual_seed(0)
    s, t = torch.rand(8, 5, requires_grad=True), torch.rand(8, 7)
    assert indistill_pkt(s, t).item() == pytest.approx(indistill_pkt(t, s).item(), rel=1e-6)
    assert indistill_pkt(t, t).item() == 0.0
    indistill_pkt(s, t).backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
