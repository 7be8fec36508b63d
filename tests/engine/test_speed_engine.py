"""The engine's speed settings change speed only: precision paths, layout, compile, threads."""

from __future__ import annotations

import copy

import pytest
import torch

from kdbench import device, engine
from kdbench.config import Recipe
from kdbench.data import load_dataset
from kdbench.errors import TrainingError
from kdbench.losses import DistillContext, build
from kdbench.losses import resolve as resolve_loss
from kdbench.models import create_model
from kdbench.stages import Batch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    device.set_threads(1)
    yield
    torch.set_num_threads(before)


def trainee(data, loss="kd", teacher=None, seed=0, name="student"):
    torch.manual_seed(seed)
    model = create_model("resnet8", data.num_classes, data.in_chans)
    w, o = resolve_loss(loss)
    ctx = DistillContext(model, teacher, data.num_classes, data.input_shape, len(data.train), w, o)
    return engine.Trainee(name, model, build(loss, ctx), Recipe(lr=0.05, epochs=2))


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic")


@pytest.fixture(scope="module")
def teacher(data):
    torch.manual_seed(100)
    t = create_model("resnet8", data.num_classes, data.in_chans).eval()
    for p in t.parameters():
        p.requires_grad_(False)
    return t


def batch(data, n=32):
    from kdbench.data import BatchLoader

    return next(iter(BatchLoader(data, "train", n, train=True, seed=0)))


def step_once(data, teacher, precision, channels_last=False):
    t = trainee(data, teacher=teacher)
    x, y, idx = batch(data, 16)  # bf16 without AMX/AVX512-BF16 units is slow: keep it small
    sums = [engine.RunningSums(torch.device("cpu"))]
    with engine.prepared([t.model, teacher], channels_last=channels_last):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        engine.train_step([t], Batch(x, y, idx), epoch=0, step=0, sums=sums,
                          device=torch.device("cpu"), precision=precision, teacher=teacher)
    return t, sums[0].means(len(y))


@pytest.mark.parametrize("precision, tol", [("bf16", 0.05), ("fp16", 0.01)])
def test_low_precision_step_matches_fp32(data, teacher, precision, tol):
    """CPU autocast runs the convolutions in bf16/fp16 and the loss in fp32: one step from the
    same weights lands close to the fp32 step (for machines whose units make it fast)."""
    ref, ref_sums = step_once(data, copy.deepcopy(teacher), "fp32")
    low, low_sums = step_once(data, copy.deepcopy(teacher), precision)
    assert low_sums["loss"] == pytest.approx(ref_sums["loss"], rel=tol)
    assert low_sums["kd"] == pytest.approx(ref_sums["kd"], rel=3 * tol)
    for (name, a), b in zip(ref.model.named_parameters(), low.model.parameters()):
        assert b.dtype == torch.float32, name  # master weights stay fp32
        torch.testing.assert_close(b, a, rtol=0, atol=tol * max(1.0, float(a.detach().abs().max())))
    x, _, _ = batch(data)
    with device.autocast(torch.device("cpu"), precision):
        out = low.model(x)
    assert out.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def test_channels_last_gives_the_same_step_and_leaves_no_trace(data, teacher):
    ref, ref_sums = step_once(data, copy.deepcopy(teacher), "fp32")
    cl, cl_sums = step_once(data, copy.deepcopy(teacher), "fp32", channels_last=True)
    assert cl_sums["loss"] == pytest.approx(ref_sums["loss"], rel=1e-5)
    for a, b in zip(ref.model.parameters(), cl.model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
        assert b.is_contiguous()  # back to the default layout after the block


def test_state_dicts_inside_prepared_are_contiguous(data):
    t = trainee(data)
    with engine.prepared([t.model], channels_last=True):
        assert t.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        state = t.model.state_dict()
        assert all(v.is_contiguous() for v in state.values())
        assert torch.equal(state["conv1.weight"], t.model.conv1.weight)


def test_compile_wraps_and_restores_methods(data):
    t = trainee(data)
    model = t.model
    with engine.prepared([model, None], compile=True):
        assert "forward" in model.__dict__ and "features" in model.__dict__
    assert "forward" not in model.__dict__ and "features" not in model.__dict__
    x, _, _ = batch(data, 4)
    assert model(x).shape == (4, data.num_classes)


def test_teacher_logits_can_be_saved_for_backward(data, teacher):
    """Inference-mode logits would break a loss that saves them; the engine hands out a copy."""
    from kdbench.losses.kd import kd

    x, y, _ = batch(data, 8)
    t_out = engine.teacher_features(teacher, x, need_features=False)
    assert not t_out.logits.is_inference() and not t_out.logits.requires_grad
    student = trainee(data).model
    s_logits = student(x)
    (kd(s_logits, t_out.logits) * t_out.logits.sum()).backward()  # saves both for backward
    feats = engine.teacher_features(teacher, x, need_features=True)
    assert torch.equal(feats.logits, t_out.logits)


def test_running_sums_match_python_floats(data):
    sums = engine.RunningSums(torch.device("cpu"))
    values = [0.1, 1e-9, 12345.678, 2.5]
    for v in values:
        sums.add("loss", torch.tensor(v, dtype=torch.float32), 3)
    expected = sum(float(torch.tensor(v, dtype=torch.float32)) * 3 for v in values) / 12
    assert sums.means(12)["loss"] == expected


def test_non_finite_term_is_named(data, teacher):
    t = trainee(data, teacher=teacher)
    x, y, idx = batch(data, 8)
    main = t.stages[-1]
    main.weights = dict(main.weights, w_kd=float("inf"))
    with pytest.raises(TrainingError, match=r"non-finite loss: term 'loss' .* epoch 2, step 5"):
        engine.train_step([t], Batch(x, y, idx), epoch=1, step=4, sums=[engine.RunningSums(
            torch.device("cpu"))], device=torch.device("cpu"), teacher=teacher)
    x = x.clone()
    x[0, 0, 0, 0] = float("nan")
    t = trainee(data, teacher=teacher)
    with pytest.raises(TrainingError, match=r"term 'ce' = nan"):
        engine.train_step([t], Batch(x, y, idx), epoch=0, step=0, sums=[engine.RunningSums(
            torch.device("cpu"))], device=torch.device("cpu"), teacher=teacher)


def test_precision_auto_follows_the_cpu(monkeypatch):
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: False)
    assert device.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: True)
    assert device.resolve_precision("auto", "cpu") == "bf16"
    assert device.resolve_precision("fp16", "cpu") == "fp16"


def test_set_threads():
    assert device.set_threads(1) == 1 and torch.get_num_threads() == 1
    import os

    n = device.set_threads(0)
    assert n == (torch.get_num_threads() if "OMP_NUM_THREADS" in os.environ
                 else len(os.sched_getaffinity(0)))


def test_fit_with_channels_last_matches_fit_without(data, teacher):
    """A whole (tiny) fit in NHWC gives the NCHW curve to float tolerance."""
    curves = []
    for cl in (False, True):
        t = trainee(data, teacher=teacher)
        engine.fit([t], data, engine.FitOptions(batch_size=64, seed=0,
                                                device=torch.device("cpu"), teacher=teacher,
                                                progress=False, channels_last=cl))
        curves.append(t.history[0])
    assert curves[1]["train_loss"] == pytest.approx(curves[0]["train_loss"], rel=1e-4)
    assert abs(curves[1]["top1"] - curves[0]["top1"]) <= 100 / len(data.test)
