"""Dataset plugins, data transforms, the tensor-resident loader and batched augmentation."""

from __future__ import annotations

from typing import Any

from .base import Augment, BatchLoader, Dataset, Split, epoch_generator, random_crop, random_hflip

__all__ = ["Augment", "BatchLoader", "Dataset", "Split", "epoch_generator", "load_data",
           "load_dataset", "random_crop", "random_hflip"]


def load_dataset(name: str, data_dir: str | None = None,
                 transforms: list[dict[str, Any]] | None = None, **options: Any) -> Dataset:
    """Load a registered dataset by name (options are its factory's keyword arguments), then
    apply ``transforms`` in order (see :mod:`.transforms`)."""
    from ..errors import ConfigError
    from ..plugins import get
    from .transforms import apply_transforms

    entry = get("dataset", name)
    try:
        dataset = entry.create(data_dir=data_dir, **options)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise ConfigError(f"dataset {name!r}: {exc}") from exc
        raise
    return apply_transforms(dataset, transforms) if transforms else dataset


def load_data(config: Any, device: Any = "cpu") -> Dataset:
    """The dataset a ``DataConfig`` describes (transforms applied), on ``device``."""
    return load_dataset(config.name, config.dir, config.transforms, **config.options).to(device)
