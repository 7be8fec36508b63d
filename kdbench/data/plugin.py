"""Built-in data plugin: the datasets, the batch augmentations and the data transforms."""

from __future__ import annotations

from ..hookspecs import hookimpl
from . import augment, builtin, robust, transforms


@hookimpl
def register_datasets(register):
    for fn in (builtin.digits, builtin.synthetic, builtin.cifar10, builtin.cifar100,
               builtin.fashion_mnist):
        register(fn.__name__, fn)


@hookimpl
def register_augmentations(register):
    register("crop_flip", augment.crop_flip, defaults={"padding": None, "hflip": None},
             types={"padding": int | None, "hflip": bool | None})
    register("strong", augment.strong, defaults={"n": 2, "m": 10, "padding": None,
                                                  "hflip": None},
             types={"padding": int | None, "hflip": bool | None})
    register("none", augment.none)


@hookimpl
def register_data_transforms(register):
    register("subset", transforms.Subset, defaults={"per_class": 100, "seed": 0},
             description="a seeded class-balanced subset: per_class samples of every class")
    register("label_noise", robust.LabelNoise,
             defaults={"kind": "symmetric", "rate": 0.2, "seed": 0},
             description="label noise on the training split: exactly round(rate·n_c) labels of "
                         "each class changed (symmetric | pairflip | uniform), clean labels kept")
    register("imbalance", robust.Imbalance,
             defaults={"kind": "exponential", "ratio": 10.0, "seed": 0},
             description="a long-tailed training split: exponential or step class counts with "
                         "max/min ratio rho (the test split stays balanced)")
