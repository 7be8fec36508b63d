"""``--preset imagenet``: RepDistiller's/mdistiller's ImageNet recipe, the standard pair through
the timm adapter, the image-folder data at 224 and the per-method ImageNet values."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from kdbench.config import build_config, resolve

sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
from imagetree import cifar_tree  # noqa: E402


def test_the_imagenet_recipe_pair_and_data():
    c = resolve(build_config({"preset": "imagenet", "loss.name": "kd", "data.dir": "/x"}))
    r = c.recipe
    assert (r.epochs, r.batch_size, r.lr, r.momentum, r.weight_decay, r.milestones, r.gamma) \
        == (100, 256, 0.1, 0.9, 1e-4, [30, 60, 90], 0.1)
    assert c.student == "timm/resnet18" and c.teacher.arch == "timm/resnet34"
    assert c.teacher.recipe.epochs == 100 and c.teacher.recipe.weight_decay == 1e-4
    assert c.data.name == "imagefolder" and c.data.options == {"size": 224, "augment": "timm"}
    assert c.loss.weights == {"w_ce": 0.5, "w_kd": 0.5} and c.loss.options["T"] == 1.0


def test_per_method_imagenet_values_and_flags_still_win():
    dkd = resolve(build_config({"preset": "imagenet", "loss.name": "dkd"}))
    assert {k: dkd.loss.options[k] for k in ("beta", "T", "warmup")} == \
        {"beta": 0.5, "T": 1.0, "warmup": 1}
    dist = resolve(build_config({"preset": "imagenet", "loss.name": "dist"}))
    assert dist.loss.weights == {"w_ce": 1.0, "w_dist": 2.0} and dist.loss.options["T"] == 1.0
    rkd = resolve(build_config({"preset": "imagenet", "loss.name": "reviewkd"}))
    assert rkd.loss.options["warmup"] == 1
    mine = resolve(build_config({"preset": "imagenet", "student": "timm/mobilenetv2_100",
                                 "data.name": "cifar100", "recipe.epochs": 10}))
    assert mine.student == "timm/mobilenetv2_100" and mine.data.name == "cifar100"
    assert mine.recipe.milestones == [3, 6, 9]  # the preset's schedule follows the epochs


@pytest.mark.slow
def test_an_imagenet_protocol_run_end_to_end_on_real_images(cli_runner, tmp_path):
    """The whole path at toy scale: timm's transforms on a streamed image folder (real CIFAR-10
    images at 32 pixels), timm/resnet34 trained as the teacher, DKD with its ImageNet values."""
    source = Path("/work/shared/data/cifar10")
    if not (source / "train.npz").is_file():
        pytest.skip("no CIFAR-10 copy here")
    tree = cifar_tree(source, tmp_path, 10, 5)
    out = cli_runner("run", "--preset", "imagenet", "--data-dir", tree, "--data-option",
                     "size=32", "--loss", "dkd", "--epochs", "1", "--batch-size", "50",
                     "--set", "teacher.recipe.epochs=1", "--set", "teacher.recipe.batch_size=50",
                     "--set", "teacher.save_every=1", "--device", "cpu", "--precision", "fp32",
                     "--workers", "2", "--quiet", "--json", "--results-dir", tmp_path / "r")
    assert out.exit_code == 0, out.output
    record = json.loads(out.stdout[out.stdout.index("{"):])
    assert record["status"] == "done" and record["config"]["student"] == "timm/resnet18"
    assert record["teacher"]["arch"] == "timm/resnet34"
    info = record["data"]["info"]
    assert info["augment"] == "timm" and info["load"] == "stream"
    assert record["config"]["loss"]["options"]["beta"] == 0.5
