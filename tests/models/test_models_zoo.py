"""The CIFAR zoo: exact parameter counts, the feature view per family, forward/backward of every
model, the zoo in timm's registry, and the per-architecture preset defaults."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdbench.config import build_config
from kdbench.models import count_parameters, create_meta_model, create_model
from kdbench.models.registry import ZOO

# ---- reference parameter counts ---------------------------------------------------------------
# Counted from RepDistiller's architecture definitions (models/*.py) with the formulas below,
# which know nothing of kdbench's modules. The issue states six of them (resnet20, resnet56,
# resnet32x4, wrn_40_2, vgg13, shufflev2); the CRD paper's tables agree on the rest
# (e.g. ResNet-50 23.71M, ShuffleNetV1 0.95M, MobileNetV2 0.81M).


def _conv(cin, cout, k, groups=1, bias=False):
    return cin // groups * cout * k * k + (cout if bias else 0)


def _bn(c):
    return 2 * c


def _fc(i, o):
    return i * o + o


def ref_resnet(depth, widths, nc=100):
    n, total, inp = (depth - 2) // 6, _conv(3, widths[0], 3) + _bn(widths[0]), widths[0]
    for planes, stride in zip(widths[1:], (1, 2, 2)):
        for j in range(n):
            total += 2 * _bn(planes) + _conv(inp, planes, 3) + _conv(planes, planes, 3)
            if (stride if j == 0 else 1) != 1 or inp != planes:
                total += _conv(inp, planes, 1) + _bn(planes)
            inp = planes
    return total + _fc(inp, nc)


def ref_resnet50(nc=100):
    total, inp = _conv(3, 64, 3) + _bn(64), 64
    for planes, blocks, stride in zip((64, 128, 256, 512), (3, 4, 6, 3), (1, 2, 2, 2)):
        for j in range(blocks):
            total += (_conv(inp, planes, 1) + _conv(planes, planes, 3)
                      + _conv(planes, 4 * planes, 1) + 2 * _bn(planes) + _bn(4 * planes))
            if (stride if j == 0 else 1) != 1 or inp != 4 * planes:
                total += _conv(inp, 4 * planes, 1) + _bn(4 * planes)
            inp = 4 * planes
    return total + _fc(inp, nc)


def ref_wrn(depth, k, nc=100):
    n, total, inp = (depth - 4) // 6, _conv(3, 16, 3), 16
    for out in (16 * k, 32 * k, 64 * k):
        for _ in range(n):
            total += _bn(inp) + _conv(inp, out, 3) + _bn(out) + _conv(out, out, 3)
            total += _conv(inp, out, 1) if inp != out else 0
            inp = out
    return total + _bn(inp) + _fc(inp, nc)


VGG_CFG = {8: [[64], [128], [256], [512], [512]],
           11: [[64], [128], [256, 256], [512, 512], [512, 512]],
           13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
           16: [[64, 64], [128, 128], [256] * 3, [512] * 3, [512] * 3],
           19: [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4]}


def ref_vgg(depth, nc=100):
    total, inp = 0, 3
    for v in (v for block in VGG_CFG[depth] for v in block):
        total, inp = total + _conv(inp, v, 3, bias=True) + _bn(v), v
    return total + _fc(512, nc)


def ref_mobilenetv2(w, t_=6, nc=100):
    setting = [(1, 16, 1), (t_, 24, 2), (t_, 32, 3), (t_, 64, 4), (t_, 96, 3), (t_, 160, 3),
               (t_, 320, 1)]
    inp = int(32 * w)
    total = _conv(3, inp, 3) + _bn(inp)
    for t, c, n in setting:
        for _ in range(n):
            h, oup = inp * t, int(c * w)
            total += _conv(inp, h, 1) + _conv(h, h, 3, groups=h) + _conv(h, oup, 1)
            total += 2 * _bn(h) + _bn(oup)
            inp = oup
    last = int(1280 * w) if w > 1 else 1280
    return total + _conv(inp, last, 1) + _bn(last) + _fc(last, nc)


def ref_shufflev1(nc=100, g=3):
    total, inp = _conv(3, 24, 1) + _bn(24), 24
    for width, blocks in zip((240, 480, 960), (4, 8, 4)):
        for i in range(blocks):
            out = width - (inp if i == 0 else 0)
            mid = out // 4
            total += (_conv(inp, mid, 1, groups=1 if inp == 24 else g) + _conv(mid, mid, 3, mid)
                      + _conv(mid, out, 1, groups=g) + 2 * _bn(mid) + _bn(out))
            inp = width
    return total + _fc(960, nc)


def ref_shufflev2(nc=100):
    total, inp = _conv(3, 24, 1) + _bn(24), 24
    for out, blocks in zip((116, 232, 464), (3, 7, 3)):
        m = out // 2
        total += (_conv(inp, inp, 3, inp) + _bn(inp) + _conv(inp, m, 1) + _conv(inp, m, 1)
                  + _conv(m, m, 3, m) + _conv(m, m, 1) + 4 * _bn(m))
        total += blocks * (2 * _conv(m, m, 1) + _conv(m, m, 3, m) + 3 * _bn(m))
        inp = out
    return total + _conv(464, 1024, 1) + _bn(1024) + _fc(1024, nc)


def ref_cnn32(widths, hidden, nc=100, in_chans=3):
    """InDistill's Cnn32 / Cnn32_Small (gsarridis/InDistill models/cnn32.py, cnn32_small.py):
    three unpadded 3×3 convs with bias + BN, fc ``widths[-1]·2·2 → hidden → nc``."""
    total, inp = 0, in_chans
    for w in widths:
        total, inp = total + _conv(inp, w, 3, bias=True) + _bn(w), w
    return total + _fc(widths[-1] * 4, hidden) + _fc(hidden, nc)


PARAMS_100 = {
    "resnet8": 83_892, "resnet14": 181_108, "resnet20": 278_324, "resnet32": 472_756,
    "resnet44": 667_188, "resnet56": 861_620, "resnet110": 1_736_564,
    "resnet8x4": 1_233_540, "resnet32x4": 7_433_860, "resnet50": 23_705_252,
    "wrn_16_1": 180_916, "wrn_16_2": 703_284, "wrn_40_1": 569_780, "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028, "vgg11": 9_277_284, "vgg13": 9_462_180, "vgg16": 14_774_436,
    "vgg19": 20_086_692,
    "mobilenetv2": 812_836, "mobilenetv2_075": 1_475_692, "mobilenetv2_100": 2_353_060,
    "shufflev1": 949_258, "shufflev2": 1_355_528,
    # not RepDistiller's: InDistill's plain CNNs, counted from its models/*.py layer shapes
    "cnn32": 69_604, "cnn32_small": 20_900,
}

REFERENCE = {
    **{f"resnet{d}": (lambda d=d: ref_resnet(d, (16, 16, 32, 64)))
       for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": lambda: ref_resnet(8, (32, 64, 128, 256)),
    "resnet32x4": lambda: ref_resnet(32, (32, 64, 128, 256)),
    "resnet50": ref_resnet50,
    **{f"wrn_{d}_{k}": (lambda d=d, k=k: ref_wrn(d, k)) for d, k in ((16, 1), (16, 2), (40, 1),
                                                                     (40, 2))},
    **{f"vgg{d}": (lambda d=d: ref_vgg(d)) for d in VGG_CFG},
    "mobilenetv2": lambda: ref_mobilenetv2(0.5),
    "mobilenetv2_075": lambda: ref_mobilenetv2(0.75),
    "mobilenetv2_100": lambda: ref_mobilenetv2(1.0),
    "shufflev1": ref_shufflev1, "shufflev2": ref_shufflev2,
    "cnn32": lambda: ref_cnn32((16, 32, 64), 128),
    "cnn32_small": lambda: ref_cnn32((8, 16, 32), 64),
}

ISSUE_COUNTS = {"resnet20": 278_324, "resnet56": 861_620, "resnet32x4": 7_433_860,
                "wrn_40_2": 2_255_156, "vgg13": 9_462_180, "shufflev2": 1_355_528}


def test_reference_table_is_what_the_formulas_and_the_issue_say():
    assert {n: REFERENCE[n]() for n in PARAMS_100} == PARAMS_100
    assert {n: PARAMS_100[n] for n in ISSUE_COUNTS} == ISSUE_COUNTS


def test_zoo_is_the_benchmark_s_name_list():
    issue = {"resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
             "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "vgg8",
             "vgg11", "vgg13", "vgg16", "vgg19", "resnet50", "mobilenetv2", "shufflev1",
             "shufflev2"}
    assert issue <= set(ZOO)
    assert set(ZOO) == set(PARAMS_100)
    from kdbench.plugins import get

    assert {n: get("model", n).metadata["family"] for n in ("resnet50", "wrn_40_2", "vgg13",
                                                           "mobilenetv2", "shufflev2")} == {
        "resnet50": "resnet", "wrn_40_2": "wrn", "vgg13": "vgg", "mobilenetv2": "mobilenetv2",
        "shufflev2": "shufflenet"}


@pytest.mark.parametrize("name", list(PARAMS_100))
def test_parameter_count_matches_reference(name):
    model = create_meta_model(name, 100)  # counting needs shapes only; no initialisation work
    assert count_parameters(model) == PARAMS_100[name]


def test_width_argument_gives_other_mobilenets():
    model = create_meta_model("mobilenetv2", 100, width=0.75)
    assert count_parameters(model) == ref_mobilenetv2(0.75)


# ---- feature view -----------------------------------------------------------------------------

# Stage shapes at 32×32 as RepDistiller's own definitions produce them (its files' comments and
# strides), one model per family.
SHAPES_32 = {
    "resnet8": [(16, 32, 32), (32, 16, 16), (64, 8, 8)],
    "resnet8x4": [(64, 32, 32), (128, 16, 16), (256, 8, 8)],
    "resnet50": [(256, 32, 32), (512, 16, 16), (1024, 8, 8), (2048, 4, 4)],
    "wrn_16_2": [(32, 32, 32), (64, 16, 16), (128, 8, 8)],
    "vgg8": [(128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 4, 4)],
    "mobilenetv2": [(12, 16, 16), (16, 8, 8), (48, 4, 4), (160, 2, 2)],
    "shufflev1": [(240, 16, 16), (480, 8, 8), (960, 4, 4)],
    "shufflev2": [(116, 16, 16), (232, 8, 8), (464, 4, 4)],
}
EMBEDDING = {"resnet8": 64, "resnet8x4": 256, "resnet50": 2048, "wrn_16_2": 128, "vgg8": 512,
             "mobilenetv2": 1280, "shufflev1": 960, "shufflev2": 1024}
STEM_32 = {"resnet8": (16, 32, 32), "resnet8x4": (32, 32, 32), "resnet50": (64, 32, 32),
           "wrn_16_2": (16, 32, 32), "vgg8": (64, 32, 32), "mobilenetv2": (16, 16, 16),
           "shufflev1": (24, 32, 32), "shufflev2": (24, 32, 32)}


@pytest.mark.parametrize("name", list(SHAPES_32))
def test_feature_shapes_at_32(name):
    torch.manual_seed(0)
    model = create_model(name, 100).eval()
    assert model.stage_shapes((32, 32)) == SHAPES_32[name]  # known before any data
    assert model.stem_info.shape((32, 32)) == STEM_32[name]
    with torch.no_grad():
        f = model.features(torch.randn(1, 3, 32, 32))
    assert [tuple(t.shape[1:]) for t in f.stages] == SHAPES_32[name]
    assert [tuple(t.shape[1:]) for t in f.preact] == SHAPES_32[name]
    assert tuple(f.stem.shape[1:]) == STEM_32[name]
    assert f.embedding.shape == (1, EMBEDDING[name]) and model.embedding_dim == EMBEDDING[name]
    assert f.logits.shape == (1, 100)


@pytest.mark.parametrize("name", list(ZOO))
def test_forward_backward_and_small_odd_input(name):
    """Every zoo model: the feature view at 9×9 (odd: every stride-2 layer rounds up, as
    StageInfo predicts), logits equal forward(), and gradients reach every parameter."""
    torch.manual_seed(0)
    model = create_model(name, 10, in_chans=1)
    # unpadded models (InDistill's cnn32) need at least their nominal size: one pixel more
    # keeps the size odd
    size = 9 if model.min_input_size <= 9 else model.min_input_size + 1
    x = torch.randn(2, 1, size, size)
    f = model.features(x)
    assert [tuple(t.shape[1:]) for t in f.stages] == model.stage_shapes((size, size))
    if model.stem_info is not None:
        assert tuple(f.stem.shape[1:]) == model.stem_info.shape((size, size))
    assert f.embedding.shape == (2, model.embedding_dim) and f.logits.shape == (2, 10)
    loss = F.cross_entropy(f.logits, torch.tensor([1, 7])) + sum(s.pow(2).mean() for s in f.stages)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), model.features(x).logits)


@pytest.mark.parametrize("name", ["resnet8", "resnet50", "vgg8", "shufflev1", "shufflev2"])
def test_preact_is_the_stage_before_its_relu(name):
    torch.manual_seed(0)
    model = create_model(name, 10).eval()
    with torch.no_grad():
        f = model.features(torch.randn(2, 3, 8, 8))
    for stage, pre in zip(f.stages, f.preact):
        assert (pre < 0).any()  # really before the ReLU
        assert torch.equal(F.relu(pre), stage)


def test_wrn_preact_is_the_next_batchnorm_of_the_stage():
    """Pre-activation WRN: the stage is the raw residual stream, its preact the next BN's output
    (RepDistiller: block2.layer[0].bn1, block3.layer[0].bn1, bn1), each BN run once per pass."""
    torch.manual_seed(0)
    model = create_model("wrn_16_2", 10)
    bns = [model.layers[1][0].bn1, model.layers[2][0].bn1, model.bn1]
    for bn in bns:  # non-trivial statistics and affine parameters
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    model.eval()
    with torch.no_grad():
        f = model.features(torch.randn(2, 3, 8, 8))
    for stage, pre, bn in zip(f.stages, f.preact, bns):
        shape = (1, -1, 1, 1)
        expected = ((stage - bn.running_mean.view(shape)) / torch.sqrt(
            bn.running_var.view(shape) + bn.eps) * bn.weight.view(shape) + bn.bias.view(shape))
        assert torch.allclose(pre, expected, atol=1e-5)
    assert (f.stages[0] < 0).any()  # a residual stream, not a ReLU output
    model.train()
    model.features(torch.randn(2, 3, 8, 8))
    assert [int(bn.num_batches_tracked) for bn in bns] == [1, 1, 1]


def test_mobilenetv2_stages_are_linear_bottlenecks():
    torch.manual_seed(0)
    model = create_model("mobilenetv2", 10).eval()
    with torch.no_grad():
        f = model.features(torch.randn(2, 3, 8, 8))
    assert all(s is p for s, p in zip(f.stages, f.preact))
    assert all((s < 0).any() for s in f.stages)  # no ReLU after the projection


def test_vgg_pool3_option_pools_before_the_last_block():
    """RepDistiller pools after block 3 only for 64×64 inputs; pool3=True does that."""
    model = create_model("vgg8", 10, pool3=True).eval()
    assert [s.reduction for s in model.stage_info] == [2, 4, 8, 16]
    with torch.no_grad():
        f = model.features(torch.randn(1, 3, 32, 32))
    assert [tuple(t.shape[1:]) for t in f.stages] == model.stage_shapes((32, 32))
    assert tuple(f.stages[-1].shape[2:]) == (2, 2)


# ---- timm's registry and the presets ----------------------------------------------------------


def test_zoo_is_in_timm_s_registry():
    import timm

    import kdbench.models.timm_zoo  # noqa: F401

    assert {f"kdbench_{n}" for n in ZOO} <= set(timm.list_models("kdbench_*"))
    with torch.device("meta"):
        model = timm.create_model("kdbench_resnet56")  # the zoo's 100 classes by default
        small = timm.create_model("kdbench_wrn_40_2", num_classes=10, in_chans=1)
    assert count_parameters(model) == 861_620
    # 10 classes instead of 100, a 1-channel stem conv (16·1·3·3) instead of 16·3·3·3
    assert count_parameters(small) == (PARAMS_100["wrn_40_2"] - _fc(128, 100) + _fc(128, 10)
                                       - 16 * 3 * 9 + 16 * 1 * 9)
    from kdbench.errors import ConfigError

    with pytest.raises(ConfigError, match="no pretrained weights"):
        timm.create_model("kdbench_resnet20", pretrained=True)


@pytest.mark.parametrize("student,lr", [("mobilenetv2", 0.01), ("mobilenetv2_075", 0.01),
                                        ("shufflev1", 0.01), ("shufflev2", 0.01),
                                        ("resnet8", 0.05), ("wrn_16_2", 0.05)])
def test_repdistiller_preset_lowers_lr_for_mobile_students(student, lr):
    cfg = build_config({"preset": "repdistiller", "student": student})
    assert cfg.recipe.lr == lr
    assert cfg.to_dict()["recipe"]["lr"] == lr  # visible in the record
