"""InDistill's pruned teacher view: the kept filters are ln_structured's, the pruned maps equal a
copy pruned with torch.nn.utils.prune and sliced by hand, the teacher is never touched, and the
residual rule matches a hand computation on ResNet blocks."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from kdbench.errors import ConfigError
from kdbench.models import create_model
from kdbench.models.resnet import CifarResNet
from kdbench.teachers.prune import PrunedTeacherView, filter_l1_norms, l1_keep_indices


def _randomise_bn(model: nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, so slicing errors show."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)


def _teacher(name: str, seed: int = 0, in_chans: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    model = create_model(name, 10, in_chans=in_chans)
    with torch.no_grad():
        _randomise_bn(model, seed)
    return model.eval()


def _ln_structured_kept(conv: nn.Conv2d, keep: int) -> torch.Tensor:
    """The filters torch's own structured pruning keeps, read from its mask."""
    c = copy.deepcopy(conv)
    prune.ln_structured(c, "weight", amount=c.out_channels - keep, n=1, dim=0)
    return c.weight_mask.flatten(1).any(1).nonzero().flatten()


# ---- which filters are kept -------------------------------------------------------------------


@pytest.mark.parametrize("cin,cout,keep", [(3, 16, 8), (16, 32, 16), (32, 64, 32), (8, 10, 3),
                                           (4, 7, 7)])
def test_kept_indices_equal_ln_structured(cin, cout, keep):
    torch.manual_seed(cin * cout + keep)
    conv = nn.Conv2d(cin, cout, 3)
    mine = l1_keep_indices(filter_l1_norms(conv.weight), keep)
    assert torch.equal(mine, _ln_structured_kept(conv, keep))
    # and the kept norms are the largest ones, by numpy
    norms = np.abs(conv.weight.detach().numpy()).reshape(cout, -1).sum(1)
    assert set(mine.tolist()) == set(np.argsort(-norms)[:keep].tolist())


def test_kept_indices_equal_ln_structured_on_exact_ties():
    """Several filters with the same L1 norm (sign flips and permutations of one filter): the
    kept set is still ln_structured's, whatever topk does with ties."""
    torch.manual_seed(3)
    base = torch.randn(4, 3, 3)
    conv = nn.Conv2d(4, 12, 3)
    with torch.no_grad():
        for i in range(12):
            w = base.flip(0) if i % 3 == 0 else (-base if i % 3 == 1 else base)
            conv.weight[i] = w * (2.0 if i in (2, 7) else 1.0)
    for keep in (3, 5, 9):
        assert torch.equal(l1_keep_indices(filter_l1_norms(conv.weight), keep),
                           _ln_structured_kept(conv, keep))


def test_keep_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot keep 9 of 8 filters"):
        l1_keep_indices(torch.ones(8), 9)


# ---- the plain CNN: exact equality with a copy pruned by torch.nn.utils.prune --------------------


def _torch_pruned_layer(conv: nn.Conv2d, bn: nn.BatchNorm2d, keep: int):
    """The reference's procedure with torch's pruning: ln_structured, remove, drop the zero
    filters (ascending), a new smaller conv; BatchNorm sliced with all its statistics."""
    c = copy.deepcopy(conv)
    prune.ln_structured(c, "weight", amount=c.out_channels - keep, n=1, dim=0)
    prune.remove(c, "weight")
    kept = (c.weight.flatten(1) != 0).any(1).nonzero().flatten()
    new = nn.Conv2d(c.in_channels, len(kept), 3)
    new.weight.data = c.weight.data[kept].clone()
    new.bias.data = c.bias.data[kept].clone()
    nbn = nn.BatchNorm2d(len(kept))
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(nbn, name).data = getattr(bn, name).data[kept].clone()
    return new, nbn.eval(), kept


@pytest.mark.parametrize("in_chans", [3, 1])
def test_plain_cnn_pruned_maps_equal_a_torch_pruned_copy(in_chans):
    teacher = _teacher("cnn32", 1, in_chans)
    view = PrunedTeacherView(teacher, [8, 16, 32])
    x = torch.randn(5, in_chans, 32, 32)
    outs = view(x)
    with torch.no_grad():
        feats = teacher.features(x)
        prev = [x, feats.stages[0], feats.stages[1]]
        for k, (conv, bn) in enumerate(teacher.blocks()):
            new, nbn, kept = _torch_pruned_layer(conv, bn, [8, 16, 32][k])
            ref = F.max_pool2d(F.relu(nbn(new(prev[k]))), 2)  # the reference's relu → pool
            assert torch.equal(outs[k], ref)
            assert torch.equal(view.kept[k], kept)
            # channels are independent up to the pool: the teacher's own map at the kept ones
            assert torch.allclose(outs[k], feats.stages[k][:, kept], atol=1e-5)
    assert [tuple(o.shape[1:]) for o in outs] == [(8, 15, 15), (16, 6, 6), (32, 2, 2)]
    student = create_model("cnn32_small", 10, in_chans=in_chans)
    assert [tuple(o.shape[1:]) for o in outs] == student.stage_shapes((32, 32))


def test_reference_batchnorm_mode_is_gamma_only_with_batch_statistics():
    """Hand computation in numpy: z = conv output at the kept filters, normalised by the batch's
    mean and biased variance, times γ, no β; ReLU; 2×2 max-pool."""
    teacher = _teacher("cnn32", 2)
    view = PrunedTeacherView(teacher, [8, 16, 32], batchnorm="batch_stats_gamma_only")
    x = torch.randn(6, 3, 32, 32)
    outs = view(x)
    with torch.no_grad():
        feats = teacher.features(x)
        prev = [x, feats.stages[0], feats.stages[1]]
        for k, (conv, bn) in enumerate(teacher.blocks()):
            kept = view.kept[k].numpy()
            z = F.conv2d(prev[k], conv.weight, conv.bias).numpy()[:, kept].astype(np.float64)
            mu = z.mean(axis=(0, 2, 3), keepdims=True)
            var = ((z - mu) ** 2).mean(axis=(0, 2, 3), keepdims=True)
            gamma = bn.weight.numpy()[kept].reshape(1, -1, 1, 1)
            y = np.maximum(gamma * (z - mu) / np.sqrt(var + bn.eps), 0)
            n, c, h, w = y.shape
            y = y[:, :, :h // 2 * 2, :w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2).max((3, 5))
            np.testing.assert_allclose(outs[k].numpy(), y, rtol=1e-4, atol=1e-5)


def test_reference_batchnorm_mode_equals_the_reference_construction():
    """prune_model_l1_structured: a fresh Conv2d (its own random bias) and a fresh BatchNorm2d
    holding only γ, both left in training mode."""
    teacher = _teacher("cnn32", 4)
    view = PrunedTeacherView(teacher, [8, 16, 32], batchnorm="batch_stats_gamma_only")
    x = torch.randn(7, 3, 32, 32)
    outs = view(x)
    with torch.no_grad():
        feats = teacher.features(x)
        prev = [x, feats.stages[0], feats.stages[1]]
        for k, (conv, bn) in enumerate(teacher.blocks()):
            kept = view.kept[k]
            torch.manual_seed(100 + k)
            new = nn.Conv2d(conv.in_channels, len(kept), 3)  # random bias, as the reference's
            new.weight = nn.Parameter(conv.weight[kept].clone())
            nbn = nn.BatchNorm2d(len(kept))
            nbn.weight = nn.Parameter(bn.weight[kept].clone())
            ref = F.max_pool2d(F.relu(nbn.train()(new(prev[k]))), 2)
            assert torch.allclose(outs[k], ref, atol=1e-5)


def test_teacher_is_unchanged_and_the_view_has_no_parameters():
    teacher = _teacher("cnn32", 5)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    for mode in ("running_stats", "batch_stats_gamma_only"):
        view = PrunedTeacherView(teacher, [8, 16, 32], batchnorm=mode)
        view.train()
        view(torch.randn(4, 3, 32, 32))
        with torch.no_grad():
            for b in view.buffers():
                b.add_(1.0)  # the view's copies never alias the teacher's tensors
        assert list(view.parameters()) == []
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not teacher.training


def test_identity_view_where_widths_already_match():
    teacher = _teacher("cnn32", 6)
    view = PrunedTeacherView(teacher, [16, 16, 64])
    x = torch.randn(3, 3, 32, 32)
    outs = view(x)
    with torch.no_grad():
        feats = teacher.features(x)
    assert view.kept[0] is None and view.kept[2] is None and view.kept[1] is not None
    assert torch.equal(outs[0], feats.stages[0]) and torch.equal(outs[2], feats.stages[2])
    assert outs[1].shape[1] == 16


def test_layers_choose_teacher_stages_and_from_features_reuses_a_forward():
    teacher = _teacher("cnn32", 7)
    view = PrunedTeacherView(teacher, [16, 32], layers=[1, 2])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = teacher.features(x)
    a, b = view.from_features(x, feats), view(x)
    assert [t.shape[1] for t in a] == [16, 32]
    assert all(torch.equal(p, q) for p, q in zip(a, b))


# ---- residual stages ---------------------------------------------------------------------------


def _numpy_topk(scores: np.ndarray, k: int) -> list[int]:
    return sorted(np.argsort(-scores, kind="stable")[:k].tolist())


def _l1(conv: nn.Conv2d) -> np.ndarray:
    return np.abs(conv.weight.detach().numpy()).reshape(conv.out_channels, -1).sum(1)


def test_resnet8_to_a_narrower_resnet_equals_a_hand_computation():
    teacher = _teacher("resnet8", 8)
    student = CifarResNet(8, widths=(8, 8, 16, 32), num_classes=10)
    widths = [s.channels for s in student.stage_info]
    view = PrunedTeacherView(teacher, widths)
    x = torch.randn(4, 3, 32, 32)
    outs = view(x)
    assert [tuple(o.shape[1:]) for o in outs] == student.stage_shapes((32, 32))
    with torch.no_grad():
        feats = teacher.features(x)
        # stage 2 (index 1): one block 16→32, stride 2, projection shortcut
        blk = teacher.layers[1][0]
        kept = _numpy_topk(_l1(blk.conv2) + _l1(blk.downsample[0]), 16)
        assert view.kept[1].tolist() == kept
        a = feats.stages[0]
        main = blk.bn2(blk.conv2(F.relu(blk.bn1(blk.conv1(a)))))
        short = blk.downsample[1](blk.downsample[0](a))
        assert torch.allclose(outs[1], F.relu(main[:, kept] + short[:, kept]), atol=1e-5)
        # stage 1 (index 0): identity shortcut from the 16-wide stem, sliced
        blk = teacher.layers[0][0]
        kept = _numpy_topk(_l1(blk.conv2), 8)
        assert view.kept[0].tolist() == kept
        s = feats.stem
        main = blk.bn2(blk.conv2(F.relu(blk.bn1(blk.conv1(s)))))
        assert torch.allclose(outs[0], F.relu(main[:, kept] + s[:, kept]), atol=1e-5)


def test_resnet_stream_rule_narrows_the_stream_for_later_blocks():
    """resnet14 (two blocks per stage): the second block reads only the kept channels. Hand
    computation: run the teacher's own block on the pruned stream scattered back to full width
    with zeros elsewhere (a removed input channel contributes nothing), then slice."""
    teacher = _teacher("resnet14", 9)
    view = PrunedTeacherView(teacher, [8, 16, 32])
    x = torch.randn(3, 3, 32, 32)
    outs = view(x)
    with torch.no_grad():
        feats = teacher.features(x)
        b0, b1 = teacher.layers[1]
        kept = _numpy_topk(_l1(b0.conv2) + _l1(b0.downsample[0]) + _l1(b1.conv2), 16)
        assert view.kept[1].tolist() == kept
        a = feats.stages[0]
        s0 = F.relu(b0(a)[:, kept])  # kdbench blocks return the pre-ReLU sum
        full = torch.zeros(3, 32, 16, 16)
        full[:, kept] = s0
        s1 = F.relu(b1(full)[:, kept])
        assert torch.allclose(outs[1], s1, atol=1e-5)
        assert not torch.allclose(outs[1], feats.stages[1][:, kept], atol=1e-3)


def test_resnet_last_block_rule_is_the_teacher_map_at_the_last_conv_s_channels():
    teacher = _teacher("resnet14", 10)
    view = PrunedTeacherView(teacher, [8, 16, 32], residual="last_block_l1")
    x = torch.randn(3, 3, 32, 32)
    outs = view(x)
    with torch.no_grad():
        feats = teacher.features(x)
    for i, w in enumerate((8, 16, 32)):
        kept = _numpy_topk(_l1(teacher.layers[i][-1].conv2), w)
        assert view.kept[i].tolist() == kept
        assert torch.allclose(outs[i], feats.stages[i][:, kept], atol=1e-5)


def test_resnet8x4_to_resnet8_shapes():
    teacher = _teacher("resnet8x4", 11)
    student = create_model("resnet8", 10)
    view = PrunedTeacherView(teacher, [s.channels for s in student.stage_info])
    outs = view(torch.randn(2, 3, 32, 32))
    assert [tuple(o.shape[1:]) for o in outs] == student.stage_shapes((32, 32))


# ---- errors ------------------------------------------------------------------------------------


def test_errors_name_the_values_and_the_valid_choices():
    teacher = _teacher("cnn32", 12)
    with pytest.raises(ConfigError, match=r"student width 64 at teacher layer 1 .* 32 "
                                          r"\(valid: 1 to 32\)"):
        PrunedTeacherView(teacher, [8, 64, 32])
    with pytest.raises(ConfigError, match=r"4 distilled layers .* only 3 \(valid: 1 to 3\)"):
        PrunedTeacherView(teacher, [8, 16, 32, 32])
    with pytest.raises(ConfigError, match=r"no pruning rule for teacher architecture VGG "
                                          r"\(valid: .*cnn32"):
        PrunedTeacherView(create_model("vgg8", 10), [64, 128])
    with pytest.raises(ConfigError, match=r"batchnorm 'train' .*running_stats, "
                                          r"batch_stats_gamma_only"):
        PrunedTeacherView(teacher, [8, 16, 32], batchnorm="train")
    with pytest.raises(ConfigError, match=r"residual rule 'x' .*stream_l1_sum"):
        PrunedTeacherView(teacher, [8, 16, 32], residual="x")
    with pytest.raises(ConfigError, match=r"layers \[2, 1\] must be increasing"):
        PrunedTeacherView(teacher, [8, 16], layers=[2, 1])
    with pytest.raises(ConfigError, match="same length"):
        PrunedTeacherView(teacher, [8, 16], layers=[0])
    with pytest.raises(ConfigError) as info:
        PrunedTeacherView(create_model("wrn_16_1", 10), [16])
    assert "\n" not in str(info.value) and "WideResNet" in str(info.value)
    view = PrunedTeacherView(teacher, [8, 16, 32])
    teacher.train()
    with pytest.raises(ConfigError, match="eval mode"):
        view(torch.randn(2, 3, 32, 32))
