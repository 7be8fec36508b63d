"""``teacher.bn``: the teacher's BatchNorm while it teaches — eval (the default), batch
statistics, or the official Checkpoint-KD code's schedule — checked against batch-norm computed
by hand, in the run id only when not the default, and resumed with its moving statistics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import tiny_overrides
from kdbench.config import build_config, run_id
from kdbench.engine import teacher_bn
from kdbench.errors import UnknownNameError
from kdbench.runner import run
from kdbench.store import Store

pytestmark = pytest.mark.usefixtures("single_thread")


def test_the_official_schedule_by_hand():
    """CheckpointKD's student.py validates (and so puts its teachers in eval mode for good)
    after 0-based epoch e only when e > epochs − 11: train mode up to e = epochs − 10."""
    modes = [teacher_bn.forward_mode("checkpointkd", e, 30) for e in range(30)]
    assert modes == ["train"] * 21 + ["eval"] * 9  # 1-based epochs 1–21, then the last 9
    assert [teacher_bn.forward_mode("checkpointkd", e, 11) for e in range(11)] == \
        ["train"] * 2 + ["eval"] * 9
    assert [teacher_bn.forward_mode("checkpointkd", e, 5) for e in range(5)] == \
        ["train"] + ["eval"] * 4
    assert {teacher_bn.forward_mode(m, 3, 30) for m in ("eval", "batch")} == {"eval", "batch"}


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    bn = net[1]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.5, 0.5)
    return net


def test_batch_mode_normalises_with_the_batch_and_keeps_the_running_statistics():
    net, x = _net(), torch.randn(8, 3, 6, 6)
    bn = net[1]
    before = {k: v.clone() for k, v in bn.state_dict().items() if "running" in k}
    teacher_bn.apply(net, "batch")
    with torch.no_grad():
        out = net(x)
    conv = net[0](x)
    mean = conv.mean((0, 2, 3), keepdim=True)
    var = conv.var((0, 2, 3), unbiased=False, keepdim=True)  # batch-norm's biased variance
    expected = torch.relu((conv - mean) / torch.sqrt(var + bn.eps)
                          * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for k, v in before.items():
        assert torch.equal(bn.state_dict()[k], v), k
    # back to eval: the running statistics again, as the model was built (momentum restored)
    teacher_bn.apply(net, "eval")
    assert not bn.training and bn.momentum == 0.1


def test_train_mode_moves_the_running_statistics_by_the_momentum():
    net, x = _net(), torch.randn(8, 3, 6, 6)
    bn = net[1]
    old = bn.running_mean.clone()
    teacher_bn.apply(net, "batch")  # a batch-mode epoch first must not leak momentum 0
    teacher_bn.apply(net, "train")
    with torch.no_grad():
        conv = net[0](x)
        net(x)
    torch.testing.assert_close(bn.running_mean, 0.9 * old + 0.1 * conv.mean((0, 2, 3)))


def test_in_the_run_id_only_when_not_the_default(results):
    base = tiny_overrides(results, **{"loss.name": "kd"})
    default = run_id(build_config(base))
    assert run_id(build_config({**base, "teacher.bn": "eval"})) == default
    assert run_id(build_config({**base, "teacher.bn": "batch"})) != default
    from kdbench.config import resolve

    with pytest.raises(UnknownNameError, match=r"unknown teacher.bn 'train' \(valid: batch, "
                                               r"checkpointkd, eval\)"):
        resolve(build_config({**base, "teacher.bn": "train"}))


def test_a_batch_statistics_teacher_teaches_differently_and_is_not_fused(tmp_path):
    over = {"loss.name": "kd", "engine.fuse_teacher": True}
    plain = run(build_config(tiny_overrides(tmp_path / "a", **over)), progress=False)
    batch = run(build_config(tiny_overrides(tmp_path / "b", **over, **{"teacher.bn": "batch"})),
                progress=False)
    assert batch["config"]["teacher"]["bn"] == "batch"
    assert plain["env"]["fuse_teacher"] and not batch["env"]["fuse_teacher"]
    assert batch["metrics"]["curve"] != plain["metrics"]["curve"]


def test_the_moving_statistics_resume_with_the_run(tmp_path, stopper):
    """teacher.bn=checkpointkd over 12 epochs: train mode (statistics moving) in epochs 1–3,
    eval after. Interrupted after epoch 2 and resumed, the record equals an uninterrupted one:
    the drifted statistics came back from the state (without them epochs 3–12 would see the
    checkpoint's own)."""
    from kdbench.teachers import manage

    stop = stopper
    over = {"loss.name": "kd", "teacher.bn": "checkpointkd", "recipe.epochs": 12}
    whole = run(build_config(tiny_overrides(tmp_path / "a", **over)), progress=False)
    cfg = build_config(tiny_overrides(tmp_path / "b", **over))
    manage.train(cfg, progress=False)
    stop["after"] = 2
    with pytest.raises(KeyboardInterrupt):
        run(cfg, progress=False)
    (state,) = Store(tmp_path / "b").runs.glob("*.state.pt")
    assert "teacher_buffers" in torch.load(state, weights_only=True)
    resumed = run(cfg, progress=False)
    assert resumed["metrics"]["curve"] == whole["metrics"]["curve"]
