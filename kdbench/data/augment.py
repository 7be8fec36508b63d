"""Batch augmentations as plugins: functions of a whole device-resident uint8 batch.

``crop_flip`` (the default: the dataset's zero-padded random crop and horizontal flip, the CIFAR
recipe), ``strong`` (RandAugment after it) and ``none`` are built in, each registered beside its
definition (``@register_augmentation``); a plugin adds others through ``register_augmentations``.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import Augment, Dataset, crop_flip_augment
from .registry import register_augmentation

DEFAULT = "crop_flip"


@register_augmentation(defaults={"padding": None, "hflip": None},
                       types={"padding": int | None, "hflip": bool | None})
def crop_flip(dataset: Dataset, padding: int | None = None, hflip: bool | None = None
              ) -> Augment:
    """Random crop of the original size from a zero-padded image (``padding``, default the
    dataset's) and a random horizontal flip (``hflip``, default the dataset's)."""
    padding = dataset.crop_padding if padding is None else padding
    if padding < 0:
        raise ConfigError(f"augmentation 'crop_flip' padding must be >= 0, got {padding}")
    return crop_flip_augment(padding, dataset.hflip if hflip is None else hflip)


@register_augmentation(defaults={"n": 2, "m": 10, "padding": None, "hflip": None},
                       types={"padding": int | None, "hflip": bool | None})
def strong(dataset: Dataset, n: int = 2, m: int = 10, padding: int | None = None,
           hflip: bool | None = None) -> Augment:
    """A strong view: the dataset's crop and flip, then RandAugment(n ops, magnitude m) on each
    image (Cubuk et al. 2020; MLKD's strong view: torchvision's ``RandAugment(2, 10)`` after
    ``RandomCrop(32, 4)`` and a flip). RandAugment draws from torch's global generator, so each
    batch runs under a forked generator seeded from the epoch's generator: the view is fixed by
    (seed, epoch) and the run's other random draws are untouched."""
    from torchvision.transforms import v2

    if n < 0 or not 0 <= m <= 30:
        raise ConfigError(f"augmentation 'strong' needs n >= 0 and 0 <= m <= 30, got n={n}, "
                          f"m={m}")
    base = crop_flip(dataset, padding, hflip)
    rand = v2.RandAugment(num_ops=n, magnitude=m)
    channels = dataset.in_chans

    def run(images, generator):
        import torch

        images = base(images, generator)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        devices = [images.device] if images.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            if channels == 3:
                return torch.stack([rand(img) for img in images])
            # RandAugment's colour ops want RGB: grey images go through as three equal planes
            return torch.stack([rand(img.expand(3, -1, -1))[:1] for img in images])
    return run


@register_augmentation
def none(dataset: Dataset) -> Augment:
    """No augmentation: the images as stored."""
    return lambda images, generator: images


def make_augment(dataset: Dataset, name: str, options: dict[str, Any] | None = None) -> Augment:
    """The registered augmentation ``name`` built for ``dataset``."""
    from ..plugins import get
    from ..spec import coerce_options

    spec = get("augmentation", name)
    opts = coerce_options(options, spec.defaults, f"augmentation {name!r}", spec.types)
    return spec.create(dataset, **opts)
