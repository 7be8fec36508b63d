"""BSS (kdbench.losses.bss): the attack, the loss, the schedules and the distiller's seams."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from kdbench.errors import ConfigError
from kdbench.losses.base import DistillContext
from kdbench.losses.bss import (
    BSS,
    bss_attack,
    bss_kd,
    bss_schedule,
    bss_select,
    bss_target_classes,
    kd_schedule,
)
from kdbench.losses.catalogue import LOSSES
from kdbench.models.base import Features
from kdbench.stages import Batch


def linear_teacher() -> nn.Linear:
    """z = W x + b on 4 inputs, 3 classes; class 2 is never the top-1 (bias −10)."""
    lin = nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0],
                                       [0.0, 1.0, 0.0, 0.0],
                                       [0.0, 0.0, 1.0, 0.0]]))
        lin.bias.copy_(torch.tensor([0.0, 0.0, -10.0]))
    return lin


def margin(model, x, b, k) -> torch.Tensor:
    with torch.no_grad():
        z = model(x)
    return z[torch.arange(len(x)), b] - z[torch.arange(len(x)), k]


# ============================== the attack ======================================================


def test_attack_on_a_linear_teacher_shrinks_the_margin_by_the_hand_factor():
    # base 0, target 1: d = w0 − w1 = (1, −1, 0, 0), ‖d‖ = √2; each step moves x by
    # −η·(m + 1e-4)·d/‖d‖, so m ← m − η·√2·(m + 1e-4)
    teacher = linear_teacher()
    x = torch.tensor([[3.0, 1.0, 0.5, -0.2]])
    k = torch.tensor([1])
    eta, m = 0.3, 2.0
    previous = float(margin(teacher, x, torch.tensor([0]), k))
    assert previous == pytest.approx(m)
    for steps in range(1, 8):
        m = m - eta * math.sqrt(2.0) * (m + 1e-4)
        x_adv = bss_attack(teacher, x, k, steps=steps, eta=eta, clamp=None)
        got = float(margin(teacher, x_adv, torch.tensor([0]), k))
        assert got == pytest.approx(m, rel=1e-5, abs=1e-6)
        assert 0 < got < previous  # monotone, never past the boundary at this η
        previous = got
    # the move is along d only: the coordinates d does not touch are unchanged
    assert torch.equal(x_adv[:, 2:], x[:, 2:])


def test_attack_shrinks_the_margin_monotonically_on_a_small_conv_teacher():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(2),
                            nn.Flatten(), nn.Linear(32, 5)).eval()
    x = torch.rand(6, 3, 8, 8) * 4 - 2  # inside the clamp range, so only the attack moves it
    with torch.no_grad():
        z = teacher(x)
    b = z.argmax(1)
    k = z.scatter(1, b.view(-1, 1), float("-inf")).argmax(1)  # the runner-up class
    margins = [margin(teacher, x, b, k)]
    for steps in range(1, 6):
        margins.append(margin(teacher, bss_attack(teacher, x, k, steps=steps), b, k))
    m = torch.stack(margins)  # (steps + 1, B)
    assert bool((m[1:] < m[:-1]).all())
    # the first step against its first-order prediction m₁ ≈ m₀ − η·(m₀ + 1e-4)·‖∇ₓ m‖
    xv = x.clone().requires_grad_(True)
    zv = teacher(xv)
    rows = torch.arange(len(x))
    (g,) = torch.autograd.grad((zv[rows, b] - zv[rows, k]).sum(), xv)
    predicted = m[0] - 0.3 * (m[0] + 1e-4) * g.flatten(1).norm(dim=1)
    assert torch.allclose(m[1], predicted, rtol=0, atol=0.05 * float((m[0] - m[1]).min()))


def test_samples_that_crossed_stop_moving():
    teacher = linear_teacher()
    x = torch.tensor([[3.0, 1.0, 0.0, 0.0], [5.0, 0.0, 0.0, 0.0]])
    k = torch.tensor([1, 1])
    # η = 1: the step is (m + 1e-4)·√2 along d, i.e. the margin becomes −0.414·m − 1.4e-4 < 0
    once = bss_attack(teacher, x, k, steps=1, eta=1.0, clamp=None)
    assert bool((margin(teacher, once, torch.tensor([0, 0]), k) < 0).all())
    assert torch.equal(bss_attack(teacher, x, k, steps=5, eta=1.0, clamp=None), once)


def test_attack_clamps_to_the_official_range():
    teacher = linear_teacher()
    x = torch.tensor([[2.4, -2.4, 0.0, 0.0]])
    x_adv = bss_attack(teacher, x, torch.tensor([1]), steps=3, eta=0.3)
    assert float(x_adv.abs().max()) <= 2.5
    assert float(x_adv[0, 0]) < 2.4  # it did move


def test_teacher_gets_no_gradient_and_is_unchanged():
    torch.manual_seed(1)
    teacher = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    before = [p.detach().clone() for p in teacher.parameters()]
    x = torch.randn(5, 6)
    z = teacher(x).detach()
    k = bss_target_classes(z, torch.Generator().manual_seed(0))
    x_adv = bss_attack(teacher, x, k, steps=4)
    assert not x_adv.requires_grad
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(p, q) for p, q in zip(teacher.parameters(), before))


# ============================== selection and target classes ====================================


def test_select_keeps_both_right_and_ranks_by_non_target_disagreement():
    target = torch.tensor([0, 1, 0, 2, 0])
    t = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [2.0, 0.0, 1.0],
                      [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    s = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [2.0, 1.0, 0.0],
                      [0.0, 3.0, 1.0], [3.0, 0.0, 0.0]])
    # sample 3: student says 1 → excluded; samples 0, 1, 2, 4 qualify
    assert bss_select(s, t, target, 10).tolist() == [0, 1, 2, 4]

    def score(i):  # numpy: Σ over the non-target classes of (p_t − p_s)²
        pt = np.exp(t[i].numpy()) / np.exp(t[i].numpy()).sum()
        ps = np.exp(s[i].numpy()) / np.exp(s[i].numpy()).sum()
        mask = np.arange(3) != int(target[i])
        return float(((pt - ps)[mask] ** 2).sum())

    ranked = sorted([0, 1, 2, 4], key=score, reverse=True)
    assert score(1) == 0.0 and ranked[-1] == 1
    assert bss_select(s, t, target, 2).tolist() == ranked[:2]


def test_target_classes_follow_the_teachers_non_top_probabilities():
    z = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(20000, 1)
    draws = bss_target_classes(z, torch.Generator().manual_seed(0))
    freq = np.bincount(draws.numpy(), minlength=4) / len(draws)
    assert freq[0] == 0.0
    expected = np.array([0.3, 0.15, 0.05]) / 0.5
    assert np.abs(freq[1:] - expected).max() < 0.015  # sd ≤ 0.0035
    # saturated teacher: the non-top probabilities underflow, the draw still works
    sat = torch.tensor([[200.0, 0.0, -1.0]])
    assert bss_target_classes(sat, torch.Generator().manual_seed(0)).item() in (1, 2)
    again = bss_target_classes(z[:50], torch.Generator().manual_seed(0))
    assert torch.equal(again, draws[:50])


# ============================== loss and schedules ==============================================


def test_bss_kd_matches_numpy_without_t_squared():
    g = torch.Generator().manual_seed(4)
    s, t = torch.randn(5, 7, generator=g) * 2, torch.randn(5, 7, generator=g) * 2
    T = 3.0
    total = 0.0
    for zs, zt in zip(s.double().numpy(), t.double().numpy()):
        ps = np.exp(zs / T) / np.exp(zs / T).sum()
        pt = np.exp(zt / T) / np.exp(zt / T).sum()
        total += float((pt * np.log(pt / ps)).sum())
    assert float(bss_kd(s, t, T)) == pytest.approx(total / 5, rel=1e-5)


def test_bss_kd_has_the_official_soft_cross_entropy_gradient():
    g = torch.Generator().manual_seed(5)
    s = (torch.randn(4, 6, generator=g)).requires_grad_(True)
    t = torch.randn(4, 6, generator=g)
    T = 3.0
    (ours,) = torch.autograd.grad(bss_kd(s, t, T), s)
    official = -(torch.softmax(t / T, 1) * torch.log_softmax(s / T, 1)).sum() / s.shape[0]
    (theirs,) = torch.autograd.grad(official, s)
    assert torch.allclose(ours, theirs, atol=1e-7)


@pytest.mark.parametrize("epoch, alpha, beta", [
    # E = 80 (official): α = max(3(1 − e/80), 0) + 1, β = max(2(1 − 4e/240), 0)
    (1, 3.9625, 2 * (1 - 4 / 240)), (20, 3.25, 2 * (1 - 1 / 3)), (30, 2.875, 1.0),
    (45, 2.3125, 0.5), (60, 1.75, 0.0), (80, 1.0, 0.0), (90, 1.0, 0.0),
])
def test_schedules_against_hand_values(epoch, alpha, beta):
    assert kd_schedule(epoch, 80) == pytest.approx(alpha, abs=1e-12)
    assert bss_schedule(epoch, 80) == pytest.approx(beta, abs=1e-12)


# ============================== the distiller ===================================================


class Net(nn.Module):
    def __init__(self, width: int, classes: int = 4):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width),
                                  nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(width, classes))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.body(x)


def make(options=None, **ctx_extra):
    torch.manual_seed(0)
    student, teacher = Net(4), Net(8).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    defaults = LOSSES["bss"][1]["defaults"]
    weights = {k: v for k, v in defaults.items() if k.startswith("w_")}
    opts = {k: v for k, v in defaults.items() if not k.startswith("w_")}
    opts.update({"schedule_epochs": 8, **(options or {})})
    ctx = DistillContext(student, teacher, 4, (3, 6, 6), 32, weights, opts, **ctx_extra)
    return BSS(ctx), student, teacher


def batch(teacher, student, n=16):
    x = torch.randn(n, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        t = teacher(x)
    s = student(x)
    return x, Features(logits=s), Features(logits=t)


def test_distiller_holds_no_models_as_submodules():
    d, student, teacher = make()
    assert list(d.parameters()) == []
    assert set(d.state_dict()) == {"_extra_state"}
    assert d.connector_parameters() == 0


def test_distiller_forward_backward_gives_the_student_grads_and_the_teacher_none():
    d, student, teacher = make({"sample_ratio": 1.0})
    x, s, t = batch(teacher, student)
    target = t.logits.argmax(1)  # every sample the teacher gets right …
    s = Features(logits=s.logits + 50 * nn.functional.one_hot(target, 4))  # … and the student
    teacher.calls = student.calls = 0
    terms = d(s, t, target, epoch=0, batch=Batch(x, target, torch.arange(len(x))))
    assert set(terms) == {"kd", "bss"} and float(terms["bss"].detach()) > 0
    # 10 attack steps + 1 forward on x_adv for the teacher (fewer if all crossed), 1 for the
    # student
    assert 1 < teacher.calls <= 11 and student.calls == 1
    (terms["kd"] + terms["bss"]).backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert not teacher.training  # restored


def test_bss_term_at_a_hand_checked_epoch_and_zero_after_the_stop():
    d, student, teacher = make({"sample_ratio": 1.0})
    x, s, t = batch(teacher, student)
    target = t.logits.argmax(1)
    # E = 8: epoch index 5 is e = 6 = 3/4·8 → β = 0, α = 1 + 3·(1 − 6/8) = 1.75
    teacher.calls = 0
    terms = d(s, t, target, epoch=5, batch=Batch(x, target, torch.arange(len(x))))
    assert float(terms["bss"]) == 0.0 and teacher.calls == 0
    kd = float(bss_kd(s.logits, t.logits, 3.0).detach())
    assert float(terms["kd"].detach()) == pytest.approx(1.75 * kd)


def test_target_draws_resume_from_the_state_dict():
    d, student, teacher = make()
    z = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
    bss_target_classes(z, d.generator)
    saved = d.state_dict()
    expected = bss_target_classes(z, d.generator)
    other, _, _ = make()
    other.load_state_dict(saved)
    assert torch.equal(bss_target_classes(z, other.generator), expected)


def test_distiller_needs_the_batch_and_epochs():
    d, student, teacher = make()
    x, s, t = batch(teacher, student)
    assert d.step_arguments == frozenset({"batch"})  # the engine passes batch= and only it
    with pytest.raises(ConfigError, match="needs the batch inputs"):
        d(s, t, t.logits.argmax(1))
    with pytest.raises(ConfigError, match="set option schedule_epochs"):
        make({"schedule_epochs": None})
    with pytest.raises(ConfigError, match="sample_ratio must be in \\(0, 1\\], got 1.5"):
        make({"sample_ratio": 1.5})


def test_registration_is_complete_for_the_lead():
    name, (factory, meta) = "bss", LOSSES["bss"]
    assert name == "bss" and factory is BSS
    for key in ("description", "paper", "defaults", "taps", "year", "repo", "family", "cost"):
        assert meta[key]
    assert meta["family"] == "decision boundary"
    assert {"w_ce", "w_kd", "w_bss", "T", "steps", "eta", "sample_ratio"} <= set(meta["defaults"])
