"""A teacher from weights whose classifier does not fit the task (kdbench.teachers.adapt): with
the default settings it is adapted by a linear probe, kept in the trajectory store, before any
student sees it; one left at chance stops the run (exit 2, nothing written) unless allowed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

from kdbench.store import Store
from kdbench.teachers.adapt import CHANCE_MARGIN


@pytest.fixture(scope="module")
def imagenet_teacher(tmp_path_factory) -> Path:
    """An 'ImageNet' timm teacher: 1000 classes, RGB stem (randomly initialised: no network)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "test_resnet-in1k.pth"
    torch.save(timm.create_model("test_resnet", num_classes=1000).state_dict(), path)
    return path


def digits_run(cli_runner, results: Path, weights: Path, *extra: str):
    return cli_runner("run", "--dataset", "digits", "--student", "resnet8", "--teacher-arch",
                      "timm/test_resnet", "--teacher-weights", weights, "--epochs", "1",
                      "--precision", "fp32", "--device", "cpu", "--results-dir", results,
                      "--quiet", *extra)


def records(results: Path) -> list[dict]:
    return [r for _, r in Store(results).iter_records()]


def test_a_mismatched_head_is_adapted_by_default_and_cached(tmp_path, cli_runner,
                                                            imagenet_teacher):
    results = tmp_path / "results"
    out = digits_run(cli_runner, results, imagenet_teacher)
    assert out.exit_code == 0, out.output
    [record] = records(results)
    t = record["teacher"]
    assert record["status"] == "done"
    assert t["weights_fresh_head"] == ["model.fc.bias", "model.fc.weight"]
    assert t["weights_meta"]["input_conv"] == "model.conv1.0.weight: 3 -> 1 channels"
    assert t["adapt"]["mode"] == "linear" and t["adapt"]["epochs"] == 10
    chance = 100 / 10
    assert t["adapt"]["top1_before"] < chance + CHANCE_MARGIN  # a fresh head is at chance
    assert t["teacher_top1"] > 25  # far above chance after the probe
    # the stage is a trajectory in the store, keyed by the file's hash and the mode
    folder = results / "teachers" / t["trajectory"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["spec"]["adapt"] == {"mode": "linear",
                                         "weights_sha256": t["weights_sha256"]}
    assert manifest["spec"]["recipe"]["epochs"] == 10
    # a linear probe trains the classifier only: the backbone, BatchNorm statistics included,
    # is the file's
    probed = torch.load(folder / "epoch_0010.pt", weights_only=True)
    source = torch.load(imagenet_teacher, weights_only=True)
    for key in ("layer1.0.conv1.weight", "layer1.0.bn1.running_mean", "layer1.0.bn1.weight"):
        assert torch.equal(probed[f"model.{key}"], source[key]), key
    assert probed["model.fc.weight"].shape == (10, source["fc.weight"].shape[1])
    # another student reuses the adapted teacher: trained once
    mtime = (folder / "epoch_0010.pt").stat().st_mtime_ns
    again = digits_run(cli_runner, results, imagenet_teacher, "--seed", "1")
    assert again.exit_code == 0, again.output
    assert (folder / "epoch_0010.pt").stat().st_mtime_ns == mtime
    assert len(list((results / "teachers").iterdir())) == 1
    assert {r["teacher"]["teacher_top1"] for r in records(results)} == {t["teacher_top1"]}


def test_a_teacher_at_chance_is_refused_unless_allowed(tmp_path, cli_runner, imagenet_teacher):
    results = tmp_path / "results"
    out = digits_run(cli_runner, results, imagenet_teacher, "--set", "teacher.adapt=none")
    assert out.exit_code == 2
    # one error line (besides the up-front warning that 8×8 digits are small for it)
    [line] = [x for x in out.output.strip().splitlines() if not x.startswith("kdbench: ")]
    assert "teacher timm/test_resnet from" in line and "within 5 points of chance (10.0% for " \
        "10 classes); it was used as loaded (teacher.adapt=none)" in line
    assert "teacher.allow_weak=true" in line
    assert not records(results)
    allowed = digits_run(cli_runner, results, imagenet_teacher, "--set", "teacher.adapt=none",
                         "--set", "teacher.allow_weak=true")
    assert allowed.exit_code == 0, allowed.output
    [record] = records(results)
    assert record["teacher"]["teacher_top1"] < 10 + CHANCE_MARGIN
    assert "adapt" not in record["teacher"] and record["teacher"]["trajectory"] is None
    assert record["config"]["teacher"]["allow_weak"] is True


def test_finetune_trains_the_backbone_too(tmp_path, cli_runner, imagenet_teacher):
    results = tmp_path / "results"
    out = digits_run(cli_runner, results, imagenet_teacher, "--set", "teacher.adapt=finetune",
                     "--set", "teacher.adapt_recipe.epochs=2")
    assert out.exit_code == 0, out.output
    [record] = records(results)
    t = record["teacher"]
    assert t["adapt"] == {"mode": "finetune", "epochs": 2, "top1_before": pytest.approx(
        t["adapt"]["top1_before"])}
    tuned = torch.load(results / "teachers" / t["trajectory"] / "epoch_0002.pt",
                       weights_only=True)
    source = torch.load(imagenet_teacher, weights_only=True)
    assert not torch.equal(tuned["model.layer1.0.conv1.weight"], source["layer1.0.conv1.weight"])


def test_a_bad_adapt_mode_lists_the_valid_ones(tmp_path, cli_runner, imagenet_teacher):
    results = tmp_path / "results"
    out = digits_run(cli_runner, results, imagenet_teacher, "--set", "teacher.adapt=probe")
    assert out.exit_code == 2
    assert "unknown teacher.adapt mode 'probe'" in out.output
    assert "auto, linear, finetune, none" in out.output or "auto, finetune, linear, none" in \
        out.output
    assert not (results / "runs").exists() or not records(results)
