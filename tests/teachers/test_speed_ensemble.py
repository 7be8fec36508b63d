"""The batched (vmap) ensemble forward gives the members' loop outputs, behind one switch."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_overrides
from kdbench.config import build_config
from kdbench.models import create_model
from kdbench.runner import run
from kdbench.teachers.ensemble import EnsembleTeacher


def members(k: int = 3, arch: str = "resnet8") -> list[torch.nn.Module]:
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        m = create_model(arch, 5, 3).eval()
        for bn in m.modules():  # non-trivial running statistics, as a trained member has
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
        for p in m.parameters():
            p.requires_grad_(False)
        out.append(m)
    return out


@pytest.mark.parametrize("mode, T", [("logit", 1.0), ("prob", 4.0)])
def test_vmapped_forward_matches_the_loop(mode, T):
    ms = members()
    x = torch.randn(6, 3, 8, 8)
    loop = EnsembleTeacher(ms, mode, T)
    batched = EnsembleTeacher(ms, mode, T, batched=True)
    with torch.no_grad():
        want = torch.stack([m(x) for m in ms])
        torch.testing.assert_close(batched.member_logits(x), want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(batched(x), loop(x), rtol=1e-5, atol=1e-5)


def test_vmapped_forward_follows_weight_changes():
    ms = members()
    ens = EnsembleTeacher(ms, batched=True)
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        ens(x)
        ms[1].load_state_dict(members(3)[0].state_dict())  # in place: same storage
        torch.testing.assert_close(ens(x), torch.stack([m(x) for m in ms]).mean(0),
                                   rtol=1e-5, atol=1e-5)
        ens.to(memory_format=torch.channels_last)  # new storage
        torch.testing.assert_close(ens(x), torch.stack([m(x) for m in ms]).mean(0),
                                   rtol=1e-4, atol=1e-4)


def test_mixed_architectures_fall_back_to_the_loop():
    ms = members(2) + members(1, "resnet20")
    ens = EnsembleTeacher(ms, batched=True)
    assert not ens.same_architecture()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(ens(x), torch.stack([m(x) for m in ms]).mean(0))


def test_switch_in_a_run_changes_speed_not_the_run(results):
    def cfg(vmap: bool):
        return build_config(tiny_overrides(results, **{
            "teacher.source": "snapshot", "teacher.options.members_count": 2,
            "recipe.epochs": 1, "engine.ensemble_vmap": vmap}))
    loop = run(cfg(False), progress=False)
    batched = run(cfg(True), force=True, progress=False)
    assert batched["run_id"] == loop["run_id"]
    assert batched["config"]["engine"]["ensemble_vmap"] is True
    assert batched["teacher"]["teacher_top1"] == pytest.approx(loop["teacher"]["teacher_top1"])
    assert batched["metrics"]["top1_last"] == pytest.approx(loop["metrics"]["top1_last"],
                                                            abs=100 / 128)
