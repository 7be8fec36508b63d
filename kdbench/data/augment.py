"""Batch augmentations as plugins: functions of a whole device-resident uint8 batch.

``crop_flip`` (the default: the dataset's zero-padded random crop and horizontal flip, the CIFAR
recipe) and ``none`` are built in; a plugin adds others (e.g. a loss's strong view) through
``register_augmentations``.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import Augment, Dataset, crop_flip_augment

DEFAULT = "crop_flip"


def crop_flip(dataset: Dataset, padding: int | None = None, hflip: bool | None = None
              ) -> Augment:
    """Random crop of the original size from a zero-padded image (``padding``, default the
    dataset's) and a random horizontal flip (``hflip``, default the dataset's)."""
    padding = dataset.crop_padding if padding is None else padding
    if padding < 0:
        raise ConfigError(f"augmentation 'crop_flip' padding must be >= 0, got {padding}")
    return crop_flip_augment(padding, dataset.hflip if hflip is None else hflip)


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
