"""ReviewKD, OFD and KD-SVD: each functional form against numpy written here or a hand-worked
case, their connectors on zoo pairs against the official configuration lists, pairs they cannot
handle refused with one-line errors, and each trained end to end through ``kdbench.runner.run``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from conftest import tiny_overrides
from kdbench.config import build_config
from kdbench.errors import ConfigError
from kdbench.losses import DistillContext, build, entry, resolve
from kdbench.losses.connectors import ABF, ReviewFusion
from kdbench.losses.kdsvd import _TopSVD, align_singular, feature_svd, kdsvd
from kdbench.losses.ofd import ofd, ofd_margin, ofd_stage, preact_batchnorms
from kdbench.losses.reviewkd import hcl, review_channels
from kdbench.models import create_model
from kdbench.runner import run

pytestmark = pytest.mark.usefixtures("single_thread")
rng = np.random.default_rng(0)


def t(a) -> torch.Tensor:
    return torch.tensor(np.asarray(a), dtype=torch.float32)


def avgpool(f, size):  # (B, C, H, W) -> (B, C, size, size), H divisible by size
    b, c, h, _ = f.shape
    k = h // size
    return f.reshape(b, c, size, k, size, k).mean(axis=(3, 5))


def mse(a, b):
    return float(((a - b) ** 2).mean())


def distiller(name, student, teacher, input_shape=(3, 32, 32), **options):
    w, o = resolve(name, options=options, student=student, teacher=teacher)
    s, te = create_model(student, 100), create_model(teacher, 100)
    return build(name, DistillContext(s, te, 100, input_shape, 1000, w, o)), s, te


# ============================== ReviewKD: HCL ===================================================


def test_hcl_levels_4_2_1_with_halving_weights_against_numpy():
    fs, ft = rng.normal(size=(2, 3, 8, 8)), rng.normal(size=(2, 3, 8, 8))
    want8 = (mse(fs, ft) + mse(avgpool(fs, 4), avgpool(ft, 4)) / 2
             + mse(avgpool(fs, 2), avgpool(ft, 2)) / 4
             + mse(avgpool(fs, 1), avgpool(ft, 1)) / 8) / (1 + 1 / 2 + 1 / 4 + 1 / 8)
    gs, gt = rng.normal(size=(2, 5, 4, 4)), rng.normal(size=(2, 5, 4, 4))
    # a 4×4 map skips level 4: the first level used (2) gets 1/2, then 1/4
    want4 = (mse(gs, gt) + mse(avgpool(gs, 2), avgpool(gt, 2)) / 2
             + mse(avgpool(gs, 1), avgpool(gt, 1)) / 4) / 1.75
    es, et = rng.normal(size=(2, 7, 1, 1)), rng.normal(size=(2, 7, 1, 1))  # the embedding
    got = hcl([t(fs), t(gs), t(es)], [t(ft), t(gt), t(et)]).item()
    assert got == pytest.approx(want8 + want4 + mse(es, et), rel=1e-5)


def test_hcl_hand_worked_checkerboard():
    # a ±1 checkerboard against zeros: full-resolution MSE 1, every pooled level averages it
    # away (0), so the normalised loss is 1 / (1 + 1/2 + 1/4 + 1/8) = 8/15
    board = (np.indices((8, 8)).sum(0) % 2) * 2.0 - 1.0
    ft = t(board[None, None])
    assert hcl([torch.zeros(1, 1, 8, 8)], [ft]).item() == pytest.approx(8 / 15, rel=1e-6)


# ============================== ReviewKD: ABF and the review path ===============================


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_abf_attention_fusion_against_numpy():
    torch.manual_seed(0)
    abf = ABF(3, 4, 5, fuse=True).eval()  # eval: BN is x / sqrt(1 + eps) (fresh statistics)
    x, y = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 4, 2, 2))
    out, fused = abf(t(x), t(y), (8, 8))
    w1 = abf.conv1[0].weight.detach().numpy()[:, :, 0, 0]
    wa = abf.att_conv[0].weight.detach().numpy()[:, :, 0, 0]
    ba = abf.att_conv[0].bias.detach().numpy()
    x1 = np.einsum("oc,bchw->bohw", w1, x) / math.sqrt(1 + 1e-5)
    y_up = y.repeat(2, axis=2).repeat(2, axis=3)  # nearest 2×2 → 4×4
    z = sigmoid(np.einsum("oc,bchw->bohw", wa, np.concatenate([x1, y_up], 1))
                + ba[None, :, None, None])
    blend = x1 * z[:, :1] + y_up * z[:, 1:]
    want = blend.repeat(2, axis=2).repeat(2, axis=3)  # then to the teacher's 8×8
    np.testing.assert_allclose(fused.detach().numpy(), want, rtol=1e-4, atol=1e-5)
    assert out.shape == (2, 5, 8, 8)


def test_review_path_runs_deep_to_shallow_and_only_the_deepest_does_not_fuse():
    fusion = ReviewFusion([8, 16, 16], [4, 6, 6])
    assert fusion.mid_channels == 16
    assert [abf.att_conv is None for abf in fusion.abfs] == [False, False, True]
    feats = [torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4), torch.randn(2, 16, 1, 1)]
    outs = fusion(feats, [(16, 16), (8, 8), (1, 1)])
    assert [tuple(o.shape) for o in outs] == [(2, 4, 16, 16), (2, 6, 8, 8), (2, 6, 1, 1)]
    # the deepest output depends on the deepest feature only; the shallowest on all of them
    feats[0].requires_grad_(True)
    outs = fusion(feats, [(16, 16), (8, 8), (1, 1)])
    assert torch.autograd.grad(outs[2].sum(), feats[0], allow_unused=True)[0] is None
    assert torch.autograd.grad(outs[0].sum(), feats[0])[0].abs().sum() > 0


#: the official lists (dvlab-research/ReviewKD CIFAR-100/model/reviewkd.py build_review_kd)
OFFICIAL_REVIEW = {
    ("resnet20", "resnet56"): ([16, 32, 64, 64], [16, 32, 64, 64], [1, 8, 16, 32], None),
    ("resnet8x4", "resnet32x4"): ([64, 128, 256, 256], [64, 128, 256, 256], [1, 8, 16, 32],
                                  None),
    ("wrn_16_2", "wrn_40_2"): ([32, 64, 128, 128], [32, 64, 128, 128], [1, 8, 16, 32], None),
    ("vgg8", "vgg13"): ([128, 256, 512, 512, 512], [128, 256, 512, 512, 512], [1, 4, 4, 8, 16],
                        None),
    ("shufflev1", "resnet32x4"): ([240, 480, 960, 960], [64, 128, 256, 256], [1, 4, 8, 16],
                                  [1, 8, 16, 32]),
    ("mobilenetv2", "vgg13"): ([12, 16, 48, 160, 1280], [128, 256, 512, 512, 512],
                               [1, 2, 4, 8, 16], [1, 4, 4, 8, 16]),
}


@pytest.mark.parametrize("pair", list(OFFICIAL_REVIEW))
def test_review_lists_derived_from_the_models_equal_the_official_ones(pair):
    student, teacher = pair
    in_ch, out_ch, shapes, out_shapes = OFFICIAL_REVIEW[pair]
    got = review_channels(create_model(student, 100), create_model(teacher, 100))
    assert got["in_channels"] == in_ch and got["out_channels"] == out_ch
    assert got["shapes"] == shapes and got["out_shapes"] == (out_shapes or shapes)
    assert got["mid_channels"] == min(512, in_ch[-1])


@pytest.mark.parametrize("student,teacher", [("resnet20", "resnet56"),
                                             ("resnet8x4", "resnet32x4"),
                                             ("wrn_16_2", "wrn_40_2"), ("vgg8", "vgg13")])
def test_reviewkd_connectors_and_outputs_on_zoo_pairs(student, teacher):
    d, s, te = distiller("reviewkd", student, teacher)
    in_ch, out_ch, _, _ = OFFICIAL_REVIEW[(student, teacher)]
    mid = min(512, in_ch[-1])
    for abf, c_in, c_out in zip(d.review.abfs, in_ch, out_ch):
        assert tuple(abf.conv1[0].weight.shape) == (mid, c_in, 1, 1)
        assert tuple(abf.conv2[0].weight.shape) == (c_out, mid, 3, 3)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ft = te.features(x)
    t_maps = d.teacher_maps(ft)
    fused = d.review(d.student_maps(s.features(x)), [m.shape[-2:] for m in t_maps])
    assert [o.shape for o in fused] == [m.shape for m in t_maps]


def test_reviewkd_warmup_counts_epochs_from_zero_like_the_official_trainer():
    d, _, _ = distiller("reviewkd", "resnet8", "resnet8", (3, 8, 8))
    assert [d.warmup_factor(e) for e in (0, 10, 20, 30)] == [0.0, 0.5, 1.0, 1.0]
    d0, _, _ = distiller("reviewkd", "resnet8", "resnet8", (3, 8, 8), warmup=0)
    assert d0.warmup_factor(0) == 1.0


def test_reviewkd_official_weight_per_pair():
    def weight(student, teacher, **options):
        return resolve("reviewkd", options=options, student=student,
                       teacher=teacher)[0]["w_reviewkd"]
    assert weight("resnet20", "resnet56", weight_table=True) == 0.6
    assert weight("resnet32", "resnet110", weight_table=True) == 1.0
    assert weight("resnet8x4", "resnet32x4", weight_table=True) == 5.0
    assert weight("wrn_16_2", "wrn_40_2", weight_table=True) == 5.0
    assert weight("shufflev2", "resnet32x4", weight_table=True) == 8.0
    assert weight("vgg8", "vgg13", weight_table=True) == 1.0  # not in the official script
    assert weight("resnet20", "resnet56") == 1.0  # opt-in, as DKD's beta_table


# ============================== OFD: margins ====================================================


def test_ofd_margin_hand_worked_standard_normal():
    # N(0, 1): E[x | x < 0] = −φ(0) / Φ(0) = −2/√(2π)
    got = ofd_margin(torch.tensor([1.0, -1.0]), torch.tensor([0.0, 0.0]))
    np.testing.assert_allclose(got.numpy(), [-2 / math.sqrt(2 * math.pi)] * 2, rtol=1e-6)


def test_ofd_margin_is_the_truncated_gaussian_mean_from_bn_statistics():
    gamma = np.array([1.0, 0.5, -2.0, 0.3, 1.5, 0.2, 0.0, 0.0])
    beta = np.array([0.0, 0.4, -1.0, 2.0, 3.0, 0.5, -0.7, 0.4])
    want = []
    for g, b in zip(np.abs(gamma), beta):
        if g == 0:
            want.append(min(b, 0.0))  # a constant channel: its value if negative, else 0
        elif stats.norm.cdf(-b / g) > 1e-3:
            want.append(stats.truncnorm(-np.inf, -b / g, loc=b, scale=g).mean())
        else:  # almost never negative (β > 3.09|γ|): the official fallback −3|γ|
            want.append(-3 * g)
    assert stats.norm.cdf(-2.0 / 0.3) <= 1e-3 and stats.norm.cdf(-3.0 / 1.5) > 1e-3
    got = ofd_margin(t(gamma), t(beta)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert got[3] == pytest.approx(-0.9) and (got < 0).sum() == 7


# ============================== OFD: partial L2 =================================================


def test_ofd_partial_l2_hand_worked():
    m = -0.5
    # (student, teacher): t ≤ m with s above m → (s − m)²; t ≤ m, s below m → 0;
    # m < t ≤ 0 with s above t → (s − t)²; s below t → 0; t > 0 → (s − t)² either side
    s = [0.0, -0.7, 0.0, -0.3, 0.0, 1.0]
    te = [-1.0, -1.0, -0.2, -0.2, 0.5, 0.5]
    want = 0.25 + 0 + 0.04 + 0 + 0.25 + 0.25
    got = ofd_stage(t(s).view(1, 1, 2, 3), t(te).view(1, 1, 2, 3), torch.tensor([m]))
    assert got.item() == pytest.approx(want, rel=1e-6)
    # summed over elements, divided by the batch size
    two = ofd_stage(t(s + s).view(2, 1, 2, 3), t(te + te).view(2, 1, 2, 3), torch.tensor([m]))
    assert two.item() == pytest.approx(want, rel=1e-6)


def test_ofd_against_numpy_with_stage_weights_and_teacher_pooling():
    def official(s, te, margin):  # distiller.py: target max(t, m), mask s > target | target > 0
        target = np.maximum(te, margin[None, :, None, None])
        keep = (s > target) | (target > 0)
        return float((((s - target) ** 2) * keep).sum()) / s.shape[0]

    shapes = [(3, 4, 8, 8), (3, 6, 4, 4), (3, 5, 2, 2)]
    s = [rng.normal(size=sh) for sh in shapes]
    te = [rng.normal(size=sh) for sh in shapes]
    te[2] = rng.normal(size=(3, 5, 4, 4))  # a larger teacher map is pooled to the student's
    margins = [-np.abs(rng.normal(size=sh[1])) for sh in shapes]
    pooled = [te[0], te[1], avgpool(te[2], 2)]
    want = sum(official(a, b, m) / 2 ** (2 - i)
               for i, (a, b, m) in enumerate(zip(s, pooled, margins)))
    got = ofd([t(a) for a in s], [t(b) for b in te], [t(m) for m in margins]).item()
    assert got == pytest.approx(want, rel=1e-5)


# ============================== OFD: the teacher's BatchNorms ==================================


def _tap_blocks(model) -> list[nn.Module | None]:
    """The block whose output is each preact tap where it may add an identity shortcut to the
    BN's output (ResNet, ShuffleNet V1, MobileNetV2), else None (WRN, VGG: the BN's output)."""
    from kdbench.models.mobilenetv2 import TAPS, MobileNetV2
    from kdbench.models.resnet import ResNet
    from kdbench.models.shufflenet import ShuffleNetV1

    if isinstance(model, MobileNetV2):
        return [model.blocks[i][-1] for i in TAPS]
    if isinstance(model, (ResNet, ShuffleNetV1)):
        return [layer[-1] for layer in model.layers]
    return [None] * len(model.stage_info)


@pytest.mark.parametrize("name", ["resnet20", "resnet50", "wrn_16_2", "vgg8", "mobilenetv2",
                                  "shufflev1"])
def test_preact_batchnorms_feed_the_preact_taps(name):
    torch.manual_seed(0)
    model = create_model(name, 10).eval()
    for m in model.modules():  # non-trivial BN statistics and affine parameters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
            m.weight.data.normal_()
            m.bias.data.normal_()
    bns = preact_batchnorms(model)
    blocks = _tap_blocks(model)
    seen: dict = {}
    hooks = [bn.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, o.detach()))
             for k, bn in enumerate(bns)]
    hooks += [b.register_forward_pre_hook(lambda m, i, k=k: seen.__setitem__(("in", k), i[0]))
              for k, b in enumerate(blocks) if b is not None]
    with torch.no_grad():
        feats = model.features(torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert len(bns) == len(feats.preact)
    for k, (bn, pre) in enumerate(zip(bns, feats.preact)):
        assert bn.num_features == pre.shape[1]
        rest = pre - seen[k]
        # the tap is the BN's output itself, or that plus the block's identity shortcut
        if torch.allclose(rest, torch.zeros_like(rest), atol=1e-5):
            continue
        assert ("in", k) in seen and torch.allclose(rest, seen[("in", k)], atol=1e-4), (name, k)


def test_preact_batchnorms_refuses_models_without_them():
    with pytest.raises(ConfigError, match="ShuffleNetV2.*supported teachers") as err:
        preact_batchnorms(create_model("shufflev2", 10))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="Linear"):
        preact_batchnorms(nn.Linear(2, 2))


@pytest.mark.parametrize("student,teacher", [("resnet20", "resnet56"),
                                             ("resnet8x4", "resnet32x4"),
                                             ("wrn_16_2", "wrn_40_2"), ("vgg8", "vgg13")])
def test_ofd_connectors_and_margins_on_zoo_pairs(student, teacher):
    d, s, te = distiller("ofd", student, teacher)
    s_ch = [info.channels for info in s.stage_info]
    t_ch = [info.channels for info in te.stage_info]
    assert [tuple(c.conv.weight.shape) for c in d.connectors] == [
        (tc, sc, 1, 1) for sc, tc in zip(s_ch, t_ch)]
    assert [m.shape[0] for m in d.margins()] == t_ch
    bns = preact_batchnorms(te)
    assert all(torch.allclose(m, ofd_margin(bn.weight, bn.bias))
               for m, bn in zip(d.margins(), bns))
    assert {k for k in d.state_dict() if k.startswith("margin")} == {
        f"margin{i}" for i in range(len(t_ch))}  # saved and restored with the distiller


def test_ofd_pairs_the_deepest_stages_when_the_counts_differ():
    d, s, te = distiller("ofd", "resnet20", "vgg13")  # 3 student stages, 4 teacher stages
    assert d.n == 3 and [c.conv.weight.shape[:2] for c in d.connectors] == [
        (256, 16), (512, 32), (512, 64)]


# ============================== KD-SVD ==========================================================


def test_feature_svd_decomposes_positions_by_channels():
    # a rank-one map x[c, h, w] = a[c] · b[h, w]: the right singular vector is a/|a| over the
    # channels (mdistiller's (C·H) × W view would give a vector over the width instead)
    a = np.array([3.0, -1.0, 2.0, 1.0])
    b = rng.normal(size=(5, 6))
    x = t(a[:, None, None] * b[None])[None]
    s, v = feature_svd(x, 1)
    assert v.shape == (1, 4, 1)
    np.testing.assert_allclose(v[0, :, 0].numpy(), a / np.linalg.norm(a), rtol=1e-5)
    assert s.item() == pytest.approx(np.linalg.norm(a) * np.linalg.norm(b), rel=1e-5)


def test_align_singular_hand_worked():
    v_t = t([[1.0], [0.0], [0.0]])[None]  # the teacher's leading vector e1
    # student candidates (columns): e2 (cos 0) and (−0.6, 0, 0.8) (cos −0.6): the second wins
    v_s = t([[0.0, -0.6], [1.0, 0.0], [0.0, 0.8]])[None]
    s, te = align_singular(v_s, v_t, t([[7.0]]), 1)
    np.testing.assert_allclose(s[0, :, 0].numpy(), [-0.6, 0.0, 0.8], atol=1e-7)
    np.testing.assert_allclose(te[0, :, 0].numpy(), [-1.0, 0.0, 0.0])  # flipped to the student
    # two components: both sides scaled by the teacher's singular values normalised, 3-4-5
    v_t2 = t([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])[None]
    v_s2 = t([[0.0, 1.0], [-1.0, 0.0], [0.0, 0.0]])[None]  # the candidates in swapped order
    s2, te2 = align_singular(v_s2, v_t2, t([[3.0, 4.0]]), 2)
    np.testing.assert_allclose(s2[0].numpy(), [[0.6, 0.0], [0.0, -0.8], [0.0, 0.0]], atol=1e-7)
    np.testing.assert_allclose(te2[0].numpy(), [[0.6, 0.0], [0.0, -0.8], [0.0, 0.0]], atol=1e-7)


@pytest.mark.parametrize("m,n,k", [(20, 6, 2), (5, 9, 2), (7, 7, 3)])
def test_top_svd_gradient_equals_the_full_svd_gradient(m, n, k):
    torch.manual_seed(0)
    x = torch.randn(3, m, n, dtype=torch.float64, requires_grad=True)
    s, v = _TopSVD.apply(x, k)
    gs, gv = torch.randn_like(s), torch.randn_like(v)
    mine, = torch.autograd.grad((s * gs).sum() + (v * gv).sum(), x)
    y = x.detach().clone().requires_grad_(True)
    _, s_full, vh = torch.linalg.svd(y, full_matrices=False)
    v_full = vh.transpose(1, 2)
    sign = torch.where(v_full.sum(1, keepdim=True) < 0, -1.0, 1.0).to(y.dtype).detach()
    torch_grad, = torch.autograd.grad((s_full[:, :k] * gs).sum()
                                      + (v_full[:, :, :k] * sign[..., :k] * gv).sum(), y)
    torch.testing.assert_close(mine, torch_grad, rtol=1e-9, atol=1e-10)


def test_top_svd_gradient_stays_finite_for_an_all_zero_map():
    x = torch.relu(torch.randn(2, 16, 8))
    # a sample whose map is all zero (every ReLU off): its singular values are all 0, where
    # torch's full SVD gradient (torch 2.x) divides 0 by 0
    x[1] = 0
    z = x.clone().requires_grad_(True)
    _, v = _TopSVD.apply(z, 2)
    v.pow(3).sum().backward()
    assert torch.isfinite(z.grad).all() and z.grad[0].abs().sum() > 0


def kdsvd_numpy(student, teacher, k, extra):
    """The official algorithm written with numpy loops: SVD of each sample's HW × C matrix,
    signs fixed by Σ v ≥ 0, alignment, RBF correlations of consecutive layers."""
    def svd(f, n):
        out = []
        for sample in f:
            x = sample.reshape(sample.shape[0], -1).T  # HW × C
            _, sv, vt = np.linalg.svd(x, full_matrices=False)
            vs = [vt[i] * (1 if vt[i].sum() >= 0 else -1) for i in range(min(n, len(sv)))]
            out.append((sv[:n], vs))
        return out

    def align(cands, tvecs, tvals, n):
        w = np.array(tvals[:n]) / np.linalg.norm(tvals[:n])
        s_out, t_out = [], []
        for i in range(n):
            best = max(cands, key=lambda c: abs(c @ tvecs[i]))
            sign = 1 if best @ tvecs[i] >= 0 else -1
            s_out.append(best * w[i])
            t_out.append(tvecs[i] * w[i] * sign)
        return s_out, t_out

    total, batch = 0.0, student[0].shape[0]
    ss = [svd(f, k + extra) for f in student]
    ts = [svd(f, k) for f in teacher]
    for layer in range(len(student) - 1):
        for b in range(batch):
            (_, sa), (_, sb) = ss[layer][b], ss[layer + 1][b]
            (ta_val, ta), (tb_val, tb) = ts[layer][b], ts[layer + 1][b]
            n = min(k, len(sa), len(sb), len(ta), len(tb))
            sa, ta = align(sa, ta, ta_val, n)
            sb, tb = align(sb, tb, tb_val, n)
            for i in range(n):
                for c in range(len(sa[i])):
                    for d in range(len(sb[i])):
                        r_s = math.exp(-(sa[i][c] - sb[i][d]) ** 2 / 8)
                        r_t = math.exp(-(ta[i][c] - tb[i][d]) ** 2 / 8)
                        total += (r_s - r_t) ** 2
    return total / batch


@pytest.mark.parametrize("k,extra", [(1, 1), (2, 1), (1, 3)])
def test_kdsvd_against_numpy(k, extra):
    shapes = [(3, 4, 6, 6), (3, 6, 3, 3), (3, 5, 2, 2)]  # the last: 4 positions < 5 channels
    student = [np.abs(rng.normal(size=sh)) for sh in shapes]
    teacher = [np.abs(rng.normal(size=sh)) + rng.normal(size=sh) for sh in shapes]
    got = kdsvd([t(f) for f in student], [t(f) for f in teacher], k, extra).item()
    assert got == pytest.approx(kdsvd_numpy(student, teacher, k, extra), rel=1e-4)


def test_kdsvd_gradient_reaches_the_student_only():
    s = [torch.randn(4, 8, 6, 6, requires_grad=True), torch.randn(4, 16, 3, 3,
                                                                 requires_grad=True)]
    te = [torch.randn(4, 8, 6, 6, requires_grad=True), torch.randn(4, 16, 3, 3,
                                                                  requires_grad=True)]
    kdsvd(s, te).backward()
    assert all(torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0 for x in s)
    assert all(x.grad is None for x in te)


@pytest.mark.parametrize("student,teacher", [("resnet20", "resnet56"),
                                             ("resnet8x4", "resnet32x4"),
                                             ("wrn_16_2", "wrn_40_2"), ("vgg8", "vgg13")])
def test_kdsvd_builds_without_connectors_on_equal_width_pairs(student, teacher):
    d, _, _ = distiller("kdsvd", student, teacher)
    assert d.connectors is None and d.connector_parameters() == 0


def test_kdsvd_connector_maps_unequal_widths():
    d, s, te = distiller("kdsvd", "wrn_40_1", "wrn_40_2", connector=True)
    assert [tuple(c.conv.weight.shape) for c in d.connectors] == [
        (32, 16, 1, 1), (64, 32, 1, 1), (128, 64, 1, 1)]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ft = te.features(x)
    term = d(s.features(x), ft, torch.zeros(2, dtype=torch.long))["kdsvd"]
    term.backward()
    assert torch.isfinite(term) and d.connectors[0].conv.weight.grad.abs().sum() > 0


# ============================== bad pairs and options ==========================================


@pytest.mark.parametrize("name,student,teacher,options,match", [
    ("reviewkd", "vgg8", "resnet56", {}, "pairs stages.*student has 5 and the teacher 4"),
    ("ofd", "resnet20", "shufflev2", {}, "BatchNorm before each pre-activation tap"),
    ("kdsvd", "wrn_40_1", "wrn_40_2", {}, r"equal channels.*\[16, 32, 64\].*connector=true"),
    ("kdsvd", "resnet20", "vgg13", {}, "pairs stages one to one"),
    ("reviewkd", "resnet20", "resnet56", {"warmup": -1}, "option warmup must be >= 0"),
    ("reviewkd", "resnet20", "resnet56", {"max_mid_channels": 0},
     "max_mid_channels must be > 0"),
    ("kdsvd", "resnet20", "resnet56", {"k": 0}, "option k must be > 0"),
    ("kdsvd", "resnet20", "resnet56", {"extra": 1.5}, "option extra must be an integer, got 1.5"),
])
def test_pairs_and_options_that_cannot_work_are_one_line_config_errors(name, student, teacher,
                                                                        options, match):
    with pytest.raises(ConfigError, match=match) as err:
        distiller(name, student, teacher, **options)
    assert "\n" not in str(err.value)


def test_a_teacher_is_required():
    w, o = resolve("ofd")
    ctx = DistillContext(create_model("resnet8", 4), None, 4, (3, 8, 8), 10, w, o)
    with pytest.raises(ConfigError, match="needs a teacher"):
        build("ofd", ctx)


# ============================== registration ====================================================


@pytest.mark.parametrize("name,year", [("reviewkd", 2021), ("ofd", 2019), ("kdsvd", 2018)])
def test_registration_metadata(name, year):
    meta = entry(name).metadata
    assert meta["year"] == year and isinstance(meta["year"], int)
    assert meta["repo"].startswith("https://github.com/") and meta["family"] == "feature"
    assert str(year) in meta["paper"] and f"w_{name}" in meta["defaults"]
    assert meta["defaults"]["w_ce"] == 1.0
    assert set(entry(name).factory.taps) == set(meta["taps"])


def test_official_default_weights():
    assert resolve("ofd")[0] == {"w_ce": 1.0, "w_ofd": 0.001}
    assert resolve("kdsvd")[1] == {"k": 1, "extra": 1, "connector": False, "stages": None}
    w, o = resolve("reviewkd")
    assert w == {"w_ce": 1.0, "w_reviewkd": 1.0} and o["warmup"] == 20
    assert o["max_mid_channels"] == 512 and o["student_preact"] is False


# ============================== end to end ======================================================


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One results store for the module, so the tiny teacher is trained once."""
    return tmp_path_factory.mktemp("modern_feature") / "results"


@pytest.mark.parametrize("name", ["reviewkd", "ofd", "kdsvd"])
def test_trains_end_to_end_through_the_runner(name, shared):
    record = run(build_config(tiny_overrides(shared, **{"loss.name": name})), progress=False)
    assert record["status"] == "done" and record["metrics"]["epochs"] == 2
    curve = record["metrics"]["curve"]
    assert len(curve) == 2 and all(math.isfinite(row[f"train_{name}"]) for row in curve)
    assert (record["cost"]["connector_params"] > 0) == (name != "kdsvd")
    assert record["config"]["loss"]["weights"][f"w_{name}"] == resolve(name)[0][f"w_{name}"]
