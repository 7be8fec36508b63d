"""Built-in data plugin: the datasets, the batch augmentations and the data transforms.

Each item is registered beside its definition (the decorators of :mod:`.registry`); importing
the files below collects them, and the hooks hand them to the plugin registry.
"""

from __future__ import annotations

from ..hookspecs import hookimpl
from . import augment, datasets, imagefolder, imbalance, label_noise, subset  # noqa: F401
from .registry import register_augmentation, register_data_transform, register_dataset


@hookimpl
def register_datasets(register):
    register_dataset.register_all(register)


@hookimpl
def register_augmentations(register):
    register_augmentation.register_all(register)


@hookimpl
def register_data_transforms(register):
    register_data_transform.register_all(register)
