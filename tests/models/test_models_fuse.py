"""Folding a frozen teacher's BatchNorm into its convolutions (:mod:`kdbench.models.fuse`).

Every architecture of the zoo, with random BatchNorm statistics (so a wrong fold shows): the
fused copy's logits and every feature tap equal the unfused model's; unknown patterns are left
unfused and stay correct; ensembles fold every member; the original is never touched.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdbench.errors import ConfigError
from kdbench.models import create_model
from kdbench.models.fuse import conv_bn_pairs, fold_conv_bn, fuse_frozen, probe_input
from kdbench.models.registry import ZOO
from kdbench.models.wrn import WideBlock, WideResNet


def randomise_batchnorms(model: nn.Module, seed: int) -> None:
    """Statistics far from the identity map, so folding them wrongly moves every output."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
            if m.weight is not None:
                m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(c, generator=g) * 0.5)


def taps(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        f = model.features(x)
        out = {"forward": model(x), "logits": f.logits, "embedding": f.embedding}
    if f.stem is not None:
        out["stem"] = f.stem
    out.update({f"stage{i}": t for i, t in enumerate(f.stages)})
    out.update({f"preact{i}": t for i, t in enumerate(f.preact)})
    return out


def assert_same(ref: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> None:
    assert ref.keys() == new.keys()
    for name, a in ref.items():
        b = new[name]
        assert a.shape == b.shape, name
        # float32 rounding of the folded weights only: relative to the tap's magnitude
        scale = float(a.abs().max())
        assert float((a - b).abs().max()) <= 1e-5 * scale, name


def expected_batchnorms_left(model: nn.Module) -> int:
    """Counted from the architecture, not from the trace: WRN's pre-activation BatchNorms
    (each block's ``bn1`` and the final one) follow a residual sum, not a convolution, so they
    stay; every other zoo BatchNorm follows a convolution whose output nothing else reads."""
    if isinstance(model, WideResNet):
        return sum(isinstance(m, WideBlock) for m in model.modules()) + 1
    return 0


@pytest.mark.parametrize("arch", sorted(ZOO))
def test_fused_zoo_model_gives_the_same_logits_and_feature_taps(arch):
    torch.manual_seed(0)
    model = create_model(arch, 10, 3).eval()
    randomise_batchnorms(model, seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))

    fused, report = fuse_frozen(model, probe_input((3, 32, 32)))

    assert_same(taps(model, x), taps(fused, x))
    batchnorms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    left = sum(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert left == expected_batchnorms_left(model)
    assert report.folded == batchnorms - left > 0 and report.batchnorms == batchnorms
    assert report.refused is None and report.max_rel_diff < 1e-5
    # the original (what is on disk) is untouched; the copy is frozen
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert not fused.training and not any(p.requires_grad for p in fused.parameters())


def test_fold_of_a_hand_worked_conv_and_batchnorm():
    """1×1 conv, 1 → 2 channels, W = (2, −1), b = (0.5, 0); BN ε = 1, μ = (1, 0.5),
    σ² = (3, 0), γ = (1.5, 2), β = (0.1, −0.2): s = γ/√(σ²+ε) = (0.75, 2),
    W' = (1.5, −2), b' = s·(b − μ) + β = (0.75·−0.5 + 0.1, 2·−0.5 − 0.2) = (−0.275, −1.2)."""
    conv = nn.Conv2d(1, 2, 1)
    bn = nn.BatchNorm2d(2, eps=1.0)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([2.0, -1.0]).view(2, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.5, 0.0]))
        bn.running_mean.copy_(torch.tensor([1.0, 0.5]))
        bn.running_var.copy_(torch.tensor([3.0, 0.0]))
        bn.weight.copy_(torch.tensor([1.5, 2.0]))
        bn.bias.copy_(torch.tensor([0.1, -0.2]))
    weight, bias = fold_conv_bn(conv, bn)
    assert weight.flatten().tolist() == [1.5, -2.0]
    assert bias.tolist() == pytest.approx([-0.275, -1.2], abs=1e-7)
    # without a conv bias nor affine parameters: s = 1/√(σ²+ε) = (0.5, 1), b' = −s·μ
    conv2 = nn.Conv2d(1, 2, 1, bias=False)
    bn2 = nn.BatchNorm2d(2, eps=1.0, affine=False)
    with torch.no_grad():
        conv2.weight.copy_(conv.weight)
        bn2.running_mean.copy_(bn.running_mean)
        bn2.running_var.copy_(bn.running_var)
    weight, bias = fold_conv_bn(conv2, bn2)
    assert weight.flatten().tolist() == [1.0, -1.0] and bias.tolist() == [-0.5, -0.5]


def test_fold_keeps_channels_last_weights():
    conv, bn = nn.Conv2d(4, 8, 3), nn.BatchNorm2d(8)
    conv = conv.to(memory_format=torch.channels_last)
    weight, _ = fold_conv_bn(conv, bn)
    assert weight.is_contiguous(memory_format=torch.channels_last)


class Tangle(nn.Module):
    """Four conv → BN patterns, only the first of which may fold: (a) a plain pair; (b) the
    conv output is also added after the BN; (c) the BN is a subclass that does more (like
    timm's BatchNormAct2d); (d) the conv output is returned as well (a feature tap)."""

    def __init__(self):
        super().__init__()
        self.conv_a, self.bn_a = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv_b, self.bn_b = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv_c, self.bn_c = nn.Conv2d(4, 4, 1), ReluBatchNorm(4)
        self.conv_d, self.bn_d = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x):
        out = F.relu(self.bn_a(self.conv_a(x)))
        z = self.conv_b(out)
        out = self.bn_b(z) + z
        out = self.bn_c(self.conv_c(out))
        tap = self.conv_d(out)
        return self.bn_d(tap), tap


class ReluBatchNorm(nn.BatchNorm2d):
    def forward(self, x):
        return F.relu(super().forward(x))


def test_unknown_patterns_are_left_unfused_and_stay_correct():
    model = Tangle().eval()
    randomise_batchnorms(model, seed=3)
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(4))
    assert conv_bn_pairs(model, x) == [("conv_a", "bn_a")]
    fused, report = fuse_frozen(model, x)
    assert report.folded == 1 and report.batchnorms == 4
    assert isinstance(fused.bn_a, nn.Identity)
    assert all(isinstance(getattr(fused, f"bn_{k}"), nn.BatchNorm2d) for k in "bcd")
    with torch.no_grad():
        for a, b in zip(model(x), fused(x)):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_a_convolution_called_twice_is_not_folded():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x):
            return self.bn(self.conv(self.conv(x)))

    model = Twice().eval()
    randomise_batchnorms(model, seed=5)
    assert conv_bn_pairs(model, torch.randn(1, 3, 4, 4)) == []


def test_the_check_refuses_a_wrong_fold(monkeypatch):
    """If a fold were wrong, the copy is refused and the unfused copy comes back."""
    from kdbench.models import fuse

    model = create_model("resnet8", 10, 3).eval()
    randomise_batchnorms(model, seed=6)

    def biasless(conv, bn):
        weight, bias = fold_conv_bn(conv, bn)
        return weight, torch.zeros_like(bias)
    monkeypatch.setattr(fuse, "fold_conv_bn", biasless)
    x = probe_input((3, 32, 32))
    fused, report = fuse.fuse_frozen(model, x)
    assert report.folded == 0 and report.refused and "left unfused" in report.refused
    assert sum(isinstance(m, nn.BatchNorm2d) for m in fused.modules()) == report.batchnorms
    assert_same(taps(model, x), taps(fused, x))


def test_bad_tolerance_is_refused():
    with pytest.raises(ConfigError, match="rtol must be > 0, got 0"):
        fuse_frozen(nn.Conv2d(1, 1, 1), torch.zeros(1, 1, 2, 2), rtol=0)


@pytest.mark.parametrize("batched", [False, True])
def test_every_member_of_an_ensemble_is_fused(batched):
    from kdbench.teachers.ensemble import EnsembleTeacher

    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = create_model("resnet8", 5, 3).eval()
        randomise_batchnorms(m, seed=10 + seed)
        members.append(m)
    ensemble = EnsembleTeacher(members, "prob", 4.0, batched=batched).eval()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = ensemble(x)
    fused, report = fuse_frozen(ensemble, probe_input((3, 16, 16)))
    assert report.folded == report.batchnorms == 18
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    with torch.no_grad():
        torch.testing.assert_close(fused(x), ref, rtol=1e-5, atol=1e-5)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in ensemble.modules()) == 18


def test_timm_models_fold_plain_pairs_and_keep_the_rest():
    """timm's ResNet uses plain BatchNorm2d after its convs (they fold); MobileNetV3 uses
    BatchNormAct2d, a subclass that also applies the activation (left as it is)."""
    pytest.importorskip("timm")
    for name, folds in (("timm/resnet10t", True), ("timm/mobilenetv3_small_050", False)):
        torch.manual_seed(0)
        model = create_model(name, 10, 3).eval()
        randomise_batchnorms(model, seed=8)
        x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(9))
        fused, report = fuse_frozen(model, probe_input((3, 32, 32)))
        assert (report.folded > 0) == folds, name
        assert report.refused is None
        with torch.no_grad():
            a, b = model(x), fused(x)
        assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max()), name


def test_probe_input_leaves_the_global_stream_alone():
    state = torch.get_rng_state()
    a = probe_input((3, 8, 8), seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert a.shape == (2, 3, 8, 8) and torch.equal(a, probe_input((3, 8, 8), seed=1))


def test_run_with_fuse_teacher_records_the_fusion_and_leaves_the_checkpoint(cli_runner, results):
    """``--fuse-teacher``: the engine distils from the folded copy, the record says so, the
    trajectory on disk keeps the ordinary checkpoint (its BatchNorm entries)."""
    import json

    fast = ["--dataset", "digits", "--student", "resnet8", "--teacher-arch", "resnet8",
            "--epochs", "1", "--set", "teacher.recipe.epochs=2", "--set",
            "teacher.save_every=2", "--set", "recipe.milestones=[]", "--device", "cpu",
            "--precision", "fp32", "--quiet", "--json", "--results-dir", results]
    plain = cli_runner("run", *fast, "--loss", "kd")
    fused = cli_runner("run", *fast, "--loss", "kd", "--fuse-teacher", "--force")
    assert plain.exit_code == 0 and fused.exit_code == 0, fused.output
    plain_rec, fused_rec = json.loads(plain.stdout), json.loads(fused.stdout)
    assert plain_rec["run_id"] == fused_rec["run_id"]  # a speed setting, not part of the id
    assert plain_rec["env"]["fuse_teacher"] is False and plain_rec["env"]["teacher_fusion"] is None
    assert fused_rec["env"]["fuse_teacher"] is True
    report = fused_rec["env"]["teacher_fusion"]
    assert report["folded"] == report["batchnorms"] == 9 and report["refused"] is None
    [trajectory] = (results / "teachers").iterdir()
    [checkpoint] = trajectory.glob("**/*.pt")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    assert sum(k.endswith("running_var") for k in state) == 9
