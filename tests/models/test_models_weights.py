"""Weights files as the field trades them (kdbench.models.weights): RepDistiller's and mdistiller's
CIFAR checkpoints for every architecture both zoos share, made from an independent rewrite of
RepDistiller's module naming (repdistiller_reference.py), give the same logits; loading never
runs code from the file; files that do not fit say where, in one line."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pytest
import torch
from repdistiller_reference import MODEL_DICT
from torch import nn

from kdbench.errors import ConfigError
from kdbench.models import create_model, load_weights
from kdbench.models.weights import KEY_MAPS, REPDISTILLER_NAMES, read


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights *and* BatchNorm statistics (a fresh model's γ=1, β=0, μ=0, σ²=1 would hide
    a swapped BatchNorm), in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            elif isinstance(m, nn.Linear):
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


def repdistiller_file(path: Path, name: str, num_classes: int = 100, *, opt: bool = True,
                      legacy: bool = False, seed: int = 0) -> nn.Module:
    """A checkpoint as RepDistiller's train_teacher.py writes it (``*_last.pth`` with ``opt``;
    ``ckpt_epoch_240.pth``, the published teachers, without), from the reference model."""
    ref = randomise(MODEL_DICT[name](num_classes), seed)
    sgd = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    state = {"epoch": 240, "model": ref.state_dict(), "accuracy": torch.tensor(73.5),
             "optimizer": sgd.state_dict()}
    if opt:
        state["opt"] = argparse.Namespace(model=name, dataset="cifar100", learning_rate=0.05,
                                          lr_decay_epochs=[150, 180, 210], trial="0")
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return ref


@pytest.mark.parametrize("name", sorted(MODEL_DICT))
def test_repdistiller_checkpoint_gives_the_original_logits(tmp_path, name):
    path = tmp_path / f"{name}_last.pth"
    # RepDistiller's published files predate torch 1.6's zip format: half are written that way
    ref = repdistiller_file(path, name, opt=True, legacy=sorted(MODEL_DICT).index(name) % 2 == 1)
    ours = create_model(REPDISTILLER_NAMES[name], 100)
    loaded = load_weights(ours, str(path), arch=REPDISTILLER_NAMES[name])
    assert (loaded.format, loaded.layout) == ("repdistiller", "repdistiller")
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.meta == {"model": name, "epoch": 240, "accuracy": pytest.approx(73.5)}
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = ref(x), ours.eval()(x)
    assert want.std() > 1e-3  # the logits say something
    assert (want - got).abs().max().item() <= 1e-5


def test_a_file_from_before_batchnorm_counted_batches_loads(tmp_path):
    ref = randomise(MODEL_DICT["wrn_16_2"](100))
    state = {k: v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"epoch": 240, "model": state, "accuracy": 70.0}, path,
               _use_new_zipfile_serialization=False)
    ours = create_model("wrn_16_2", 100)
    assert load_weights(ours, str(path)).layout == "repdistiller"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (ref(x) - ours.eval()(x)).abs().max().item() <= 1e-5


def test_every_shared_architecture_has_a_key_map():
    from kdbench.models.registry import ZOO

    assert set(REPDISTILLER_NAMES.values()) <= set(ZOO)
    assert len(REPDISTILLER_NAMES) == 22
    classes = {type(create_model(n, 10)).__name__ for n in REPDISTILLER_NAMES.values()}
    assert classes == set(KEY_MAPS)


def test_the_key_maps_say_what_the_issue_says():
    from kdbench.models.weights import map_key

    assert map_key(KEY_MAPS["WideResNet"], "block1.layer.0.bn1.weight") == "layers.0.0.bn1.weight"
    assert map_key(KEY_MAPS["WideResNet"], "block2.layer.0.convShortcut.weight") == \
        "layers.1.0.shortcut.weight"
    assert map_key(KEY_MAPS["VGG"], "block0.0.weight") == "blocks.0.0.weight"
    assert map_key(KEY_MAPS["CifarResNet"], "layer3.2.downsample.1.running_var") == \
        "layers.2.2.downsample.1.running_var"
    assert map_key(KEY_MAPS["ResNet"], "layer4.0.shortcut.0.weight") == \
        "layers.3.0.downsample.0.weight"
    assert map_key(KEY_MAPS["ShuffleNetV2"], "layer2.0.bn4.weight") == "layers.1.0.right.2.1.weight"
    assert map_key(KEY_MAPS["ShuffleNetV2"], "layer2.3.conv2.weight") == \
        "layers.1.3.branch.2.0.weight"
    assert map_key(KEY_MAPS["ShuffleNetV1"], "layer1.0.bn3.bias") == "layers.0.0.conv3.1.bias"
    assert map_key(KEY_MAPS["MobileNetV2"], "classifier.0.weight") == "classifier.weight"
    assert map_key(KEY_MAPS["CifarResNet"], "fc.weight") == "fc.weight"


def test_mdistiller_files_load_and_say_so(tmp_path):
    ref = randomise(MODEL_DICT["wrn_16_1"](10))
    student = tmp_path / "student_best"
    torch.save({"model": ref.state_dict()}, student)
    distiller = tmp_path / "best"
    teacher = randomise(MODEL_DICT["wrn_40_2"](10), seed=3)
    torch.save({"epoch": 240, "best_acc": 71.0, "optimizer": {"state": {}, "param_groups": []},
                "model": {**{f"module.student.{k}": v for k, v in ref.state_dict().items()},
                          **{f"module.teacher.{k}": v for k, v in teacher.state_dict().items()}}},
               distiller)
    x = torch.randn(2, 3, 32, 32)
    for path in (student, distiller):
        ours = create_model("wrn_16_1", 10)
        loaded = load_weights(ours, str(path))
        assert loaded.format == "mdistiller" and loaded.layout == "repdistiller"
        with torch.no_grad():
            assert (ref(x) - ours.eval()(x)).abs().max().item() <= 1e-5


# ---- safety --------------------------------------------------------------------------------


class Planted:
    """A pickle payload: unpickling it would create ``marker`` (through os.system)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("where", ["opt", "accuracy", "tensor"])
def test_a_planted_payload_in_a_repdistiller_file_never_runs(tmp_path, where, cli_runner):
    marker = tmp_path / "marker"
    ref = randomise(MODEL_DICT["resnet8"](4))
    state: dict = {"epoch": 240, "model": ref.state_dict(), "accuracy": torch.tensor(70.0),
                   "opt": argparse.Namespace(model="resnet8")}
    if where == "opt":
        state["opt"].hook = Planted(marker)
    elif where == "accuracy":
        state["accuracy"] = Planted(marker)
    else:
        state["model"]["fc.bias"] = Planted(marker)
    path = tmp_path / "resnet8_last.pth"
    torch.save(state, path)
    # the file is otherwise valid: a plain unpickler would run the payload
    with pytest.raises(ConfigError, match="holds Python objects beyond tensors"):
        read(path)
    results = tmp_path / "results"
    out = cli_runner("run", "--dataset", "synthetic", "--student", "resnet8", "--teacher-arch",
                     "resnet8", "--teacher-weights", path, "--results-dir", results, "--quiet")
    assert out.exit_code == 2 and len(out.output.strip().splitlines()) == 1, out.output
    assert "holds Python objects beyond tensors" in out.output
    assert not marker.exists()
    assert not list(results.glob("runs/*.json"))


# ---- bad input -------------------------------------------------------------------------------


def test_a_file_for_another_architecture_names_the_key_the_shapes_and_what_it_holds(tmp_path,
                                                                                   cli_runner):
    published = tmp_path / "ckpt_epoch_240.pth"  # no opt: the architecture is found by shape
    repdistiller_file(published, "resnet32x4", opt=False)
    with pytest.raises(ConfigError) as err:
        load_weights(create_model("resnet8", 100), str(published), arch="resnet8")
    msg = str(err.value)
    assert "\n" not in msg
    assert "(repdistiller file, repdistiller names) into resnet8: conv1.weight is " \
           "[32, 3, 3, 3] in the file, [16, 3, 3, 3] in the model" in msg
    assert msg.endswith("the file seems to hold resnet32x4")
    named = tmp_path / "vgg13_last.pth"
    repdistiller_file(named, "vgg13", opt=True)
    with pytest.raises(ConfigError, match=r"into vgg8: .*seems to hold vgg13$"):
        load_weights(create_model("vgg8", 100), str(named), arch="vgg8")
    results = tmp_path / "results"
    out = cli_runner("run", "--dataset", "synthetic", "--student", "resnet8", "--teacher-arch",
                     "vgg8", "--teacher-weights", named, "--results-dir", results, "--quiet")
    assert out.exit_code == 2 and len(out.output.strip().splitlines()) == 1
    assert "into vgg8: " in out.output and "seems to hold vgg13" in out.output
    assert not list(results.glob("runs/*.json"))


def test_not_a_checkpoint_is_one_clear_line(tmp_path, cli_runner):
    cases = {"notes.pth": b"these are not weights\n", "empty.pt": b"",
             "list.pt": None, "bad.safetensors": b"\x00\x01garbage"}
    for name, content in cases.items():
        path = tmp_path / name
        if content is None:
            torch.save([torch.zeros(2)], path)
        else:
            path.write_bytes(content)
        with pytest.raises(ConfigError) as err:
            read(path)
        assert "\n" not in str(err.value) and repr(str(path)) in str(err.value)
        assert "not a" in str(err.value), str(err.value)
    torch.save({"epoch": 3, "note": "hello"}, tmp_path / "meta.pt")
    with pytest.raises(ConfigError, match=r"is not a checkpoint: no tensors by name "
                                          r"\(top-level keys: epoch, note\)"):
        read(tmp_path / "meta.pt")
    results = tmp_path / "results"
    out = cli_runner("run", "--dataset", "synthetic", "--student", "resnet8", "--teacher-arch",
                     "resnet8", "--teacher-weights", tmp_path / "notes.pth", "--results-dir",
                     results, "--quiet")
    assert out.exit_code == 2 and "is not a PyTorch checkpoint" in out.output
    assert len(out.output.strip().splitlines()) == 1
    assert not list(results.glob("runs/*.json"))


# ---- through the command line --------------------------------------------------------------


def test_a_repdistiller_teacher_through_the_cli_is_recorded_with_its_format(tmp_path, cli_runner):
    from kdbench.config import build_config
    from kdbench.data import load_data
    from kdbench.data.base import Normalizer

    path = tmp_path / "resnet8_vanilla" / "ckpt_epoch_240.pth"
    path.parent.mkdir()
    ref = repdistiller_file(path, "resnet8", num_classes=4, opt=False)
    student = tmp_path / "student_best"  # an mdistiller student as the student's start
    torch.save({"model": randomise(MODEL_DICT["resnet8"](4), seed=5).state_dict()}, student)
    results = tmp_path / "results"
    out = cli_runner("run", "--dataset", "synthetic", "--set", "data.options.size=32",
                     "--student", "resnet8", "--student-weights", student, "--teacher-arch",
                     "resnet8", "--teacher-weights", path, "--epochs", "1",
                     # random weights score at chance: refused unless asked for
                     "--set", "teacher.allow_weak=true", "--batch-size", "64",
                     "--precision", "fp32", "--device", "cpu", "--results-dir", results, "--quiet")
    assert out.exit_code == 0, out.output
    [record] = [json.loads(p.read_text()) for p in results.glob("runs/*.json")]
    t = record["teacher"]
    assert t["weights_format"] == "repdistiller" and t["weights_layout"] == "repdistiller"
    assert t["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert t["weights_meta"] == {"epoch": 240, "accuracy": pytest.approx(73.5)}
    assert record["student_weights"] == {
        "weights_format": "mdistiller", "weights_layout": "repdistiller",
        "weights_sha256": hashlib.sha256(student.read_bytes()).hexdigest()}
    from importlib.metadata import version

    assert record["env"]["timm"] == version("timm")
    assert record["env"]["torchvision"] == version("torchvision")
    # the teacher the run used predicts what RepDistiller's own model predicts
    data = load_data(build_config({"data.name": "synthetic", "data.options.size": 32}).data)
    x = Normalizer(data.mean, data.std, torch.device("cpu"))(data.test.images)
    with torch.no_grad():
        want = (ref(x).argmax(1) == data.test.labels).float().mean().item() * 100
    assert t["teacher_top1"] == pytest.approx(want, abs=1e-6)

