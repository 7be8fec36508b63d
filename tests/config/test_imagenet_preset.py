"""``--preset imagenet``: RepDistiller's/mdistiller's ImageNet recipe, the standard pair through
the timm adapter, the image-folder data at 224 and the per-method ImageNet values."""

from __future__ import annotations

from kdbench.config import build_config, resolve


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
