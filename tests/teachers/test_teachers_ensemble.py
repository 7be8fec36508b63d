"""Ensemble averaging and member selection against hand-worked and numpy values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from kdbench.errors import ConfigError
from kdbench.teachers.ensemble import EnsembleTeacher, combine, evenly_spaced


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_hand_worked_two_members_two_classes():
    # member 1 is undecided (p = ½, ½); member 2 says 3:1 (logits ln 3, 0)
    z = torch.tensor([[[0.0, 0.0]], [[math.log(3.0), 0.0]]])
    # logit mean (ln 3 / 2, 0): p = √3 / (1 + √3) = 0.6340
    p_logit = torch.softmax(combine(z, "logit"), -1)[0]
    assert p_logit[0].item() == pytest.approx(math.sqrt(3) / (1 + math.sqrt(3)))
    # probability mean: (½ + ¾) / 2 = 0.625
    p_prob = torch.softmax(combine(z, "prob"), -1)[0]
    assert p_prob.tolist() == pytest.approx([0.625, 0.375])


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_averaging_matches_numpy(temperature):
    rng = np.random.default_rng(0)
    z = rng.normal(scale=3.0, size=(3, 5, 7))
    logits = torch.tensor(z, dtype=torch.float32)
    assert combine(logits, "logit").numpy() == pytest.approx(z.mean(0), abs=1e-5)
    out = combine(logits, "prob", temperature).numpy().astype(np.float64)
    # a KD loss softens the ensemble's logits by the same T: it must see the mean of the
    # members' softened distributions
    expected = softmax(z / temperature).mean(0)
    assert softmax(out / temperature) == pytest.approx(expected, abs=1e-6)


def test_ensemble_teacher_forward_is_the_combined_member_outputs():
    torch.manual_seed(0)
    members = [nn.Linear(4, 3) for _ in range(3)]
    x = torch.randn(6, 4)
    stacked = np.stack([m(x).detach().numpy() for m in members])
    for mode, T in (("logit", 1.0), ("prob", 2.0)):
        ens = EnsembleTeacher(members, mode, T)
        got = ens(x).detach().numpy()
        want = stacked.mean(0) if mode == "logit" else T * np.log(softmax(stacked / T).mean(0))
        assert got == pytest.approx(want, abs=1e-5)
    assert EnsembleTeacher.has_features is False
    with pytest.raises(ConfigError, match="at least 2 members"):
        EnsembleTeacher(members[:1])
    with pytest.raises(ConfigError, match="unknown ensemble mode 'median'"):
        combine(torch.zeros(2, 1, 3), "median")


def test_evenly_spaced_members_include_the_latest():
    saved = list(range(20, 201, 20))
    assert evenly_spaced(saved, 3) == [60, 140, 200]
    assert evenly_spaced(saved, 2) == [100, 200]
    assert evenly_spaced(saved, 5) == [40, 80, 120, 160, 200]
    assert evenly_spaced(saved, 10) == saved
    assert evenly_spaced([4, 2], 2) == [2, 4]
    with pytest.raises(ConfigError, match=r"cannot pick 3 .* from 2 saved .*saved: 2, 4"):
        evenly_spaced([2, 4], 3)
