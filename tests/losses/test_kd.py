"""Hinton KD against values computed independently of kdbench's code."""

from __future__ import annotations

import math

import numpy as np
import torch

from kdbench.losses.kd import kd


def kd_reference(s: np.ndarray, t: np.ndarray, T: float) -> float:
    """Loop over the batch in float64: T² · mean_i Σ_c p_t log(p_t / p_s)."""
    total = 0.0
    for zs, zt in zip(s, t):
        ps = np.exp(zs / T - np.max(zs / T))
        ps /= ps.sum()
        pt = np.exp(zt / T - np.max(zt / T))
        pt /= pt.sum()
        total += float(np.sum(pt * (np.log(pt) - np.log(ps))))
    return T * T * total / len(s)


def test_kd_hand_worked_two_class_case():
    # s = [0, 0] → p_s = (½, ½); t = [ln 3, 0] with T = 1 → p_t = (¾, ¼)
    # KL = ¾ ln(¾/½) + ¼ ln(¼/½) = ¾ ln 1.5 − ¼ ln 2
    s = torch.zeros(1, 2)
    t = torch.tensor([[math.log(3.0), 0.0]])
    expected = 0.75 * math.log(1.5) - 0.25 * math.log(2.0)
    assert math.isclose(float(kd(s, t, T=1.0)), expected, rel_tol=1e-6)
    # the T² factor: logits scaled by T give the same distributions, so the value scales by T²
    assert math.isclose(float(kd(4 * s, 4 * t, T=4.0)), 16 * expected, rel_tol=1e-5)


def test_kd_matches_loop_reference_batchmean():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(7, 10, generator=g) * 3, torch.randn(7, 10, generator=g) * 3
    for T in (1.0, 4.0):
        got = float(kd(s, t, T))
        want = kd_reference(s.double().numpy(), t.double().numpy(), T)
        assert math.isclose(got, want, rel_tol=1e-5), (T, got, want)
    # batchmean, not mean over elements: duplicating the batch leaves the value unchanged
    assert math.isclose(float(kd(torch.cat([s, s]), torch.cat([t, t]), 4.0)),
                        float(kd(s, t, 4.0)), rel_tol=1e-6)


def test_kd_is_zero_for_equal_logits_and_gives_the_student_a_gradient():
    s = torch.randn(3, 5, requires_grad=True)
    t = s.detach().clone().requires_grad_(True)
    assert abs(float(kd(s, t, 4.0).detach())) < 1e-6
    loss = kd(s * 2, t, 4.0)
    loss.backward()
    assert s.grad is not None and float(s.grad.abs().sum()) > 0
